"""The pools the tests, the demo and the benchmarks make, and only those: each is recorded before
it is created, in a file of its own under /var/tmp/kvm-test-pools (KVM_TEST_POOL_RECORDS to
choose): `PID IMAGE`, the process that made it and its backing file. Nothing in tests/ or bench/
destroys a pool without its record there; tests/setup.sh destroys a recorded pool left FAULTED or
without its file by a run that is over (tests/testpools.sh), never any other.

The folder is root's and writable by root only: a folder others could write (or a link) is
refused, since its names say which pools may be destroyed.
"""

import os
import stat
import subprocess
from pathlib import Path

DEFAULT = "/var/tmp/kvm-test-pools"


def records():
    """The record folder, made root's 0700 when missing; RuntimeError when it is not safe."""
    path = Path(os.environ.get("KVM_TEST_POOL_RECORDS") or DEFAULT)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise RuntimeError(f"{path} is not a folder of ours writable by us only (a link? another user's?): "
                           f"refusing to record test pools there")
    return path


def record(name, img):
    """Record pool `name` (backing file `img`) as made by this process, before it is created."""
    (records() / name).write_text(f"{os.getpid()} {img}\n")


def forget(name):
    """The pool is gone: drop its record."""
    (records() / name).unlink(missing_ok=True)


def recorded(name):
    """True when `name` is a pool the test tooling made (it has its record)."""
    return (records() / name).is_file()


def create(name, img, size):
    """A file-backed pool `name` on `img` of `size` bytes, recorded first."""
    record(name, img)
    with open(img, "wb") as fh:
        fh.truncate(size)
    subprocess.run(["zpool", "create", "-f", name, str(img)], check=True, capture_output=True)


def maker(name):
    """The pid that recorded pool `name` (0 when unknown)."""
    try:
        words = (records() / name).read_text().split()
    except OSError:
        return 0
    return int(words[0]) if words and words[0].isdigit() else 0


def destroy(name, img=None):
    """zpool destroy -f of a pool this process recorded, or one whose maker is gone (never of
    another, nor of a run that goes on); True when it is gone. The backing file and the record go
    with the pool only."""
    if not recorded(name):
        raise RuntimeError(f"pool {name} was not made by the test tooling (no record in {records()}): "
                           f"not destroying it")
    pid = maker(name)
    if pid and pid != os.getpid() and _alive(pid):
        raise RuntimeError(f"pool {name} belongs to a test run that goes on (pid {pid}): not destroying it")
    if subprocess.run(["zpool", "destroy", "-f", name], capture_output=True).returncode != 0:
        return False
    if img is not None:
        Path(img).unlink(missing_ok=True)
    forget(name)
    return True


def _alive(pid):
    """True when process `pid` runs (a thread id, which kill(2) also answers for, is no maker)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1]) == pid
    except (OSError, ValueError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
