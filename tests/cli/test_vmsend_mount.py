"""A failed increment of `vmsend --local` leaves DEST mounted (issue 19.11), whichever step failed:
the receive (which unmounted DEST first, as zfs-fuse's `receive -F` does), the mount after it
("busy" for a moment: tried again), or a mount that stays busy (the one line says what to run).
A `zfs` stand-in first on PATH plays those faults over the real zfs."""

import subprocess
import sys

import pytest

from tests.cli.test_run import make
from tests.cli.test_vmsend import far, send  # noqa: F401 - the DEST root fixture
from tests.conftest import one_line_error

STANDIN = r'''#!/usr/bin/env python3
"""zfs with faults: FAULTS/NAME holds how many more times fault NAME happens (-1: always)."""
import os, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
real = next(os.path.join(d, "zfs") for d in os.environ["PATH"].split(":")
            if d and os.path.abspath(d) != here and os.access(os.path.join(d, "zfs"), os.X_OK))
args = sys.argv[1:]

def fault(name):
    path = os.path.join(os.environ["KVM_TEST_ZFS_FAULTS"], name)
    try:
        left = int(open(path).read())
    except OSError:
        return False
    if left > 0:
        open(path, "w").write(str(left - 1))
    return left != 0

if args[:1] == ["mount"] and fault("mount-busy"):
    sys.exit(print(f"cannot mount '{args[-1]}': mountpoint or dataset is busy", file=sys.stderr) or 1)
if args[:1] == ["receive"] and "-F" in args and fault("receive-fails"):
    subprocess.run([real, "unmount", args[-1]])   # DEST unmounted for the receive, then it fails
    sys.stdin.buffer.read()
    sys.exit(print("cannot receive incremental stream: dataset is busy", file=sys.stderr) or 1)
os.execv(real, [real] + args)
'''


@pytest.fixture
def faults(env, tmp_path):
    """The environment's zfs is the stand-in; returns fault(name, times)."""
    bindir, state = tmp_path / "zfsbin", tmp_path / "faults"
    bindir.mkdir()
    state.mkdir()
    (bindir / "zfs").write_text(STANDIN.replace("/usr/bin/env python3", sys.executable, 1))
    (bindir / "zfs").chmod(0o755)
    env["PATH"] = f"{bindir}:{env['PATH']}"
    env["KVM_TEST_ZFS_FAULTS"] = str(state)
    return lambda name, times: (state / name).write_text(str(times))


def mounted(ds):
    return subprocess.run(["zfs", "get", "-H", "-o", "value", "mounted", ds], capture_output=True,
                          text=True).stdout.strip() == "yes"


def first_copy(install, env, far):  # noqa: F811
    root, fpool = far
    d = make(install, env)
    (d / "data").write_bytes(b"one" * 1000)
    res = send(install, env, "web", "--local", root, "--copy")
    assert res.returncode == 0, res.stderr
    (d / "data").write_bytes(b"two" * 1000)
    return root, f"{fpool}/kvm/vm/web"


def test_a_receive_that_fails_after_unmounting_dest_leaves_it_mounted(install, env, far, faults):  # noqa: F811
    root, ds = first_copy(install, env, far)
    faults("receive-fails", 1)
    faults("mount-busy", 2)      # and DEST is busy for a moment after
    one_line_error(send(install, env, "web", "--local", root, "--copy"), "receive failed", "DEST is unchanged")
    assert mounted(ds) and (root / "vm/web/data").read_bytes() == b"one" * 1000
    res = send(install, env, "web", "--local", root, "--copy")
    assert res.returncode == 0, res.stderr
    assert mounted(ds) and (root / "vm/web/data").read_bytes() == b"two" * 1000


def test_a_mount_busy_for_a_moment_after_the_increment_is_tried_again(install, env, far, faults):  # noqa: F811
    root, ds = first_copy(install, env, far)
    faults("mount-busy", 2)
    res = send(install, env, "web", "--local", root, "--copy")
    assert res.returncode == 0, res.stderr
    assert mounted(ds) and (root / "vm/web/data").read_bytes() == b"two" * 1000


def test_a_dest_that_stays_busy_is_named_with_the_command_to_run(install, env, far, faults):  # noqa: F811
    root, ds = first_copy(install, env, far)
    faults("receive-fails", 1)
    faults("mount-busy", -1)
    one_line_error(send(install, env, "web", "--local", root, "--copy"), "receive failed",
                   f"DEST's {ds} is left unmounted", f"run `zfs mount {ds}` there")
    assert not mounted(ds)
    faults("mount-busy", 0)
    subprocess.run(["zfs", "mount", ds], check=True)
    assert (root / "vm/web/data").read_bytes() == b"one" * 1000
