"""Root discovery (kvm/vm/root.py) among several marked roots: the current folder decides."""

import pytest

from kvm import zfs
from kvm.errors import UsageError
from kvm.vm import root as rootmod


@pytest.fixture
def two_roots(tmp_path, monkeypatch):
    """Two marked install roots, a and b, each with a VM folder web."""
    roots = {}
    for name in ("a", "b"):
        path = tmp_path / name / "kvm"
        (path / "vm" / "web").mkdir(parents=True)
        (path / rootmod.MARKER).write_text("")
        roots[name] = path
    monkeypatch.setattr(zfs, "marked_mountpoints", lambda prop: {f"{n}/kvm": str(p) for n, p in roots.items()})
    monkeypatch.delenv("KVM_ROOT", raising=False)
    return roots


def test_the_root_holding_the_current_folder_wins(two_roots, monkeypatch):
    for name, path in two_roots.items():
        for where in (path, path / "vm", path / "vm" / "web"):
            monkeypatch.chdir(where)
            assert rootmod.find_root().path == path, where


def test_outside_every_root_the_choice_is_asked_for(two_roots, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as exc:
        rootmod.find_root()
    assert "several kvm installs found" in exc.value.message
    assert "--root DIR or KVM_ROOT" in exc.value.message
    assert str(two_roots["a"]) in exc.value.message and str(two_roots["b"]) in exc.value.message


def test_explicit_choices_beat_the_current_folder(two_roots, monkeypatch):
    monkeypatch.chdir(two_roots["a"])
    assert rootmod.find_root(str(two_roots["b"])).path == two_roots["b"]
    monkeypatch.setenv("KVM_ROOT", str(two_roots["b"]))
    assert rootmod.find_root().path == two_roots["b"]
    monkeypatch.delenv("KVM_ROOT")
    assert rootmod.find_root(launcher_dir=str(two_roots["b"])).path == two_roots["b"]


@pytest.fixture
def dead_mount(two_roots, monkeypatch, tmp_path):
    """Root c, marked in ZFS, whose FUSE mount lost its daemon: every stat under it fails ENOTCONN
    (as a zfs-fuse mount left behind by a daemon that died: seen in CI)."""
    import errno
    import os
    dead = tmp_path / "c" / "kvm"
    dead.mkdir(parents=True)
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if str(path).startswith(str(dead)):
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN), str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    marked = {f"{n}/kvm": str(p) for n, p in two_roots.items()} | {"c/kvm": str(dead)}
    monkeypatch.setattr(zfs, "marked_mountpoints", lambda prop: marked)
    return dead


def test_a_marked_root_on_a_dead_mount_is_passed_over(two_roots, dead_mount, monkeypatch):
    monkeypatch.chdir(two_roots["a"])
    assert rootmod.find_root().path == two_roots["a"]
    monkeypatch.delenv(rootmod.ROOTS_ENV, raising=False)
    monkeypatch.setattr(rootmod.runfiles, "recorded_roots", lambda: [])
    others = rootmod.other_roots(rootmod.Root(two_roots["a"]))
    assert [r.path for r in others] == [two_roots["b"]]


def test_a_dead_mount_given_as_root_is_named_with_the_reason(dead_mount):
    from kvm.errors import NotFound
    with pytest.raises(NotFound) as exc:
        rootmod.find_root(str(dead_mount))
    assert str(dead_mount) in exc.value.message and "Transport endpoint is not connected" in exc.value.message


def test_when_only_dead_mounts_are_marked_the_error_names_them(dead_mount, monkeypatch, tmp_path):
    monkeypatch.setattr(zfs, "marked_mountpoints", lambda prop: {"c/kvm": str(dead_mount)})
    from kvm.errors import NotFound
    with pytest.raises(NotFound) as exc:
        rootmod.find_root()
    assert "no kvm install found" in exc.value.message
    assert str(dead_mount) in exc.value.message and "not connected" in exc.value.message
