"""How many `zfs destroy` calls a list of snapshots costs: one per dataset where ZFS has the
`ds@a,b` form (OpenZFS), one per snapshot where it does not (zfs-fuse), learnt once."""

import pytest

from kvm import host, zfs


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(zfs.command, "_NO_LIST_FORM", [])

    def install(list_form):
        def run(argv, **kw):
            seen.append(argv[2:])
            if "," in argv[-1] and not list_form:
                return host.Result(argv, 1, "", f"cannot open '{argv[-1]}': invalid dataset name\n")
            return host.Result(argv, 0, "", "")
        monkeypatch.setattr(host, "run", run)
        return seen
    return install


def test_one_call_per_dataset_where_zfs_takes_lists(calls):
    seen = calls(True)
    zfs.CommandBackend().lzc_destroy_snaps(["p/a@s1", "p/a@s2", "p/a@s3", "p/b@s1", "p/b@s2"])
    assert seen == [["p/a@s1,s2,s3"], ["p/b@s1,s2"]]


def test_one_call_per_snapshot_where_it_does_not_and_the_list_is_tried_once(calls):
    seen = calls(False)
    zfs.CommandBackend().lzc_destroy_snaps(["p/a@s1", "p/a@s2", "p/b@s1", "p/b@s2"])
    assert seen == [["p/a@s1,s2"], ["p/a@s1"], ["p/a@s2"], ["p/b@s1"], ["p/b@s2"]]
