"""vmsend/vmrecv between two real pools (--local): full, incremental, warm, cold, copy; refusals
that leave DEST as it was (name clash, no firmware, pool full); kill -9 of vmsend at seeded
random points."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import cmd, create_vm, datasets, destroy_dataset, kvm, one_line_error
from tests.cli.test_run import make, script, status, wait_for, guest_up


def prop(ds, name):
    res = subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", name, ds], capture_output=True, text=True)
    return res.stdout.strip()


def snaps_of(ds):
    res = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot"], capture_output=True, text=True)
    return [s.split("@")[1] for s in res.stdout.split() if s.startswith(f"{ds}@")]


@pytest.fixture
def far(scratch_pool, env, install):
    """A second install root on a pool of its own: (root path, pool name)."""
    name = scratch_pool(160)
    res = kvm(env, "kvminst", "-p", name, "-y")
    assert res.returncode == 0, res.stderr
    yield Path(f"/{name}/kvm"), name
    subprocess.run([sys.executable, "-m", "kvm", "--root", f"/{name}/kvm", "stop", "-f", "web"], env=env,
                   capture_output=True)
    destroy_dataset(f"{name}/kvm")


def overfill(vm_dir):
    """200 MiB of random data in the VM: more than the second root's 160 MiB pool holds."""
    with open(vm_dir / "big", "wb") as fh:
        fh.write(os.urandom(200 << 20))


def kill_connections(sshd_pid):
    """kill -9 of sshd's per-connection processes: the connection, not the zfs processes."""
    for pid in descendants(sshd_pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd"):
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def send(install, env, *args, timeout=120):
    return cmd(install, env, "vmsend", *args, timeout=timeout)


def test_copy_full_then_incremental(install, env, far):
    root, fpool = far
    d = make(install, env)
    (d / "data").write_bytes(b"one" * 1000)
    res = send(install, env, "web", "--local", root, "--copy")
    assert res.returncode == 0, res.stderr
    assert "web: copied to" in res.stdout and "MiB" in res.stderr
    assert (root / "vm/web/data").read_bytes() == b"one" * 1000
    assert (root / "vm/web/set.conf").read_text() == (d / "set.conf").read_text()
    src = prop(f"{install.parent.name}/kvm/vm/web", "guid")
    assert prop(f"{fpool}/kvm/vm/web", "kvm:source") == src
    (d / "data").write_bytes(b"two" * 1000)
    res = send(install, env, "web", "--local", root, "--copy")
    assert res.returncode == 0, res.stderr
    assert (root / "vm/web/data").read_bytes() == b"two" * 1000
    # pruned on both sides down to the last common snapshot
    here, there = snaps_of(f"{install.parent.name}/kvm/vm/web"), snaps_of(f"{fpool}/kvm/vm/web")
    assert len(here) == 1 and here == there
    # a copy is no migration: the source still starts
    assert prop(f"{install.parent.name}/kvm/vm/web", "kvm:migrated") == "-"
    res = cmd(root, env, "vmlist")
    assert "web" in res.stdout


def test_stopped_vm_migrates_and_the_source_refuses_to_start(install, env, far):
    root, fpool = far
    make(install, env)
    res = send(install, env, "web", "--local", root)
    assert res.returncode == 0, res.stderr
    assert "migrated to" in res.stdout
    assert prop(f"{install.parent.name}/kvm/vm/web", "kvm:migrated") == str(root)
    one_line_error(cmd(install, env, "start", "-b", "web"), "start: web: was migrated to", "zfs inherit", status=8)
    one_line_error(send(install, env, "web", "--local", root), "migrated to", "already", "start it there", status=8)


def _running(install, env):
    make(install, env)
    script(env, "web", "run")
    res = cmd(install, env, "start", "-b", "web")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(install, env), what="guest up")


@pytest.mark.parametrize("mode", ["warm", "cold"])
def test_running_vm_moves_and_runs_on_dest(install, env, far, mode):
    root, fpool = far
    _running(install, env)
    (install / "vm/web/data").write_bytes(b"written before the stop")
    res = send(install, env, "web", "--local", root, "-y", *(["--cold"] if mode == "cold" else []))
    assert res.returncode == 0, res.stderr
    assert "downtime" in res.stdout
    assert (root / "vm/web/data").read_bytes() == b"written before the stop"
    wait_for(lambda: status(root, env) > 0, what="web running from DEST")
    one_line_error(cmd(install, env, "start", "-b", "web"), "was migrated to", status=8)
    assert "stopping for" in res.stderr


def test_no_start_and_keep_leave_both_sides_stopped_and_the_source_startable(install, env, far):
    root, fpool = far
    _running(install, env)
    res = send(install, env, "web", "--local", root, "-y", "--no-start", "--keep")
    assert res.returncode == 0, res.stderr
    assert status(install, env) <= 0 and (root / "vm/web/set.conf").is_file()
    assert "start -b" not in res.stderr and (root / "vm/web/web.log").read_text().count("launched") == 1
    assert prop(f"{install.parent.name}/kvm/vm/web", "kvm:migrated") == "-"
    assert cmd(install, env, "start", "-b", "web").returncode == 0


def test_copy_of_a_running_vm_keeps_it_running(install, env, far):
    root, fpool = far
    _running(install, env)
    pid = status(install, env)
    res = send(install, env, "web", "--local", root, "--copy")
    assert res.returncode == 0, res.stderr
    assert status(install, env) == pid and (root / "vm/web/set.conf").is_file()


def test_a_copy_started_on_dest_is_not_rolled_back_without_force(install, env, far):
    """A disaster-recovery drill: the copy ran on DEST and changed there. The next --copy would
    roll that back (receive -F): refused in one line, DEST untouched; --force rolls it back."""
    root, fpool = far
    d = make(install, env)
    (d / "data").write_bytes(b"first copy")
    assert send(install, env, "web", "--local", root, "--copy").returncode == 0
    dst = f"{fpool}/kvm/vm/web"
    assert prop(dst, "kvm:started") == "-"
    script(env, "web", "run")
    assert cmd(root, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(root, env), what="the copy up on DEST")
    assert cmd(root, env, "stop", "web").returncode == 0
    assert prop(dst, "kvm:started") != "-"
    (root / "vm/web/data").write_bytes(b"changed on DEST")
    (d / "data").write_bytes(b"second copy")
    snaps = snaps_of(dst)
    one_line_error(send(install, env, "web", "--local", root, "--copy"), "vmsend: web: DEST's copy was started there",
                   "would roll back what it changed since; vmsend --force")
    assert (root / "vm/web/data").read_bytes() == b"changed on DEST" and snaps_of(dst) == snaps
    res = send(install, env, "web", "--local", root, "--copy", "--force")
    assert res.returncode == 0, res.stderr
    assert (root / "vm/web/data").read_bytes() == b"second copy" and prop(dst, "kvm:started") == "-"
    assert send(install, env, "web", "--local", root, "--copy").returncode == 0  # a copy again


def test_snapshots_made_on_dest_are_not_destroyed_without_force(install, env, far):
    root, fpool = far
    d = make(install, env)
    (d / "data").write_bytes(b"first copy")
    assert send(install, env, "web", "--local", root, "--copy").returncode == 0
    dst = f"{fpool}/kvm/vm/web"
    assert cmd(root, env, "snap", "create", "web", "kept-there").returncode == 0
    (d / "data").write_bytes(b"second copy")
    before = snaps_of(dst)
    one_line_error(send(install, env, "web", "--local", root, "--copy"), "vmsend: web: DEST's copy has snapshots "
                   "made there after", "(kept-there): an increment would destroy them; vmsend --force")
    assert snaps_of(dst) == before and (root / "vm/web/data").read_bytes() == b"first copy"
    res = send(install, env, "web", "--local", root, "--copy", "--force")
    assert res.returncode == 0, res.stderr
    assert "kept-there" not in snaps_of(dst) and (root / "vm/web/data").read_bytes() == b"second copy"


def test_a_copy_that_lost_its_mark_is_named_with_the_fix(install, env, far):
    """A receive cut off between the receive and its kvm:source (zfs-fuse sets it after): the
    refusal says which `zfs set` makes it a copy again."""
    root, fpool = far
    make(install, env)
    assert send(install, env, "web", "--local", root, "--copy").returncode == 0
    dst = f"{fpool}/kvm/vm/web"
    guid = prop(dst, "kvm:source")
    subprocess.run(["zfs", "inherit", "kvm:source", dst], check=True)
    line = one_line_error(send(install, env, "web", "--local", root, "--copy"), "exists on DEST without kvm:source")
    assert f"`zfs set kvm:source={guid} {dst}` there" in line
    subprocess.run(["zfs", "set", f"kvm:source={guid}", dst], check=True)
    assert send(install, env, "web", "--local", root, "--copy").returncode == 0


def test_local_refuses_when_the_running_vm_of_that_name_is_dests(install, env, far):
    """Run state and locks are per name on a host: with the source stopped and DEST's copy
    running, vmsend --local must not take DEST's copy for the source (and receive under it)."""
    root, fpool = far
    d = make(install, env)
    (d / "data").write_bytes(b"first copy")
    assert send(install, env, "web", "--local", root, "--copy").returncode == 0
    script(env, "web", "run")
    assert cmd(root, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(root, env), what="DEST's copy up")
    (d / "data").write_bytes(b"second copy")
    one_line_error(send(install, env, "web", "--local", root, "--copy", "--force"),
                   f"the web running on this host is the one of {root}: stop it there first", status=8)
    probe = subprocess.run([sys.executable, "-m", "kvm", "--root", str(root), "vmrecv", "web"], env=env, input="",
                           capture_output=True, text=True, timeout=60)
    assert json.loads(probe.stdout.splitlines()[0])["running"] is True  # a sender over ssh is refused too
    assert (root / "vm/web/data").read_bytes() == b"first copy" and status(root, env) > 0
    cmd(root, env, "stop", "-f", "web")


def test_dry_run_prints_the_pipeline_and_changes_nothing(install, env, far):
    root, fpool = far
    make(install, env)
    before = datasets(fpool) | datasets(install.parent.name)
    res = send(install, env, "web", "--local", root, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "zfs send" in res.stdout and "vmrecv web" in res.stdout and "MiB" in res.stdout
    assert datasets(fpool) | datasets(install.parent.name) == before


def test_name_clash_on_dest_is_refused(install, env, far):
    root, fpool = far
    make(install, env)
    # DEST's own web (bhyve's names being host-wide, vmcreate refuses a second web on one host:
    # this one is made as before that check, by a vmcreate that knows no other root)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as run:
        Path(run).chmod(0o755)
        assert cmd(root, dict(env, KVM_RUN_DIR=run), "vmcreate", "web", "-y").returncode == 0
    before = datasets(fpool)
    one_line_error(send(install, env, "web", "--local", root, "--copy"), "vmsend: web:", "exists on DEST",
                   "not overwritten")
    assert datasets(fpool) == before


def test_dest_without_firmware_is_refused(install, env, far):
    root, fpool = far
    make(install, env)
    for f in (root / "firmware").glob("BHYVE_UEFI*"):
        f.unlink()
    before = datasets(fpool)
    one_line_error(send(install, env, "web", "--local", root, "--copy"), "no pinned uefi firmware", status=6)
    assert datasets(fpool) == before


def test_dest_pool_full_leaves_dest_unchanged(install, env, far):
    root, fpool = far
    d = make(install, env)
    overfill(d)
    before = datasets(fpool)
    res = send(install, env, "web", "--local", root, "--copy")
    assert res.returncode == 1 and "web:" in res.stderr, res.stderr
    assert datasets(fpool) == before
    assert snaps_of(f"{install.parent.name}/kvm/vm/web") == []  # the snapshot made for it went too


def test_dest_pool_full_on_an_increment_rolls_dest_back(install, env, far):
    root, fpool = far
    d = make(install, env)
    (d / "data").write_bytes(b"first copy")
    assert send(install, env, "web", "--local", root, "--copy").returncode == 0
    dst = f"{fpool}/kvm/vm/web"
    before, base = snaps_of(dst), snaps_of(f"{install.parent.name}/kvm/vm/web")
    overfill(d)
    (d / "data").write_bytes(b"second copy")
    res = send(install, env, "web", "--local", root, "--copy")
    errors = [x for x in res.stderr.splitlines() if x.startswith("vmsend:")]  # the rest is progress
    assert res.returncode == 1 and len(errors) == 1, res.stderr
    for needle in ("vmsend: web: on ", "out of space", "DEST is unchanged",
                   f"run vmsend again: it sends again from {base[0]}, the last snapshot both sides have"):
        assert needle in errors[0], errors[0]
    assert snaps_of(dst) == before and prop(dst, "mounted") == "yes"
    assert (root / "vm/web/data").read_bytes() == b"first copy" and not (root / "vm/web/big").exists()
    assert snaps_of(f"{install.parent.name}/kvm/vm/web") == base  # the increment's snapshot went


def test_bad_usage_is_one_line(install, env, far):
    root, fpool = far
    make(install, env)
    one_line_error(send(install, env, "web"), "vmsend: web: give DEST or --local", status=2)
    one_line_error(send(install, env, "web", "--local", "/nonexistent"), "not a kvm install root", status=2)
    one_line_error(send(install, env, "web", "--local", install), "this VM's own root", status=2)
    one_line_error(send(install, env, "nosuch", "--local", root), "vmsend: nosuch: no such VM", status=6)
    one_line_error(send(install, env, "web", ":/tank/kvm"), "invalid DEST ':/tank/kvm'", status=2)
    one_line_error(send(install, env, "web", "h", "--local", root), "give DEST or --local", status=2)
    def vmrecv(request):
        return subprocess.run([sys.executable, "-m", "kvm", "--root", str(root), "vmrecv", "web"],
                              env=env, capture_output=True, text=True, input=request)
    res = vmrecv("recv a;b - 1\n")
    one_line_error(res, "vmrecv: web: invalid snapshot name 'a;b'", status=2)
    assert json.loads(res.stdout.splitlines()[0])["exists"] is False  # its plan line came first
    one_line_error(vmrecv("send x - 1\n"), "vmrecv: web: invalid request 'send x - 1'", status=2)
    one_line_error(vmrecv("recv x"), "vmrecv: web: truncated request 'recv x'", status=2)
    res = vmrecv("")  # the sender hung up without asking (a dry run): nothing done, no error
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert not (root / "vm/web").exists()


def test_dest_may_follow_the_options(install, env):
    make(install, env)
    one_line_error(send(install, env, "web", "--copy", "--ssh-opt", "Compression=no", ":/tank/kvm"),
                   "vmsend: web: invalid DEST ':/tank/kvm'", status=2)


def descendants(pid):
    """Every process below pid (read from /proc before the kill: orphans are re-parented)."""
    kids = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def gone(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill_vmsend_after(install, env, seconds, children, *args):
    """./vmsend ARGS, kill -9 of its own pid after `seconds` (never its group: the zfs processes
    are not signalled), then wait for the children `children(pid)` picks, read before the kill
    (orphans are re-parented), to end on their own."""
    proc = subprocess.Popen(["./vmsend", *args], cwd=install, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    kids = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: all(gone(k) for k in kids), seconds=60, what="vmsend's children ending")


@pytest.mark.slow
def test_kill_9_of_vmsend_at_random_points(install, env, far):
    """kill -9 of vmsend's own pid (never its group: the zfs processes are not signalled; they see
    EPIPE or EOF and end on their own, which is what a kill of vmsend means), then wait for its
    children. After each round: the source is intact and startable unless DEST is complete and it
    was marked; DEST holds nothing or the whole VM; running vmsend again completes."""
    root, fpool = far
    d = make(install, env)
    payload = os.urandom(24 << 20)
    (d / "data").write_bytes(payload)
    rng = random.Random(1313)
    src, dst = f"{install.parent.name}/kvm/vm/web", f"{fpool}/kvm/vm/web"
    t0 = time.monotonic()
    assert send(install, env, "web", "--local", root, "--keep").returncode == 0
    took = time.monotonic() - t0  # the points fall across one whole send, start-up included
    outcomes = set()
    for rnd in range(10):
        destroy_dataset(dst)  # a full send each round: the longest window to be killed in
        kill_vmsend_after(install, env, rng.uniform(0.05, 1.1 * took), descendants,
                          "web", "--local", str(root), "--keep")
        assert (d / "data").read_bytes() == payload and prop(src, "mounted") == "yes"
        assert cmd(install, env, "start", "-n", "web").returncode == 0
        if (root / "vm/web").exists() and prop(dst, "mounted") == "yes":
            assert (root / "vm/web/data").read_bytes() == payload, f"round {rnd}: half a VM on DEST"
            assert prop(dst, "kvm:source") == prop(src, "guid")
            outcomes.add("complete")
        else:
            assert dst not in datasets(fpool), f"round {rnd}: {dst} left unmounted"
            outcomes.add("nothing")
        if rnd % 2:
            res = send(install, env, "web", "--local", root, "--keep")
            assert res.returncode == 0, res.stderr
            assert (root / "vm/web/data").read_bytes() == payload
    print("outcomes:", outcomes)
    assert outcomes == {"complete", "nothing"}, "the seeded points should hit both sides of the send"


def zfs_children(pid):
    """vmsend's zfs and vmrecv processes (not a supervisor it started on DEST: that one stays)."""
    out = []
    for kid in descendants(pid):
        try:
            argv = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == b"zfs" or b"vmrecv" in argv:
            out.append(kid)
    return out


@pytest.mark.slow
def test_kill_9_of_a_warm_migration_at_random_points(install, env, far):
    """kill -9 of vmsend across a whole warm migration of a running VM (the bulk send, the stop,
    the last increment, the mark, the start on DEST). After each round: the source's data is
    intact; unmarked, it starts here; marked, DEST holds the whole last increment; DEST's data
    is the previous copy's or the new one, never anything else."""
    root, fpool = far
    _running(install, env)
    d, src = install / "vm/web", f"{install.parent.name}/kvm/vm/web"
    assert send(install, env, "web", "--local", root, "--copy").returncode == 0
    rng, outcomes = random.Random(7), set()

    def back_here():
        """Undo a finished migration: stop the copy on DEST, clear the mark, run the VM here.
        (DEST's copy ran there, kvm:started: the next sends roll it back with --force.)"""
        cmd(root, env, "stop", "-f", "web")
        subprocess.run(["zfs", "inherit", "kvm:migrated", src], check=True)
        wait_for(lambda: status(install, env) <= 0, what="DEST's copy stopped")
        assert cmd(install, env, "start", "-b", "web").returncode == 0
        wait_for(lambda: status(install, env) > 0, what="the source running again")

    (d / "data").write_bytes(os.urandom(4 << 20))
    t0 = time.monotonic()
    assert send(install, env, "web", "--local", root, "-y").returncode == 0
    took = time.monotonic() - t0
    back_here()
    for rnd in range(6):
        old, payload = (root / "vm/web/data").read_bytes(), os.urandom(4 << 20)
        (d / "data").write_bytes(payload)
        kill_vmsend_after(install, env, rng.uniform(0.2, 1.2 * took), zfs_children, "web", "--local", str(root), "-y",
                          "--force")
        time.sleep(2)  # a stop vmsend requested goes on without it: let the supervisor finish it
        assert (d / "data").read_bytes() == payload and prop(src, "mounted") == "yes"
        there = (root / "vm/web/data").read_bytes()
        assert there in (old, payload), f"round {rnd}: DEST holds neither copy"
        if prop(src, "kvm:migrated") != "-":
            assert there == payload, f"round {rnd}: marked before DEST held the last increment"
            outcomes.add("migrated")
            back_here()
            continue
        assert cmd(install, env, "start", "-n", "web").returncode == 0
        outcomes.add("running here" if status(install, env) > 0 else "stopped here")
        if status(install, env) <= 0:
            assert cmd(install, env, "start", "-b", "web").returncode == 0, f"round {rnd}: not startable"
            wait_for(lambda: status(install, env) > 0, what="the source running again")
    print("outcomes:", outcomes)
    assert len(outcomes) >= 2, outcomes
    res = send(install, env, "web", "--local", root, "-y", "--force")  # and a run to the end completes
    assert res.returncode == 0, res.stderr
    assert (root / "vm/web/data").read_bytes() == (d / "data").read_bytes()


# ----------------------------------------------------------------------------- over real ssh

def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path, env):
    """Our own sshd on 127.0.0.1 (throw-away host and user keys, authorized_keys in a temp file;
    the host's /etc/ssh and /root/.ssh are not used) and the env vmsend needs to reach it:
    KVM_SSH, plus a remote kvm command carrying the test's paths (sshd gives a clean env)."""
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("openssh-server is not installed (tests/setup.sh installs it)")
    for key in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / key)], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "user.pub").read_text())
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    port = free_port()
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-p", str(port),
                             "-h", str(tmp_path / "host"), "-o", "ListenAddress=127.0.0.1",
                             "-o", f"AuthorizedKeysFile={tmp_path / 'authorized_keys'}",
                             "-o", "StrictModes=no", "-o", "PermitRootLogin=prohibit-password",
                             "-o", "PidFile=none", "-o", "UsePAM=no"],
                            stderr=open(tmp_path / "sshd.log", "w"))
    keep = {k: v for k, v in env.items() if k.startswith("KVM_") or k in ("PATH", "PYTHONPATH")}
    # DEST is "another host": its own run dir (locks, state), as a second machine has
    keep["KVM_RUN_DIR"] = str(tmp_path / "farrun")
    (tmp_path / "farrun").mkdir(mode=0o755)
    wrapper = tmp_path / "remote-kvm"
    wrapper.write_text("#!/bin/sh\n" + "".join(f"export {k}='{v}'\n" for k, v in keep.items())
                       + f"exec {sys.executable} -m kvm \"$@\"\n")
    wrapper.chmod(0o755)
    e = dict(env, KVM_SSH=f"ssh -F /dev/null -p {port} -i {tmp_path / 'user'} -o StrictHostKeyChecking=no "
                          f"-o UserKnownHostsFile={tmp_path / 'known_hosts'}")
    wait_for(lambda: subprocess.run(e["KVM_SSH"].split() + ["-o", "BatchMode=yes", "root@127.0.0.1", "true"],
                                    capture_output=True).returncode == 0, seconds=20, what="sshd up")
    e["FAR_RUN_DIR"] = keep["KVM_RUN_DIR"]
    yield e, str(wrapper), proc.pid
    proc.kill()
    proc.wait()


def test_over_ssh_copy_then_warm_migration(install, far, sshd):
    root, fpool = far
    e, wrapper, _ = sshd
    make(install, e)
    (install / "vm/web/data").write_bytes(b"over ssh")
    dest = f"root@127.0.0.1:{root}"
    res = send(install, e, "web", dest, "--copy", "--remote-kvm", wrapper)
    assert res.returncode == 0, res.stderr
    assert (root / "vm/web/data").read_bytes() == b"over ssh"
    script(e, "web", "run")
    assert cmd(install, e, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, e), what="guest up")
    (install / "vm/web/data").write_bytes(b"written while running")
    res = send(install, e, "web", dest, "-y", "--remote-kvm", wrapper)
    assert res.returncode == 0, res.stderr
    assert "downtime" in res.stdout
    assert (root / "vm/web/data").read_bytes() == b"written while running"
    far_env = dict(e, KVM_RUN_DIR=e["FAR_RUN_DIR"])
    wait_for(lambda: status(root, far_env) > 0, what="web running from DEST")
    cmd(root, far_env, "stop", "-f", "web")


def test_over_ssh_errors_are_one_line(install, far, sshd):
    root, fpool = far
    e, wrapper, _ = sshd
    make(install, e)
    one_line_error(send(install, e, "web", f"root@127.0.0.1:{root}", "--remote-kvm", "/nonexistent/kvm"),
                   "kvm is not installed on root@127.0.0.1")
    bad = dict(e, KVM_SSH=e["KVM_SSH"].replace("-p ", "-p 1"))
    one_line_error(send(install, bad, "web", f"root@127.0.0.1:{root}"), "ssh to root@127.0.0.1")


def test_over_ssh_connection_killed_mid_send(install, far, sshd):
    """The server side of the connection dies while the stream flows: DEST is as it was,
    vmsend says so in one line, the source keeps no send snapshot, and a re-run completes."""
    root, fpool = far
    e, wrapper, sshd_pid = sshd
    d = make(install, e)
    payload = os.urandom(40 << 20)
    (d / "data").write_bytes(payload)
    src, dst = f"{install.parent.name}/kvm/vm/web", f"{fpool}/kvm/vm/web"
    proc = subprocess.Popen(["./vmsend", "web", f"root@127.0.0.1:{root}", "--copy", "--remote-kvm", wrapper],
                            cwd=install, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def receiving():
        for pid in descendants(sshd_pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"zfs", b"receive"] and dst.encode() in argv:
                return True
        return False
    wait_for(receiving, seconds=30, what="the receive on DEST")
    kill_connections(sshd_pid)
    out, err = proc.communicate(timeout=120)
    errors = [x for x in err.splitlines() if x.startswith("vmsend:")]  # the rest is progress
    assert proc.returncode == 1 and len(errors) == 1, err
    assert errors[0].startswith("vmsend: web: ssh to root@127.0.0.1")
    assert "run vmsend again: it sends again in full" in errors[0]
    wait_for(lambda: dst not in datasets(fpool), seconds=30, what="DEST as it was")
    assert snaps_of(src) == []
    res = send(install, e, "web", f"root@127.0.0.1:{root}", "--copy", "--remote-kvm", wrapper)
    assert res.returncode == 0, res.stderr
    assert (root / "vm/web/data").read_bytes() == payload


def test_a_clone_arrives_whole_and_a_cloned_send_snapshot_is_kept(install, env, far):
    root, fpool = far
    pool = install.parent.name
    make(install, env)
    res = send(install, env, "web", "--local", root, "--copy")
    assert res.returncode == 0, res.stderr
    first = snaps_of(f"{pool}/kvm/vm/web")[0]
    subprocess.run(["zfs", "clone", f"{pool}/kvm/vm/web@{first}", f"{pool}/kvm/vm/web2"], check=True)
    try:
        res = send(install, env, "web", "--local", root, "--copy")  # prune meets the clone's origin
        assert res.returncode == 0, res.stderr
        assert first in snaps_of(f"{pool}/kvm/vm/web") and len(snaps_of(f"{pool}/kvm/vm/web")) == 2
        res = send(install, env, "web2", "--local", root, "--copy")  # a clone: a full, independent copy
        assert res.returncode == 0, res.stderr
        assert prop(f"{fpool}/kvm/vm/web2", "origin") == "-"
        assert (root / "vm/web2/set.conf").is_file()
    finally:
        destroy_dataset(f"{pool}/kvm/vm/web2")


def test_dest_without_the_vms_switches_is_named_and_refused(install, env, far):
    """Issue 21: the VM's NICs are on switch lan; DEST has none: refused, naming it, before anything
    is sent; once DEST has it (or with --force) the copy goes."""
    root, fpool = far
    assert cmd(install, env, "switch", "create", "lan").returncode == 0
    create_vm(install, env, "web", "--disk-size", "16M", "--switch", "lan")
    before = datasets(fpool)
    one_line_error(send(install, env, "web", "--local", root, "--copy"), "DEST has no switch lan",
                   "kvm switch create", status=6)   # 6: not found (kvm(8) EXIT STATUS)
    assert datasets(fpool) == before
    # one host, two roots: DEST's switch of that name uses the bridge the first root made
    res = subprocess.run([sys.executable, "-m", "kvm", "--root", str(root), "switch", "create", "lan"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 1 and "--manual lan" in res.stderr
    assert subprocess.run([sys.executable, "-m", "kvm", "--root", str(root), "switch", "create", "lan",
                           "--manual", "lan"], env=env, capture_output=True).returncode == 0
    res = send(install, env, "web", "--local", root, "--copy")
    assert res.returncode == 0, res.stderr


def test_dest_missing_several_switches_names_them_all_and_force_sends(install, env, pool, far):
    """Every switch DEST lacks is named, nothing moves (no snapshot taken here, nothing made there);
    --force sends the VM all the same, its Switch kept for DEST's admin to make the switches."""
    root, fpool = far
    for name in ("lan", "dmz"):
        assert cmd(install, env, "switch", "create", name).returncode == 0
    create_vm(install, env, "web", "--disk-size", "16M", "--switch", "lan", "--switch", "dmz")
    before, mine = datasets(fpool), snaps_of(f"{pool}/kvm/vm/web")
    one_line_error(send(install, env, "web", "--local", root, "--copy"), "vmsend: web: DEST has no switch dmz, lan, "
                   "which the VM's NICs use (Switch): create them there first (kvm switch create), or --force",
                   status=6)
    assert datasets(fpool) == before and snaps_of(f"{pool}/kvm/vm/web") == mine, "nothing moved"
    res = send(install, env, "web", "--local", root, "--copy", "--force")
    assert res.returncode == 0, res.stderr
    assert 'Switch="tapWEB=lan tapWEBn1=dmz"' in (root / "vm" / "web" / "set.conf").read_text()
