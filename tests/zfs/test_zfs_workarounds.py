"""The workarounds section of kvm/zfs/__init__.py on a real pool: nothing is left unmounted, lists of
snapshots go in as few calls as the zfs allows."""

import uuid

import pytest

from kvm import host, zfs


@pytest.fixture
def ds(pool):
    name = f"{pool}/w{uuid.uuid4().hex[:8]}"
    zfs.lzc_create(name)
    yield name
    try:
        zfs.destroy_recursive(name)
    except zfs.ZFSError:
        pass


def test_a_destroy_that_stays_busy_leaves_the_dataset_mounted(ds, monkeypatch):
    monkeypatch.setattr(zfs.command, "BUSY_WAIT", 0)

    def busy():
        raise zfs.DatasetBusy("is busy", ds)
    with pytest.raises(zfs.DatasetBusy):
        zfs._retry_busy(busy, ds)
    assert zfs.get_prop(ds, "mounted") == "yes"


def test_a_rename_that_stays_busy_leaves_the_dataset_mounted(ds, monkeypatch):
    monkeypatch.setattr(zfs.command, "RENAME_WAIT", 0)
    real = host.run

    def run(argv, **kw):
        if argv[:2] == ["zfs", "rename"]:
            from kvm.errors import CommandFailed
            raise CommandFailed(argv, 1, "cannot rename: dataset is busy")
        return real(argv, **kw)
    monkeypatch.setattr(host, "run", run)
    with pytest.raises(zfs.DatasetBusy):
        zfs.CommandBackend().lzc_rename(ds, ds + "x")
    monkeypatch.setattr(host, "run", real)
    assert zfs.get_prop(ds, "mounted") == "yes"


def test_destroy_snaps_takes_a_list_per_dataset_and_ignores_missing(ds):
    zfs.lzc_create(ds + "/d")
    for s in ("a", "b", "c", "d"):
        zfs.lzc_snapshot([f"{ds}@{s}", f"{ds}/d@{s}"])
    zfs.lzc_destroy_snaps([f"{ds}@a", f"{ds}@c", f"{ds}@gone", f"{ds}/d@a", f"{ds}/d@b"])
    assert zfs.CommandBackend().snapshots(ds) == [f"{ds}@b", f"{ds}@d"]
    assert zfs.CommandBackend().snapshots(ds + "/d") == [f"{ds}/d@c", f"{ds}/d@d"]


def test_unmounted_tells_an_unmounted_filesystem(ds):
    assert not zfs.unmounted(ds) and not zfs.unmounted(ds + "/none")
    host.run(["zfs", "unmount", ds])
    assert zfs.unmounted(ds)
    host.run(["zfs", "mount", ds])
