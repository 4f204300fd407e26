"""vmexport / vmrestore on the real ZFS pool: a VM into one file and back (under another name, over
stdin, incrementally onto its base), every refusal before anything is received (a corrupted or
truncated file, the wrong base, an existing VM, a file in the VM's own dataset), and kill -9 of
vmrestore cleaned up by the next run, which says so."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.cli.test_run import guest_up, script, wait_for
from tests.conftest import cmd, create_vm, datasets, one_line_error

MIB = 1 << 20


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def write_disk(path, mark, at=0, size=MIB):
    """Data the 'guest' wrote: `size` bytes of a pattern naming `mark`, at offset `at`."""
    block = (mark.encode() * (size // len(mark) + 1))[:size]
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(block)


@pytest.fixture
def web(install, env):
    d = create_vm(install, env, "web", "--disk-size", "32M")
    write_disk(d / "disk", "first-")
    return d


def export(install, env, *args):
    res = cmd(install, env, "vmexport", *args)
    assert res.returncode == 0, res.stderr
    return res


def test_a_vm_exported_and_restored_under_another_name_holds_the_same_disk(install, env, web, tmp_path, pool):
    out = tmp_path / "web.kvmexport"
    res = export(install, env, "web", out)
    assert "exporting from a new snapshot vmexport-" in res.stderr and f"to {out}" in res.stderr
    # the documented container: magic line, one line of JSON manifest, ... , fixed-width end tag
    with open(out, "rb") as fh:
        assert fh.readline() == b"KVMEXPORT 1\n"
        info = json.loads(fh.readline())
        fh.seek(-35, os.SEEK_END)
        assert fh.read(14) == b"KVMEXPORT-END "
    assert info["name"] == "web" and 'VMrom=' in info["set.conf"] and info["snapshot"].startswith("vmexport-")
    assert [s["dataset"] for s in info["streams"]] == [""] and info["compress"] == "none"
    assert info["snapshot"] in info["snapshots"]          # kept on the VM, as a later increment's base
    res = cmd(install, env, "vmrestore", out, "copy")
    assert res.returncode == 0 and res.stdout == f"copy: restored snapshot {info['snapshot']} of web\n", res.stderr
    assert sha(install / "vm" / "copy" / "disk") == sha(web / "disk")
    assert cmd(install, env, "vminfo", "copy").returncode == 0
    assert not [d for d in datasets(pool) if "vmrestore-" in d]     # no staging left
    # restored from stdin (spooled into the root's pool first, removed after)
    with open(out, "rb") as fh:
        res = subprocess.run(["./vmrestore", "-", "copy2"], stdin=fh, env=env, cwd=install, capture_output=True,
                             text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert sha(install / "vm" / "copy2" / "disk") == sha(web / "disk")
    assert not list(install.glob(".vmrestore-*"))


def test_an_incremental_export_restored_on_its_base_equals_the_source(install, env, web, tmp_path):
    full, inc = tmp_path / "full", tmp_path / "inc"
    write_disk(web / "disk", "base-", at=8 * MIB, size=6 * MIB)
    assert cmd(install, env, "snap", "create", "web", "s1").returncode == 0
    export(install, env, "web", full, "--snapshot", "s1")
    write_disk(web / "disk", "second-", at=4 * MIB, size=MIB)
    res = export(install, env, "web", inc, "--incremental-from", "s1")
    assert os.path.getsize(inc) < os.path.getsize(full)
    assert cmd(install, env, "vmrestore", full, "copy").returncode == 0
    res = cmd(install, env, "vmrestore", inc, "copy")
    assert res.returncode == 0 and res.stdout.startswith("copy: restored increment s1..vmexport-"), res.stderr
    assert sha(install / "vm" / "copy" / "disk") == sha(web / "disk")
    # the same increment again, or onto a VM without that base, or onto another s1: refused, unchanged
    before = sha(install / "vm" / "copy" / "disk")
    one_line_error(cmd(install, env, "vmrestore", inc, "copy"), "vmrestore: copy:", "is applied")
    create_vm(install, env, "other", "--disk-size", "32M")
    one_line_error(cmd(install, env, "vmrestore", inc, "other"), "has no snapshot s1, the base of this increment")
    assert cmd(install, env, "snap", "create", "other", "s1").returncode == 0
    one_line_error(cmd(install, env, "vmrestore", inc, "other"), "is another snapshot than the base", "wrong base")
    one_line_error(cmd(install, env, "vmrestore", inc, "nosuch"), "no VM to apply the increment on s1", status=6)
    assert sha(install / "vm" / "copy" / "disk") == before


def test_a_corrupted_or_truncated_file_is_refused_before_anything_is_received(install, env, web, tmp_path, pool):
    out = tmp_path / "web.x"
    export(install, env, "web", out)
    data = bytearray(out.read_bytes())
    before = datasets(pool)
    bad = tmp_path / "bad"
    bad.write_bytes(data[:len(data) // 2])
    one_line_error(cmd(install, env, "vmrestore", bad, "copy"), "vmrestore:", "truncated")
    mid = data.index(b"\n", len(b"KVMEXPORT 1\n")) + 1 + 20000   # inside the stream
    data[mid] ^= 0xFF
    bad.write_bytes(bytes(data))
    one_line_error(cmd(install, env, "vmrestore", bad, "copy"), "stream 1 (the VM) does not match its sha256",
                   "nothing was received")
    bad.write_bytes(b"not an export\n")
    one_line_error(cmd(install, env, "vmrestore", bad, "copy"), "is not a vmexport file")
    assert datasets(pool) == before and not (install / "vm" / "copy").exists()


def test_refusals_of_vmexport_and_an_existing_vm_without_force(install, env, web, tmp_path):
    one_line_error(cmd(install, env, "vmexport", "web", web / "self.x"), "vmexport: web: export file",
                   "lies in the VM's own dataset", status=2)
    (tmp_path / "there").write_text("x")
    one_line_error(cmd(install, env, "vmexport", "web", tmp_path / "there"), "exists: not overwritten",
                   status=7)   # 7: already exists (kvm(8) EXIT STATUS)
    assert (tmp_path / "there").read_text() == "x"
    one_line_error(cmd(install, env, "vmexport", "web", tmp_path / "x", "--incremental-from", "nosuch"),
                   "no snapshot 'nosuch'", status=6)   # 6: not found (kvm(8) EXIT STATUS)
    assert not (web / "self.x").exists() and not (tmp_path / "x").exists()
    out = tmp_path / "web.x"
    export(install, env, "web", out)
    before = sha(web / "disk")
    write_disk(web / "disk", "changed-")
    one_line_error(cmd(install, env, "vmrestore", out), "vmrestore: web: exists: not overwritten",
                   status=7)
    assert sha(web / "disk") != before
    res = cmd(install, env, "vmrestore", out, "--force")
    assert res.returncode == 0, res.stderr
    assert sha(web / "disk") == before


def test_zstd_compression_or_its_one_line_error(install, env, web, tmp_path):
    out = tmp_path / "web.zst"
    if shutil.which("zstd") is None:
        one_line_error(cmd(install, env, "vmexport", "web", out, "--compress", "zstd"), "zstd is not installed")
        return
    export(install, env, "web", out, "--compress", "zstd")
    assert os.path.getsize(out) < 8 * MIB
    assert cmd(install, env, "vmrestore", out, "z").returncode == 0
    assert sha(install / "vm" / "z" / "disk") == sha(web / "disk")
    bare = {**env, "PATH": ":".join(p for p in env["PATH"].split(":") if not os.path.exists(os.path.join(p, "zstd")))}
    one_line_error(cmd(install, bare, "vmexport", "web", tmp_path / "y", "--compress", "zstd"),
                   "vmexport: web: --compress zstd: zstd is not installed (pkg install zstd)")   # the FreeBSD platform of the suite


def test_a_running_vm_is_exported_from_a_new_snapshot_and_keeps_running(install, env, web, tmp_path):
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    res = export(install, env, "web", tmp_path / "run.x")
    assert "the VM keeps running: crash-consistent" in res.stderr
    assert guest_up(install, env)
    assert cmd(install, env, "vmrestore", tmp_path / "run.x", "copy").returncode == 0
    assert cmd(install, env, "stop", "web").returncode == 0


def held_receive_env(env, where, verbs="receive|recv"):
    """env whose `zfs receive` (or other `verbs`) runs for real, then, when it succeeded, holds (60 s) before it
    answers: a kill -9 sent meanwhile lands mid-receive whatever the machine's load (zfs-fuse
    mounts a received dataset only once its stream is in, so the test cannot see an earlier point)."""
    real = next(os.path.join(d, "zfs") for d in env["PATH"].split(":") if os.access(os.path.join(d, "zfs"), os.X_OK))
    bindir = where / "held-receive"
    bindir.mkdir()
    (bindir / "zfs").write_text(f'#!/bin/sh\ncase "$1" in\n'
                                f'{verbs}) "{real}" "$@"; rc=$?; [ $rc -ne 0 ] || sleep 60; exit $rc ;;\n'
                                f'esac\nexec "{real}" "$@"\n')
    (bindir / "zfs").chmod(0o755)
    return {**env, "PATH": f"{bindir}:{env['PATH']}"}


def _kill_mid_restore(install, env, out, name, and_watchdog, where):
    proc = subprocess.Popen(["./vmrestore", str(out), name], env=held_receive_env(env, where), cwd=install,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    staging = f"vmrestore-{proc.pid}"
    end = time.time() + 30
    while time.time() < end and not os.path.isdir(install / staging / name):
        time.sleep(0.02)
    assert os.path.isdir(install / staging), "vmrestore never reached its receive"
    watchdogs = []
    if and_watchdog:   # the staging dataset's watchdog: vmrestore's forked child, named kvm-txn
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    stat = open(f"/proc/{p}/stat").read()
                except OSError:
                    continue
                comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
                if comm == "kvm-txn" and int(rest[1]) == proc.pid:
                    watchdogs.append(int(p))
        for pid in watchdogs:
            os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return staging, watchdogs


@pytest.mark.parametrize("and_watchdog", [False, True], ids=["watchdog-cleans", "next-run-cleans"])
def test_kill_9_during_vmrestore_leaves_nothing_the_next_run_does_not_clean(install, env, web, tmp_path, pool,
                                                                           and_watchdog):
    with open(web / "disk", "r+b") as fh:   # enough data for the receive to take a moment
        fh.write(os.urandom(24 * MIB))
    out = tmp_path / "big.x"
    export(install, env, "web", out)
    staging, watchdogs = _kill_mid_restore(install, env, out, "copy", and_watchdog, tmp_path)
    assert bool(watchdogs) == and_watchdog
    if not and_watchdog:
        wait_for(lambda: not [d for d in datasets(pool) if staging in d], what="the watchdog's clean-up")
    res = cmd(install, env, "vmrestore", out, "copy")
    assert res.returncode == 0, res.stderr
    said = f"removed {pool}/kvm/{staging}, a half-restored VM a killed vmrestore left"
    assert (said in res.stderr) == and_watchdog, res.stderr
    assert sha(install / "vm" / "copy" / "disk") == sha(web / "disk")
    assert not [d for d in datasets(pool) if "vmrestore-" in d]


def test_a_vmrestore_killed_once_its_vm_was_in_place_is_said_so_and_the_copy_kept(install, env, web, tmp_path, pool):
    out = tmp_path / "w.x"
    export(install, env, "web", out)
    held = held_receive_env(env, tmp_path, verbs="rename")   # the move into ROOT/vm done, then held
    proc = subprocess.Popen(["./vmrestore", str(out), "copy"], env=held, cwd=install, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    wait_for(lambda: f"{pool}/kvm/vm/copy" in datasets(pool), seconds=60, what="the move into place")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    staging = f"{pool}/kvm/vmrestore-{proc.pid}"
    if staging in datasets(pool):   # the watchdog did not get there first: the next run says it
        res = cmd(install, env, "vmrestore", out, "copy")
        assert res.returncode == 7 and "copy: exists: not overwritten" in res.stderr, res.stderr
        assert (f"removed {staging}, the empty staging dataset of a vmrestore killed after its VM was in place"
                in res.stderr), res.stderr
        assert "half-restored" not in res.stderr
    # a rename zfs-fuse found busy is retried unmounted and mounted after: a kill in between
    # leaves the copy unmounted, as a boot's `zfs mount -a` finds it
    subprocess.run(["zfs", "mount", f"{pool}/kvm/vm/copy"], capture_output=True)
    assert sha(install / "vm" / "copy" / "disk") == sha(web / "disk")
    assert not [d for d in datasets(pool) if "vmrestore-" in d]


def test_snap_auto_exports_to_a_folder_keeping_the_newest_n_files(install, env, web, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    old = [backups / f"web-auto-2025010{d}-0000.kvmexport" for d in (1, 2, 3)]
    for path in old:
        path.write_text("an older backup")
    (backups / "web-notes.txt").write_text("mine")
    res = cmd(install, env, "snap", "auto", "web", "--export-to", backups, "--keep", "2")
    assert res.returncode == 0, res.stderr
    made = [p for p in backups.iterdir() if p.name.startswith("web-auto-2") and p not in old]
    assert len(made) == 1 and f"exported web@{made[0].name[4:-10]} to {made[0]}" in res.stdout
    assert sorted(p.name for p in backups.iterdir()) == sorted([old[2].name, made[0].name, "web-notes.txt"])
    assert f"removed {old[0]}" in res.stdout and f"removed {old[1]}" in res.stdout
    # the file is a whole export: it restores to the disk of the snapshot
    assert cmd(install, env, "vmrestore", made[0], "back").returncode == 0
    assert sha(install / "vm" / "back" / "disk") == sha(web / "disk")
    for args, needle in ((["--export-to", backups], "--export-to needs --keep N"),
                         (["--keep", "2"], "--keep N counts export files: give it with --export-to DIR"),
                         (["--export-to", tmp_path / "nosuch", "--keep", "1"], "no such folder")):
        one_line_error(cmd(install, env, "snap", "auto", "web", *args), needle, status=2)


def test_kill_9_during_an_incremental_vmrestore_is_rolled_back_by_the_next_run(install, env, web, tmp_path, pool):
    full, inc = tmp_path / "full", tmp_path / "inc"
    assert cmd(install, env, "snap", "create", "web", "s1").returncode == 0
    export(install, env, "web", full, "--snapshot", "s1")
    with open(web / "disk", "r+b") as fh:
        fh.write(os.urandom(64 * MIB))   # an increment that takes a moment
    export(install, env, "web", inc, "--incremental-from", "s1")
    assert cmd(install, env, "vmrestore", full, "copy").returncode == 0
    base = sha(install / "vm" / "copy" / "disk")
    proc = subprocess.Popen(["./vmrestore", str(inc), "copy"], env=held_receive_env(env, tmp_path), cwd=install,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    marked = lambda: subprocess.run(["zfs", "get", "-H", "-o", "source", "kvm:restoring", f"{pool}/kvm/vm/copy"],  # noqa
                                    capture_output=True, text=True).stdout.strip() == "local"
    wait_for(marked, what="the increment's receive")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    res = cmd(install, env, "vmrestore", inc, "copy")
    assert res.returncode == 0, res.stderr
    assert "copy: rolled back to s1, where a killed incremental vmrestore had left it half-applied" in res.stderr
    assert sha(install / "vm" / "copy" / "disk") == sha(web / "disk") != base
    assert not marked()


def identity_vm(install, env, web):
    """web with what makes a VM itself: a MAC, its default tap, UEFI vars it wrote, TPM state, a log."""
    res = cmd(install, env, "vmset", "web", "Devices=3,virtio-net,tapWEB,mac=58:9c:fc:00:00:01")
    assert res.returncode == 0, res.stderr
    (web / "UEFI_VARS.fd").write_bytes(b"web's own boot entries")
    (web / "tpm").mkdir(mode=0o700)
    (web / "tpm" / "tpm2-00.permall").write_bytes(b"web's TPM")
    (web / "web.log").write_text("web's log\n")


def test_a_restore_under_another_name_is_a_copy_with_its_own_identity(install, env, web, tmp_path):
    """The original still exists: the copy must not share its MAC, tap, UEFI vars or TPM (what
    vmclone gives a clone); the original is untouched."""
    identity_vm(install, env, web)
    out = tmp_path / "web.x"
    export(install, env, "web", out)
    mine = {p: p.read_bytes() for p in web.rglob("*") if p.is_file()}
    res = cmd(install, env, "vmrestore", out, "copy")
    assert res.returncode == 0, res.stderr
    assert "copy: a copy of web: fresh MAC addresses, UEFI vars, TPM and cloud-init instance" in res.stderr
    copy = install / "vm" / "copy"
    conf = (copy / "set.conf").read_text()
    assert conf.startswith("# VM settings for copy\n") and "3,virtio-net,tapCOPY,mac=02:" in conf, conf
    assert "58:9c:fc:00:00:01" not in conf and "tapWEB" not in conf
    assert (copy / "UEFI_VARS.fd").read_bytes() == (install / "firmware" / "BHYVE_UEFI_VARS.fd").read_bytes()
    assert list((copy / "tpm").iterdir()) == [] and not (copy / "web.log").exists()
    assert sha(copy / "disk") == sha(web / "disk")
    assert {p: p.read_bytes() for p in web.rglob("*") if p.is_file()} == mine
    assert cmd(install, env, "vminfo", "copy").returncode == 0


def test_a_restore_under_its_own_name_keeps_its_identity_byte_for_byte(install, env, web, tmp_path, pool):
    identity_vm(install, env, web)
    out = tmp_path / "web.x"
    export(install, env, "web", out)
    files = {p.relative_to(web): p.read_bytes() for p in web.rglob("*") if p.is_file()}
    assert cmd(install, env, "vmdestroy", "web", "-y").returncode == 0
    res = cmd(install, env, "vmrestore", out)
    assert res.returncode == 0 and "a copy of" not in res.stderr, res.stderr
    assert {p.relative_to(web): p.read_bytes() for p in web.rglob("*") if p.is_file()} == files
    assert subprocess.run(["zfs", "get", "-H", "-o", "source", "kvm:restored-from", f"{pool}/kvm/vm/web"],
                          capture_output=True, text=True).stdout.strip() != "local"


def test_a_copy_whose_tap_name_would_be_too_long_is_refused_before_anything_is_received(install, env, web, tmp_path,
                                                                                           pool):
    identity_vm(install, env, web)
    out = tmp_path / "web.x"
    export(install, env, "web", out)
    before = datasets(pool)
    one_line_error(cmd(install, env, "vmrestore", out, "averyverylongname"),
                   "vmrestore: averyverylongname: its tap 'tapAVERYVERYLONGNAME' is longer than 15", status=2)
    assert datasets(pool) == before


def test_a_copy_a_killed_vmrestore_left_with_the_originals_files_is_completed_by_the_next(install, env, web, tmp_path,
                                                                                          pool):
    """The state kill -9 leaves between the rename into ROOT/vm and the rewrite: the copy marked
    kvm:restored-from, its files the original's. The next vmrestore (any) rewrites them and says so."""
    identity_vm(install, env, web)
    out = tmp_path / "web.x"
    export(install, env, "web", out)
    assert cmd(install, env, "vmrestore", out, "copy").returncode == 0
    copy = install / "vm" / "copy"
    (copy / "set.conf").write_bytes((web / "set.conf").read_bytes())
    subprocess.run(["zfs", "set", f"kvm:restored-from=web {pool}/kvm/vm/web", f"{pool}/kvm/vm/copy"], check=True)
    res = cmd(install, env, "vmrestore", tmp_path / "nosuch")
    assert res.returncode == 6, res.stderr
    assert "vmrestore: copy: rewrote the files of this copy of web, which a killed vmrestore had left naming the " \
           "original's" in res.stderr
    conf = (copy / "set.conf").read_text()
    assert "tapCOPY,mac=02:" in conf and "58:9c:fc:00:00:01" not in conf
    res = cmd(install, env, "vmrestore", tmp_path / "nosuch")
    assert "rewrote" not in res.stderr and (copy / "set.conf").read_text() == conf


def test_a_marked_copy_that_cannot_be_rewritten_is_said_and_stops_no_other_restore(install, env, web, tmp_path, pool):
    identity_vm(install, env, web)
    out = tmp_path / "web.x"
    export(install, env, "web", out)
    assert cmd(install, env, "vmrestore", out, "copy").returncode == 0
    copy = install / "vm" / "copy"
    (copy / "set.conf").unlink()
    (copy / "set.conf").symlink_to(web / "set.conf")   # refused by every set.conf read
    subprocess.run(["zfs", "set", f"kvm:restored-from=web {pool}/kvm/vm/web", f"{pool}/kvm/vm/copy"], check=True)
    original = (web / "set.conf").read_bytes()
    res = cmd(install, env, "vmrestore", out, "copy2")
    assert res.returncode == 0, res.stderr
    assert "vmrestore: copy: cannot rewrite the files of this copy of web yet (" in res.stderr
    assert "tapCOPY2" in (install / "vm" / "copy2" / "set.conf").read_text()
    assert (web / "set.conf").read_bytes() == original   # the link's target untouched
