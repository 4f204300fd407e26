"""The libzfs_core-shaped API, run against every backend that loads here, on a real pool."""

import uuid

import pytest

from kvm import zfs


def _backends():
    found, why = zfs.probe_pyzfs()
    return [pytest.param(zfs.CommandBackend(), id="command"),
            pytest.param(found, id="libzfs_core",
                         marks=[] if found else pytest.mark.skip(reason=f"pyzfs backend unavailable: {why}"))]


@pytest.fixture(params=_backends())
def be(request):
    return request.param


@pytest.fixture
def ds(pool):
    name = f"{pool}/c{uuid.uuid4().hex[:8]}"
    yield name
    try:
        zfs.destroy_recursive(name)
    except zfs.ZFSError:
        pass


def test_create_is_mounted_and_exists(be, ds):
    assert not be.lzc_exists(ds)
    be.lzc_create(ds)
    assert be.lzc_exists(ds)
    assert zfs.get_prop(ds, "mounted") == "yes"


def test_create_twice_raises_dataset_exists(be, ds):
    be.lzc_create(ds)
    with pytest.raises(zfs.DatasetExists):
        be.lzc_create(ds)


def test_create_without_parent_raises_parent_not_found(be, ds):
    with pytest.raises(zfs.ParentNotFound):
        be.lzc_create(ds + "/a/b")


def test_invalid_name_is_refused_before_zfs(be, pool):
    with pytest.raises(zfs.NameInvalid):
        be.lzc_create(f"{pool}/bad name")
    with pytest.raises(zfs.NameInvalid):
        be.lzc_snapshot([f"{pool}/x"])  # no @


def test_snapshot_rollback_restores_content(be, ds):
    be.lzc_create(ds)
    mnt = zfs.get_prop(ds, "mountpoint")
    with open(f"{mnt}/f", "w") as fh:
        fh.write("old")
    be.lzc_snapshot([ds + "@s1"])
    with open(f"{mnt}/f", "w") as fh:
        fh.write("new")
    assert be.lzc_rollback(ds) == ds + "@s1"
    assert open(f"{mnt}/f").read() == "old"


def test_snapshot_exists_and_not_latest(be, ds):
    be.lzc_create(ds)
    be.lzc_snapshot([ds + "@a"])
    with pytest.raises(zfs.SnapshotExists):
        be.lzc_snapshot([ds + "@a"])
    be.lzc_snapshot([ds + "@b"])
    with pytest.raises(zfs.SnapshotNotLatest):
        be.lzc_rollback_to(ds, ds + "@a")
    be.lzc_rollback_to(ds, ds + "@b")


def test_multi_snapshot_is_all_or_none(be, ds):
    be.lzc_create(ds)
    be.lzc_create(ds + "/child")
    be.lzc_snapshot([ds + "/child@s"])
    with pytest.raises(zfs.SnapshotExists):
        be.lzc_snapshot([ds + "@s", ds + "/child@s"])
    assert not be.lzc_exists(ds + "@s"), "a failed multi-snapshot left one behind"
    be.lzc_snapshot([ds + "@t", ds + "/child@t"])
    assert be.lzc_exists(ds + "@t") and be.lzc_exists(ds + "/child@t")


def test_destroy_snaps_ignores_missing(be, ds):
    be.lzc_create(ds)
    be.lzc_snapshot([ds + "@a"])
    be.lzc_destroy_snaps([ds + "@a", ds + "@missing"])
    assert not be.lzc_exists(ds + "@a")


def test_rename_and_destroy(be, ds):
    be.lzc_create(ds)
    be.lzc_rename(ds, ds + "r")
    try:
        assert be.lzc_exists(ds + "r") and not be.lzc_exists(ds)
    finally:
        be.lzc_destroy(ds + "r")
    with pytest.raises(zfs.DatasetNotFound):
        be.lzc_destroy(ds)


def test_get_props_is_one_call_with_exact_values(ds, monkeypatch):
    zfs.lzc_create(ds)
    zfs.lzc_create(ds + "/a")
    zfs.lzc_create(ds + "/b")
    zfs.set_prop(ds, "kvm:test", "hello world")
    calls = []
    from kvm import host
    real = host.run
    monkeypatch.setattr(host, "run", lambda argv, **kw: calls.append(argv) or real(argv, **kw))
    rows = zfs.get_props([ds], ["used", "kvm:test", "mountpoint"], recursive=True)
    assert len(calls) == 1
    assert set(rows) == {ds, ds + "/a", ds + "/b"}
    assert rows[ds]["used"].isdigit()
    assert rows[ds]["kvm:test"] == "hello world"
    assert rows[ds + "/a"]["kvm:test"] == "hello world"  # inherited


def test_missing_dataset_raises_not_found(pool):
    with pytest.raises(zfs.DatasetNotFound) as err:
        zfs.get_props([f"{pool}/nope-{uuid.uuid4().hex[:6]}"], ["used"])
    assert "does not exist" in str(err.value)


def test_marked_mountpoints_ignores_inherited_and_gives_the_mountpoint(ds):
    zfs.lzc_create(ds)
    zfs.lzc_create(ds + "/child")
    prop = f"kvm:mark{uuid.uuid4().hex[:6]}"
    zfs.set_prop(ds, prop, "yes")
    assert zfs.marked_mountpoints(prop) == {ds: f"/{ds}"}


def test_filesystems_of_paths_asks_about_them_only(ds, monkeypatch):
    """Which filesystem holds each path, in one zfs call naming the paths (no host-wide listing)."""
    zfs.lzc_create(ds)
    zfs.lzc_create(ds + "/a")
    zfs.lzc_create(ds + "/a/b")
    with open(f"/{ds}/a/b/disk", "wb") as fh:
        fh.write(b"x")
    calls = []
    from kvm import host
    real = host.run
    monkeypatch.setattr(host, "run", lambda argv, **kw: calls.append(argv) or real(argv, **kw))
    paths = [f"/{ds}/a/b/disk", f"/{ds}/a/gone/file", f"/{ds}/top", f"/{ds}/a/b"]
    found = zfs.filesystems_of(paths)
    assert len(calls) == 1 and all(p.startswith("/") for p in calls[0][5:]), calls
    assert found == {paths[0]: (ds + "/a/b", f"/{ds}/a/b"), paths[1]: (ds + "/a", f"/{ds}/a"),
                     paths[2]: (ds, f"/{ds}"), paths[3]: (ds + "/a/b", f"/{ds}/a/b")}
    assert zfs.dataset_of_path(f"/{ds}/a") == ds + "/a"
    assert zfs.dataset_of_path(f"/{ds}/a/b/disk") is None  # a file in it, not its mountpoint
    assert zfs.filesystems_of(["/proc/self/status"]) == {}  # not on ZFS
    assert zfs.dataset_of_path("/proc") is None


def test_dry_run_skips_mutations_but_reads_run(ds, capsys):
    from kvm import host
    host.set_dry_run(True)
    try:
        zfs.lzc_create(ds)
        assert not zfs.lzc_exists(ds)
    finally:
        host.set_dry_run(False)
    assert f"zfs create {ds}" in capsys.readouterr().out
