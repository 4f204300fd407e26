"""kill -9 of image import, image publish and vmclone at seeded random zfs calls (the killer `zfs`
of the snap fault rounds: it kills the command's own pid, before or after a real zfs call, never a
zfs in the middle): afterwards the result is whole or absent, with no dataset, snapshot or folder
left, and the same command run again succeeds."""

import os
import random
import subprocess
import time

import pytest

from kvm.zfs.txn import TITLE
from tests.cli.test_fault_rounds import killer
from tests.conftest import cmd, create_vm

ROUNDS = 8
pytestmark = pytest.mark.slow


def datasets(pool):
    res = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", pool], capture_output=True, text=True)
    return set(res.stdout.split())


def settle(name, seconds=30):
    """Wait for the creation watchdog of `name` (it cleans up after the killed command)."""
    end = time.time() + seconds
    while watchdogs(name):
        assert time.time() < end, f"watchdog of {name} still running"
        time.sleep(0.2)


def watchdogs(name):
    """Pids of the creation watchdogs (process name kvm-txn, forked from the command: its command
    line is the command's) of a command naming the last part of dataset `name` (or a folder of that
    name: vmimport's)."""
    last, out = name.rsplit("/", 1)[-1], []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            args = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if comm == TITLE and any(os.path.basename(a.rstrip("/")) == last for a in args):
            out.append(int(pid))
    return out


def rounds(install, env, tmp_path, pool, argv, made, seed, undo):
    """ROUNDS kills of argv; `made` is the dataset it makes; `undo` removes a finished result."""
    k = killer(tmp_path)
    rng = random.Random(seed)
    before = datasets(pool)
    for i in range(ROUNDS):
        at, when = rng.randint(1, 14), rng.choice(["before", "after"])
        (k / "n").unlink(missing_ok=True)
        e = dict(env, PATH=f"{k}:{env['PATH']}", KILL_AT=str(at), KILL_WHEN=when)
        res = cmd(install, e, *argv)
        settle(made)
        now = datasets(pool)
        if made in now:  # the kill came after the commit: whole, and unmarked
            assert res.returncode == 0 or res.returncode < 0, (i, at, when, res.stderr)
            assert subprocess.run(["zfs", "get", "-H", "-o", "source", "kvm:creating", made], capture_output=True,
                                  text=True).stdout.strip() != "local", (i, at, when)
            undo()
        else:
            assert now == before, (i, at, when, now ^ before)
        assert datasets(pool) == before, (i, at, when)
    res = cmd(install, env, *argv)
    assert res.returncode == 0, res.stderr


def test_image_import_killed_anywhere(install, env, pool, tmp_path):
    src = tmp_path / "img.raw"
    src.write_bytes(b"IMAGE\0" * 1000)  # binary: a text file is no image
    cmd(install, env, "image", "import", "seedimg", src)  # the images dataset exists from here on
    cmd(install, env, "image", "destroy", "seedimg")
    made = f"{pool}/kvm/images/deb"
    rounds(install, env, tmp_path, pool, ["image", "import", "deb", src], made, 11,
           lambda: cmd(install, env, "image", "destroy", "deb"))
    assert (install / "images" / "deb" / "disk").read_bytes() == src.read_bytes()


def test_vmclone_killed_anywhere(install, env, pool, tmp_path):
    create_vm(install, env, "web", "--disk-size", "4M")
    rounds(install, env, tmp_path, pool, ["vmclone", "web", "copy", "-y"], f"{pool}/kvm/vm/copy", 12,
           lambda: cmd(install, env, "vmdestroy", "copy", "-y") and _drop_clone_snaps(pool))
    assert (install / "vm" / "copy" / "set.conf").is_file()


def test_image_publish_killed_anywhere(install, env, pool, tmp_path):
    create_vm(install, env, "web", "--disk-size", "4M")
    src = tmp_path / "img.raw"
    src.write_bytes(b"\0x")
    cmd(install, env, "image", "import", "seedimg", src)
    cmd(install, env, "image", "destroy", "seedimg")
    rounds(install, env, tmp_path, pool, ["image", "publish", "web", "tmpl"], f"{pool}/kvm/images/tmpl", 13,
           lambda: cmd(install, env, "image", "destroy", "tmpl") and _drop_clone_snaps(pool))
    assert (install / "images" / "tmpl" / "disk").is_file()


def _drop_clone_snaps(pool):
    """The snapshot a finished clone or publish made of web (kept on success, by design)."""
    for name in datasets(pool):
        if "@clone-" in name or "@publish-" in name:
            subprocess.run(["zfs", "destroy", name], check=True, capture_output=True)
    return True
