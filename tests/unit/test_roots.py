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
