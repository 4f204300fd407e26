"""vmsend where ZFS resumes receives (OpenZFS's `zfs receive -s`, `zfs send -t`). zfs-fuse has
neither; tests/sim/resumable/zfs adds them over zfs-fuse's real streams the way OpenZFS behaves
(see that file), so the resume path runs end to end between two real pools: an interrupted send
leaves DEST its partial receive and the source its snapshot, and the next vmsend sends only the
rest, then goes on."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, cmd, datasets, one_line_error
from tests.cli.test_run import make, wait_for
from tests.cli.test_vmsend import (descendants, far, gone, kill_connections, overfill, prop, snaps_of,  # noqa: F401
                                   sshd)  # far, sshd: fixtures

RESUMABLE = REPO / "tests" / "sim" / "resumable"


@pytest.fixture
def env(env, tmp_path):
    """The environment with the resumable `zfs` first on PATH, for every command of these tests
    (kvminst, the second root, sshd's remote kvm)."""
    return dict(env, PATH=f"{RESUMABLE}:{env['PATH']}", KVM_SIM_ZFS_STATE=str(tmp_path / "zfs-state"))


def slow_link(env, on):
    """Every receive takes 256 KiB per 20 ms while on: a stream to interrupt half-way."""
    path = Path(env["KVM_SIM_ZFS_STATE"]) / "slow"
    path.parent.mkdir(exist_ok=True)
    if on:
        path.write_text("0.02")
    else:
        path.unlink(missing_ok=True)


def token(env, ds):
    res = subprocess.run(["zfs", "get", "-H", "-p", "-o", "name,property,value", "receive_resume_token", ds],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    value = res.stdout.split("\t")[2].strip()
    return None if value == "-" else value


def spool_size(env):
    sizes = [p.stat().st_size for p in Path(env["KVM_SIM_ZFS_STATE"]).glob("*.spool")]
    return max(sizes, default=0)


def interrupted(install, env, *args):
    """./vmsend ARGS over a slow link, killed (-9, never its group: its children end on their own)
    once 4 MiB have reached DEST. (Killing zfs-fuse's `zfs send` would not do: the daemon writes
    the stream and goes on.)"""
    slow_link(env, True)
    proc = subprocess.Popen(["./vmsend", *args], cwd=install, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: spool_size(env) > 4 << 20, seconds=60, what="4 MiB on DEST")
    kids = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: all(gone(k) for k in kids), seconds=60, what="vmsend's children ending")
    slow_link(env, False)


def test_an_interrupted_full_send_is_resumed(install, env, far):
    root, fpool = far
    d = make(install, env)
    payload = os.urandom(40 << 20)
    (d / "data").write_bytes(payload)
    src, dst = f"{install.parent.name}/kvm/vm/web", f"{fpool}/kvm/vm/web"
    interrupted(install, env, "web", "--local", str(root), "--copy")
    # DEST: the half-received new dataset, unmounted, its token; the source keeps the snapshot
    assert dst in datasets(fpool) and token(env, dst) and prop(dst, "mounted") == "no"
    assert snaps_of(dst) == [] and not (root / "vm/web/data").exists()
    sent = snaps_of(src)
    assert len(sent) == 1 and sent[0].startswith("vmsend-")
    res = cmd(install, env, "vmsend", "web", "--local", root, "--copy", timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"web: resuming the interrupted send of {sent[0]}" in res.stderr
    assert (root / "vm/web/data").read_bytes() == payload
    assert token(env, dst) is None and prop(dst, "kvm:source") == prop(src, "guid")
    assert snaps_of(dst) == snaps_of(src) and len(snaps_of(src)) == 1  # pruned to the newest common one
    assert cmd(root, env, "start", "-n", "web").returncode == 0


def test_kill_9_of_vmsend_mid_increment_then_the_increment_resumes(install, env, far):
    root, fpool = far
    d = make(install, env)
    (d / "data").write_bytes(b"first copy")
    assert cmd(install, env, "vmsend", "web", "--local", root, "--copy", timeout=120).returncode == 0
    dst = f"{fpool}/kvm/vm/web"
    payload = os.urandom(30 << 20)
    (d / "data").write_bytes(payload)
    interrupted(install, env, "web", "--local", str(root), "--copy")
    # DEST is the first copy still, mounted and whole; the increment waits, hidden, to be resumed
    assert (root / "vm/web/data").read_bytes() == b"first copy" and prop(dst, "mounted") == "yes"
    assert token(env, dst)
    res = cmd(install, env, "vmsend", "web", "--local", root, "--copy", timeout=120)
    assert res.returncode == 0, res.stderr
    assert "resuming the interrupted send" in res.stderr
    assert (root / "vm/web/data").read_bytes() == payload and token(env, dst) is None


def test_a_partial_increment_whose_snapshot_is_gone_is_dropped_for_a_fresh_one(install, env, far):
    root, fpool = far
    d = make(install, env)
    (d / "data").write_bytes(b"first copy")
    assert cmd(install, env, "vmsend", "web", "--local", root, "--copy", timeout=120).returncode == 0
    src, dst = f"{install.parent.name}/kvm/vm/web", f"{fpool}/kvm/vm/web"
    payload = os.urandom(30 << 20)
    (d / "data").write_bytes(payload)
    interrupted(install, env, "web", "--local", str(root), "--copy")
    assert token(env, dst)
    newest = snaps_of(src)[-1]
    subprocess.run(["zfs", "destroy", f"{src}@{newest}"], check=True)  # what the token names, gone here
    res = cmd(install, env, "vmsend", "web", "--local", root, "--copy", timeout=120)
    assert res.returncode == 0, res.stderr
    assert "resuming" not in res.stderr
    assert (root / "vm/web/data").read_bytes() == payload and token(env, dst) is None


def test_a_full_dest_drops_the_partial_receive(install, env, far):
    """Out of space is no interruption: the partial receive would only hold the space."""
    root, fpool = far
    d = make(install, env)
    overfill(d)
    before = datasets(fpool)
    res = cmd(install, env, "vmsend", "web", "--local", root, "--copy", timeout=120)
    errors = [x for x in res.stderr.splitlines() if x.startswith("vmsend:")]
    assert res.returncode == 1 and len(errors) == 1, res.stderr
    assert "out of space" in errors[0] and "sends again in full" in errors[0]
    assert datasets(fpool) == before and list(Path(env["KVM_SIM_ZFS_STATE"]).glob("*.json")) == []
    assert snaps_of(f"{install.parent.name}/kvm/vm/web") == []


def test_the_resumable_zfs_is_strict(install, env, far):
    """The stand-in refuses what OpenZFS refuses, so a lenient one proves nothing."""
    root, fpool = far
    make(install, env)
    ds = f"{fpool}/kvm/vm"
    one_line_error(subprocess.run(["zfs", "receive", "-A", ds], env=env, capture_output=True, text=True),
                   "does not have any resumable receive state to abort")
    usage = subprocess.run(["zfs", "receive"], env=env, capture_output=True, text=True)
    assert "receive [-vnsFu]" in usage.stderr and usage.returncode == 2
    bad = subprocess.run(["zfs", "receive", "-s", f"{ds}/x"], env=env, input=b"not a stream" * 100,
                         capture_output=True)
    assert bad.returncode == 1 and b"invalid stream" in bad.stderr
    one_line_error(subprocess.run(["zfs", "send", "-t", "1-garbage"], env=env, capture_output=True, text=True),
                   "resume token is corrupt")


def test_over_ssh_a_connection_lost_mid_send_is_resumed(install, far, sshd):
    """The connection dies while the stream flows: vmsend cannot hear whether DEST kept what
    came, so it keeps its snapshot and says both outcomes; DEST kept it, and the next run resumes."""
    root, fpool = far
    e, wrapper, sshd_pid = sshd
    d = make(install, e)
    payload = os.urandom(40 << 20)
    (d / "data").write_bytes(payload)
    src, dst = f"{install.parent.name}/kvm/vm/web", f"{fpool}/kvm/vm/web"
    slow_link(e, True)
    proc = subprocess.Popen(["./vmsend", "web", f"root@127.0.0.1:{root}", "--copy", "--remote-kvm", wrapper],
                            cwd=install, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: spool_size(e) > 4 << 20, seconds=60, what="4 MiB on DEST")
    kill_connections(sshd_pid)
    out, err = proc.communicate(timeout=120)
    slow_link(e, False)
    errors = [x for x in err.splitlines() if x.startswith("vmsend:")]  # the rest is progress
    assert proc.returncode == 1 and len(errors) == 1, err
    assert errors[0].startswith("vmsend: web: ssh to root@127.0.0.1")
    assert errors[0].endswith("(run vmsend again: it resumes where this one stopped if DEST kept what came, "
                              "else it sends again in full)")
    wait_for(lambda: dst in datasets(fpool) and token(e, dst), seconds=30, what="DEST's partial receive")
    assert len(snaps_of(src)) == 1  # kept: only it can resume DEST's partial receive
    res = cmd(install, e, "vmsend", "web", f"root@127.0.0.1:{root}", "--copy", "--remote-kvm", wrapper,
              timeout=120)
    assert res.returncode == 0, res.stderr
    assert "resuming the interrupted send" in res.stderr
    assert (root / "vm/web/data").read_bytes() == payload and token(e, dst) is None
