"""Snapshot sets without ZFS: the rows `zfs get` would give are handed to kvm.snap directly."""

import pytest

from kvm.conf import config
from kvm.storage import snap
from kvm import zfs
from kvm.errors import NotFound, StateError, UsageError
from kvm.vm.root import Root
from kvm.vm import Vm

MAIN, EXT = "tank/kvm/vm/web", "tank/ext"


def rows(spec, free=10 << 20):
    """{name: props} for 'ds@snap:txg' entries, plus the two datasets themselves."""
    out = {MAIN: {"type": "filesystem", "available": str(free)},
           EXT: {"type": "filesystem", "available": str(free)}}
    for item in spec.split():
        name, txg = item.rsplit(":", 1)
        out[name] = {"type": "snapshot", "createtxg": txg, "used": "1", "referenced": "2", "creation": "3"}
    return out


@pytest.fixture
def vm(monkeypatch):
    v = Vm(Root("/tank/kvm", "tank/kvm"), "web")
    cfg = config.validate("web", "/tank/kvm/vm/web", config.parse_text('VMrom="uefi"\n'))
    monkeypatch.setattr(snap, "datasets_of", lambda vm, cfg: [MAIN, EXT])
    return v, cfg


def use(monkeypatch, spec, free=10 << 20):
    monkeypatch.setattr(zfs, "get_props", lambda names, props, **kw: rows(spec, free))


def test_sets_are_ordered_and_incomplete_ones_named(vm, monkeypatch):
    use(monkeypatch, f"{MAIN}@b:20 {EXT}@b:20 {EXT}@a:10 {MAIN}@c:30")
    have = snap.listing([MAIN, EXT])
    assert have.names() == ["a", "b", "c"]
    assert [(s.complete, s.missing) for s in have.sets] == [(False, [MAIN]), (True, []), (False, [EXT])]
    assert have.get("a").props["createtxg"] == "10"  # shown from the dataset that has it


def test_select_ranges_and_bad_specs(vm, monkeypatch):
    v, _ = vm
    use(monkeypatch, " ".join(f"{ds}@{s}:{i}" for i, s in enumerate("abcd") for ds in (MAIN, EXT)))
    have = snap.listing([MAIN, EXT])
    pick = lambda spec: [s.name for s in snap.select(v, have, spec)]  # noqa: E731
    assert pick("b%c") == ["b", "c"] and pick("%b") == ["a", "b"] and pick("c%") == ["c", "d"]
    assert pick("b") == ["b"] and pick("%") == ["a", "b", "c", "d"]
    with pytest.raises(UsageError):
        snap.select(v, have, "c%b")
    with pytest.raises(NotFound):
        snap.select(v, have, "zz")


def test_rollback_refuses_an_incomplete_target_and_a_full_pool(vm, monkeypatch):
    v, cfg = vm
    use(monkeypatch, f"{MAIN}@a:1 {EXT}@a:1 {MAIN}@b:2")
    with pytest.raises(StateError, match="'b' is incomplete"):
        snap.rollback_plan(v, cfg, None, False)
    use(monkeypatch, f"{MAIN}@a:1 {EXT}@a:1 {MAIN}@b:2 {EXT}@b:2", free=1000)
    with pytest.raises(StateError, match="is full"):
        snap.rollback_plan(v, cfg, "a", True)


def test_rollback_r_counts_sets_left_on_one_dataset_as_newer(vm, monkeypatch):
    v, cfg = vm
    use(monkeypatch, f"{MAIN}@a:1 {EXT}@a:1 {EXT}@b:2")
    _, target, newer = snap.rollback_plan(v, cfg, "a", True)
    assert target.name == "a" and [s.name for s in newer] == ["b"] and newer[0].full_names() == [f"{EXT}@b"]


def test_create_replaces_a_same_named_incomplete_set(vm, monkeypatch):
    v, cfg = vm
    use(monkeypatch, f"{MAIN}@s:1")
    calls = []

    def take(names):
        calls.append(("snapshot", list(names)))
        if len(calls) == 1:
            raise zfs.SnapshotExists("snapshot already exists", names[0])
    monkeypatch.setattr(zfs, "lzc_snapshot", take)
    monkeypatch.setattr(zfs, "lzc_destroy_snaps", lambda names: calls.append(("destroy", list(names))))
    snap.create(v, cfg, "s")
    assert calls == [("snapshot", [f"{MAIN}@s", f"{EXT}@s"]), ("destroy", [f"{MAIN}@s"]),
                     ("snapshot", [f"{MAIN}@s", f"{EXT}@s"])]


def test_create_of_a_complete_set_is_refused(vm, monkeypatch):
    v, cfg = vm
    use(monkeypatch, f"{MAIN}@s:1 {EXT}@s:1")

    def take(names):
        raise zfs.SnapshotExists("snapshot already exists", names[0])
    monkeypatch.setattr(zfs, "lzc_snapshot", take)
    with pytest.raises(StateError, match="already exists"):
        snap.create(v, cfg, "s")
