"""kvm/zfs is the one door to ZFS: no module outside it runs `zfs` or `zpool`, or writes the '@'
of a snapshot name DATASET@SNAP (zfs.snapshot_name and zfs.split_snapshot do). Read from the
source with ast, so a new caller that goes round the door fails here, naming file and line."""

import ast
from pathlib import Path

import pytest

KVM = Path(__file__).resolve().parents[2] / "kvm"
DOOR = KVM / "zfs"
COMMANDS = ("zfs", "zpool")
# host's calls that take an argv first (kvm/host/process.py, relay.py)
PROCESS_CALLS = {"run", "run_later", "run_limited", "spawn", "spawn_quiet", "exec_replace", "relay", "Peer"}


def _text(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _called(node):
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def runs_zfs(node):
    """A call of host.run & co. whose argv is a list (or tuple) written out starting with "zfs" or
    "zpool"."""
    if not (isinstance(node, ast.Call) and _called(node) in PROCESS_CALLS and node.args):
        return False
    argv = node.args[0]
    return isinstance(argv, (ast.List, ast.Tuple)) and bool(argv.elts) and _text(argv.elts[0]) in COMMANDS


def joins_snapshot(node):
    """An f-string that reads as a snapshot name: an expression, then '@' (f"{ds}@{snap}",
    f"{ds}@base"), and no blank in its literal text (a message naming a VM's snapshot set,
    f"destroyed {vm}@{snap}", is no ZFS name); or ... + "@" ...; or "@".join(...)."""
    if isinstance(node, ast.JoinedStr):
        parts = node.values
        literal = "".join(_text(p) or "" for p in parts)
        return not any(c.isspace() for c in literal) and any(
            isinstance(a, ast.FormattedValue) and (_text(b) or "").startswith("@") for a, b in zip(parts, parts[1:]))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return (_text(node.right) or "").startswith("@") or (_text(node.left) or "").endswith("@")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join":
        return _text(node.func.value) == "@"
    return False


def offences(source, where="<source>"):
    """'where:line: what' for each way round the door in `source`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if runs_zfs(node):
            out.append((node.lineno, f"runs {_text(node.args[0].elts[0])} (use the zfs package)"))
        elif joins_snapshot(node):
            out.append((node.lineno, "writes DATASET@SNAP (use zfs.snapshot_name / split_snapshot)"))
    return [f"{where}:{line}: {what}" for line, what in sorted(out)]


def test_nothing_outside_kvm_zfs_goes_round_the_door():
    modules = [p for p in sorted(KVM.rglob("*.py")) if DOOR not in p.parents]
    assert len(modules) > 50  # the tree was found
    found = [line for p in modules for line in offences(p.read_text(), p.relative_to(KVM.parent))]
    assert not found, "round the door of kvm/zfs:\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    'host.run(["zfs", "get", "-H", "volsize", *names], check=False)',
    'host.run_later(["zfs", "get", "-H", "-p", "mountpoint,used,origin", *names])',
    'host.spawn(("zpool", "list"))',
    'run(["zfs", *args])',
    'f"{ds}@{snap}"',
    'f"{self.ds}@{receive.SEND_PREFIX}<time>"',
    'f"{ds}@base"',
    'ds + "@" + snap',
    'ds + "@snap"',
    '"@".join([ds, snap])',
])
def test_the_checks_catch_each_way_round(source):
    assert len(offences(source)) == 1


@pytest.mark.parametrize("source", [
    'host.run(["qemu-img", "convert", "zfs"])',
    'names = ["zfs", "zpool"]',
    'print(f"destroyed {vm.name}@{name}")',
    'f"{vm.name}@{p.take} exists already (one auto- snapshot a minute): not taken again"',
    'f"vm {vm.name}@{snap}"',
    'f"{user}:{host}"',
    'zfs.snapshot_name(ds, snap)',
    'text.split("@", 1)[0]',
])
def test_the_checks_leave_the_rest_alone(source):
    assert offences(source) == []


# ------------------------------------------------- the door's calls for vminfo and vmlist

def test_get_props_later_starts_the_one_call_now_and_parses_later(monkeypatch):
    from kvm import host, zfs
    started = []

    class Pending:
        def result(self):
            return host.Result(started[-1], 0, "p/vm/web\tmountpoint\t/k/vm/web\np/vm/web\tused\t4096\n"
                                               "p/vm/web\torigin\t-\n", "")
    monkeypatch.setattr(host, "run_later", lambda argv: started.append(argv) or Pending())
    answer = zfs.get_props_later(["p/vm/web"], ["mountpoint", "used", "origin"])
    assert started == [["zfs", "get", "-H", "-p", "-o", "name,property,value", "mountpoint,used,origin", "p/vm/web"]]
    assert answer() == {"p/vm/web": {"mountpoint": "/k/vm/web", "used": "4096", "origin": None}}
    zfs.get_props_later(None, ["used"])
    assert started[-1] == ["zfs", "get", "-H", "-p", "-o", "name,property,value", "used"]  # every dataset
    assert zfs.get_props_later([], ["used"])() == {} and len(started) == 2  # no name: no call


def test_volume_sizes_keep_what_zfs_answered_and_never_raise(monkeypatch):
    from kvm import host, zfs
    seen = []
    out = "p/a\t1073741824\np/b\t-\n"
    monkeypatch.setattr(host, "run", lambda argv, **kw: seen.append((argv, kw)) or host.Result(argv, 1, out, "no p/c"))
    assert zfs.volume_sizes(["p/a", "p/b", "p/c"]) == {"p/a": 1073741824}
    assert seen == [(["zfs", "get", "-H", "-p", "-o", "name,value", "volsize", "p/a", "p/b", "p/c"],
                     {"mutating": False, "check": False})]
