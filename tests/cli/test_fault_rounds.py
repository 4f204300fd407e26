"""kill -9 at seeded random points of snap create, prune, rollback -r and kvminst, 30 rounds each.

After every round the VM is listed and mounted, its snapshot sets are the same on all its
datasets once the command is run again, and that second run completes what the killed one began.
The VM's Disk lives on another dataset, so every snap command spans two datasets.
"""

import json
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import cmd, create_vm, destroy_dataset, kvm

ROUNDS = 30
pytestmark = pytest.mark.slow


def killer(tmp_path):
    """A `zfs` first on PATH that kills its caller at call number $KILL_AT, before or after
    running the real zfs ($KILL_WHEN); every call passes through once the kill is done."""
    real = subprocess.run(["sh", "-c", "command -v zfs"], capture_output=True, text=True).stdout.strip()
    d = tmp_path / "killer"
    d.mkdir()
    (d / "zfs").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        count=$(cat {d}/n 2>/dev/null || echo 0); count=$((count+1)); echo $count > {d}/n
        if [ "$count" = "$KILL_AT" ] && [ "$KILL_WHEN" = before ]; then kill -9 $PPID; exit 1; fi
        {real} "$@"; rc=$?
        if [ "$count" = "$KILL_AT" ] && [ "$KILL_WHEN" = after ]; then kill -9 $PPID; fi
        exit $rc
        """))
    (d / "zfs").chmod(0o755)
    return d


def zsnap(*names):
    for name in names:
        subprocess.run(["zfs", "snapshot", name], check=True, capture_output=True)


def snaps(ds):
    res = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot"], capture_output=True, text=True)
    return [s.split("@")[1] for s in res.stdout.split() if s.startswith(f"{ds}@")]


@pytest.fixture
def vm(install, env, pool, tmp_path):
    """VM web, Disk on POOL/ext; yields a runner for killed commands and the two datasets."""
    d = create_vm(install, env, "web")
    ext = f"{pool}/ext"
    destroy_dataset(ext)
    subprocess.run(["zfs", "create", ext], check=True)
    Path(f"/{ext}/disk").write_bytes(b"v0")
    with open(d / "set.conf", "a") as fh:
        fh.write(f'Disk="/{ext}/disk"\n')
    k = killer(tmp_path)

    def killed(argv, at, when):
        (k / "n").unlink(missing_ok=True)
        e = dict(env, PATH=f"{k}:{env['PATH']}", KILL_AT=str(at), KILL_WHEN=when)
        return cmd(install, e, *argv)
    yield killed, [f"{pool}/kvm/vm/web", ext]
    destroy_dataset(ext)


def check_vm(install, env, dsets):
    """Listed, mounted, and its snapshot sets the same on every dataset."""
    assert cmd(install, env, "vmlist", "-H").stdout.startswith("web\t")
    mounted = subprocess.run(["zfs", "get", "-H", "-o", "value", "mounted", *dsets], capture_output=True,
                             text=True).stdout.split()
    assert mounted == ["yes"] * len(dsets), (dsets, mounted)
    listed = json.loads(cmd(install, env, "snap", "list", "web", "--json").stdout)
    assert all(s["complete"] for s in listed), listed
    assert snaps(dsets[0]) == snaps(dsets[1])
    return [s["name"] for s in listed]


def points(seed, calls):
    """ROUNDS (zfs call number, before|after) points; `calls`: how many zfs calls the command makes
    on zfs-fuse (snap c: 6, prune: 9, rollback -r: 11, with the VM on two datasets)."""
    rng = random.Random(seed)
    return [(rng.randint(1, calls), rng.choice(["before", "after"])) for _ in range(ROUNDS)]


def test_snap_create_killed_anywhere(vm, install, env):
    killed, dsets = vm
    for i, (at, when) in enumerate(points(1, 6)):
        killed(["snap", "c", "web", f"s{i}"], at, when)
        again = cmd(install, env, "snap", "c", "web", f"s{i}")
        assert again.returncode == 0 or "already exists" in again.stderr, (i, at, when, again.stderr)
        assert check_vm(install, env, dsets)[-1] == f"s{i}", (i, at, when)


def test_snap_prune_killed_anywhere(vm, install, env):
    killed, dsets = vm
    for i, (at, when) in enumerate(points(2, 9)):
        zsnap(*[f"{ds}@r{i}x{j}" for j in range(3) for ds in dsets])
        killed(["snap", "prune", "web", "--keep", "1", "-y"], at, when)
        again = cmd(install, env, "snap", "prune", "web", "--keep", "1", "-y")
        assert again.returncode == 0, (i, at, when, again.stderr)
        assert check_vm(install, env, dsets) == [f"r{i}x2"], (i, at, when)


def test_snap_rollback_r_killed_anywhere(vm, install, env, pool):
    killed, dsets = vm
    disk = Path(f"/{pool}/ext/disk")
    for i, (at, when) in enumerate(points(3, 11)):
        disk.write_bytes(b"base%d" % i)
        zsnap(*[f"{ds}@b{i}" for ds in dsets])
        disk.write_bytes(b"newer")
        zsnap(*[f"{ds}@n{i}x{j}" for j in range(2) for ds in dsets])
        killed(["snap", "r", "web", f"b{i}", "-r", "-y"], at, when)
        again = cmd(install, env, "snap", "r", "web", f"b{i}", "-r", "-y")
        assert again.returncode == 0, (i, at, when, again.stderr)
        assert check_vm(install, env, dsets)[-1] == f"b{i}", (i, at, when)
        assert disk.read_bytes() == b"base%d" % i


def test_kvminst_killed_anywhere(install, env, pool):
    create_vm(install, env, "web")
    rng = random.Random(4)
    for i in range(ROUNDS):
        proc = subprocess.Popen([sys.executable, "-m", "kvm", "kvminst", "-p", pool, "-y"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, 0.9))
        proc.kill()
        proc.wait()
        res = kvm(env, "kvminst", "-p", pool, "-y")
        assert res.returncode == 0, (i, res.stderr)
        leftovers = [p.name for p in install.rglob(".*") if p.name.endswith(".tmp") or "probe" in p.name]
        assert leftovers == [], (i, leftovers)
        assert kvm(env, "kvminst", "--verify", "-p", pool).returncode == 0, i
        assert cmd(install, env, "vmlist", "-H").stdout.startswith("web\t"), i
