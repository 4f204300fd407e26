"""snap across a VM's datasets as sets: incomplete sets seen and repaired, rollback refused unless
complete or on a full pool, snap commands under the VM's lock (the rollback-vs-start race)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cmd, create_vm, destroy_dataset, kvm, one_line_error, run_folder
from tests.cli.test_run import HOOKS, guest_up, script, wait_for


def snaps_of(ds):
    res = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot"], capture_output=True, text=True)
    return [s.split("@")[1] for s in res.stdout.split() if s.startswith(f"{ds}@")]


@pytest.fixture
def two(install, env, pool):
    """VM web whose Disk lives on another dataset, POOL/ext: (vm folder, ext dataset, ext disk)."""
    d = create_vm(install, env, "web")
    ext = f"{pool}/ext"
    destroy_dataset(ext)
    subprocess.run(["zfs", "create", ext], check=True)
    disk = Path(f"/{ext}/disk")
    disk.write_bytes(b"ext-v1")
    with open(d / "set.conf", "a") as fh:
        fh.write(f'Disk="{disk}"\n')
    yield d, ext, disk
    destroy_dataset(ext)


def test_help_shows_the_range_as_typed(install, env):
    res = cmd(install, env, "snap", "--help")
    assert res.returncode == 0 and "A%B" in res.stdout and "%%" not in res.stdout


def test_a_set_missing_on_one_dataset_is_listed_refused_and_repaired(install, env, pool, two):
    d, ext, disk = two
    main = f"{pool}/kvm/vm/web"
    assert cmd(install, env, "snap", "c", "web", "s1").returncode == 0
    subprocess.run(["zfs", "snapshot", f"{main}@half"], check=True)  # as a killed one-by-one create leaves it
    res = cmd(install, env, "snap", "list", "web", "-H")
    assert [r.split("\t")[0] for r in res.stdout.splitlines()] == ["s1", "half"]
    assert f"snapshot 'half' is incomplete (missing on {ext})" in res.stderr
    data = json.loads(cmd(install, env, "snap", "list", "web", "--json").stdout)
    assert [(x["name"], x["complete"], x["missing"]) for x in data] == [("s1", True, []), ("half", False, [ext])]
    disk.write_bytes(b"ext-v2")
    one_line_error(cmd(install, env, "snap", "r", "web"), "snapshot 'half' is incomplete", ext)
    assert disk.read_bytes() == b"ext-v2" and snaps_of(main) == ["s1", "half"]
    res = cmd(install, env, "snap", "c", "web", "half")  # running it again completes it
    assert res.returncode == 0, res.stderr
    assert snaps_of(main) == ["s1", "half"] and snaps_of(ext) == ["s1", "half"]


def test_a_set_left_only_on_the_other_dataset_is_seen_and_destroyed(install, env, pool, two):
    d, ext, disk = two
    subprocess.run(["zfs", "snapshot", f"{ext}@orphan"], check=True)  # as a killed destroy leaves it
    res = cmd(install, env, "snap", "list", "web", "-H")
    assert res.stdout.split("\t")[0] == "orphan" and "incomplete" in res.stderr
    res = cmd(install, env, "snap", "d", "web", "orphan")
    assert res.returncode == 0, res.stderr
    assert snaps_of(ext) == []


def test_rollback_r_and_prune_cover_every_dataset(install, env, pool, two):
    d, ext, disk = two
    main = f"{pool}/kvm/vm/web"
    for s in ("a", "b", "c", "d"):
        assert cmd(install, env, "snap", "c", "web", s).returncode == 0
    subprocess.run(["zfs", "destroy", f"{main}@c"], check=True)  # c now lives on ext only
    disk.write_bytes(b"ext-v9")
    res = cmd(install, env, "snap", "r", "web", "b", "-r", "-y")
    assert res.returncode == 0, res.stderr
    assert "c, d" in res.stderr
    assert snaps_of(main) == ["a", "b"] and snaps_of(ext) == ["a", "b"] and disk.read_bytes() == b"ext-v1"
    res = cmd(install, env, "snap", "prune", "web", "--keep", "1", "-y")
    assert res.returncode == 0, res.stderr
    assert snaps_of(main) == ["b"] and snaps_of(ext) == ["b"]


def fill(root_dir):
    subprocess.run(["dd", "if=/dev/urandom", f"of={root_dir}/filler", "bs=1M"], capture_output=True)
    for i in range(20000):
        try:
            (Path(root_dir) / f"crumb{i}").write_bytes(b"x" * 4096)
        except OSError:
            break


def test_rollback_r_on_a_full_pool_changes_nothing(scratch_pool, env):
    pool = scratch_pool(128)
    assert kvm(env, "kvminst", "-p", pool, "-y").returncode == 0
    root = Path(f"/{pool}/kvm")
    create_vm(root, env, "full")
    main = f"{pool}/kvm/vm/full"
    for s in ("s1", "s2"):
        assert cmd(root, env, "snap", "c", "full", s).returncode == 0
    fill(root / "vm" / "full")
    res = cmd(root, env, "snap", "r", "full", "s1", "-r", "-y")
    one_line_error(res, "snap: full: the pool of", "is full", "nothing was changed")
    assert snaps_of(main) == ["s1", "s2"]
    subprocess.run(["zfs", "destroy", "-r", f"{pool}/kvm"], capture_output=True)


# ------------------------------------------------------------------------------ locks

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, sys.argv[2].encode())
print("held", flush=True)
time.sleep(60)
"""


def hold_lock(env, root, text):
    """A process holding web's lock with `text` in it, as a supervisor (pid only) or a command does."""
    path = run_folder(env, root, "web") / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), text.format(pid="{pid}")],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


@pytest.mark.parametrize("text, needle", [("{pid}\n", "is running"), ("{pid} vmrename\n", "is busy")])
def test_rollback_waits_for_nobody_it_refuses_while_the_lock_is_held(install, env, pool, text, needle):
    d = create_vm(install, env, "web")
    assert cmd(install, env, "snap", "c", "web", "s1").returncode == 0
    (d / "after").write_text("new")
    proc = hold_lock(env, install, text)
    try:
        one_line_error(cmd(install, env, "snap", "r", "web"), "snap: web:", needle, status=8)
        assert (d / "after").exists(), "rolled back a VM whose lock was held"
        res = cmd(install, env, "snap", "d", "web", "s1")
        if needle == "is busy":  # another command works on the VM: destroy waits its turn too
            one_line_error(res, "snap: web: is busy", status=8)
            assert snaps_of(f"{pool}/kvm/vm/web") == ["s1"]
        else:  # a running VM's snapshots can be destroyed and pruned
            assert res.returncode == 0, res.stderr
    finally:
        proc.kill()
        proc.wait()


def test_rollback_racing_start_never_rolls_back_a_started_vm(install, env, pool):
    d = create_vm(install, env, "web", "--disk-size", "64M")
    (d / "run").write_text(HOOKS.format(name="web", pre_extra=":"))
    assert cmd(install, env, "snap", "c", "web", "s0").returncode == 0
    script(env, "web", *(["run"] * 8))
    up = 0
    for round_ in range(8):
        start = subprocess.Popen([str(install / "start"), "-b", "web"], env=env, cwd=install,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.02 * (round_ % 4))
        rolled = cmd(install, env, "snap", "r", "web")
        if start.wait(30) != 0:  # the rollback held the lock: start refused, nothing runs
            assert rolled.returncode == 0, (start.stderr.read(), rolled.stderr)
            continue
        up += 1
        wait_for(lambda: guest_up(install, env, boots=up), what="the guest")
        log = d / "hooks.log"
        assert log.exists() and "pre web" in log.read_text(), \
            f"round {round_}: rolled back ({rolled.returncode}) under a started VM: its preRun's file is gone"
        assert cmd(install, env, "stop", "-f", "web").returncode == 0
        wait_for(lambda: not cmd(install, env, "vmlist", "-H").stdout.startswith("web\trunning"), what="the stop")
