"""Locks in the run dir: the per-VM lock the supervisor holds for a VM's life (and every
command that changes a VM's data or definition holds while it works), and host-wide locks.

Name spaces: a VM's files are in a folder of its own, RUN_DIR/ROOT_ID/NAME/ (lock, conf.lock,
state, stop: see runfiles.py, whose RunFiles say where a VM's are); host-wide files live in
`RUN_DIR/host/` (a root's id always ends in _ and 8 hex digits, so no root is called `host`).

Safety, since root opens these files in a folder others might reach:
- the run dir and its folders are made 0755 and must be real folders (not links) owned by
  root and not writable by group or others when we are root; one that is not is refused;
- lock files are opened with O_NOFOLLOW and must be regular files of ours, created 0644
  whatever the umask; the holder's text is written through the locked descriptor only;
- after taking the flock, the path must still name the file we locked: a lock file
  removed (or the run dir deleted) under a waiter is detected, and `Lock.lost()` lets a
  long-lived holder (the supervisor) notice that its lock is gone.
"""

import errno
import fcntl
import os
import stat
import time
from pathlib import Path

from kvm import host
from kvm.errors import PermissionDenied, Refused
from kvm.host import paths

HOST_DIR = "host"          # host-wide files: RUN_DIR/host/... (runfiles.HOST_DIR)
TRY_INTERVAL = 0.05        # seconds between lock attempts
TRIES = 20                 # x 50 ms: a status probe may hold the lock for an instant
DIR_MODE = 0o755
FILE_MODE = 0o644


def run_dir(create=True):
    """The run dir, made safely (0755, root's) when missing; PermissionDenied when unsafe."""
    path = paths.current().run_dir
    if create:
        _make_safe_dir(path)
    return path


def host_dir():
    """RUN_DIR/host, for host-wide files (the VNC port lock)."""
    path = run_dir() / HOST_DIR
    _make_safe_dir(path)
    return path


def make_safe_dirs(*folders):
    """Each folder made safely (0755, root's) when missing, and checked, in the order given
    (RUN_DIR first, then what lies in it)."""
    for path in folders:
        _make_safe_dir(path)


def _make_safe_dir(path):
    try:
        os.mkdir(path, DIR_MODE)
        os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
    except FileExistsError:
        pass
    except FileNotFoundError:
        _make_safe_dir(Path(path).parent)
        return _make_safe_dir(path)
    except OSError as exc:
        raise PermissionDenied(f"cannot make the run folder {path}: {exc.strerror}") from None
    check_safe_dir(path)


def lstat_folder(path, label, refusal):
    """lstat of a folder root is about to trust; PermissionDenied when missing, a link or no folder."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise PermissionDenied(f"{label}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionDenied(f"{label} is not a folder (a link?): {refusal}")
    return st


def check_safe_dir(path):
    """Refuse a run dir that is a link, not a folder, or (when we are root) changeable by others."""
    st = lstat_folder(path, f"run dir {path}", "refusing to use it")
    if os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        raise PermissionDenied(f"run dir {path} is not owned by root or is writable by others "
                               f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}): refusing to use it "
                               f"(chown root {path}; chmod 755 {path})")


def open_file(path, flags, mode=FILE_MODE):
    """Open a run-dir file without following links; it must be a regular file (and ours when root)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PermissionDenied(f"{path} is not a regular file: refusing to use it")
        if os.geteuid() == 0 and flags & (os.O_WRONLY | os.O_RDWR):
            if st.st_uid != 0:
                raise PermissionDenied(f"{path} is not owned by root (uid {st.st_uid}): refusing to use it")
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_lock(path):
    try:
        return open_file(path, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionDenied(f"{path} is a symbolic link: refusing to use it") from None
        raise PermissionDenied(f"cannot open {path}: {exc.strerror}") from None


def _same_file(path, fd):
    try:
        a, b = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class Lock:
    """An exclusive flock on a run-dir file, with the holder's text in it."""

    def __init__(self, path, fd):
        self.path, self.fd = Path(path), fd

    def lost(self):
        """True when the path no longer names the file we hold (removed, run dir deleted)."""
        return not _same_file(self.path, self.fd)

    def write(self, text):
        """Replace the holder text (through our own descriptor, never through a link)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)

    def release(self):
        """Drop the lock."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def try_acquire(path, text, tries=TRIES):
    """The lock on `path` with `text` written in it, or None when someone else holds it."""
    for attempt in range(max(1, tries)):
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if attempt < tries - 1:
                time.sleep(TRY_INTERVAL)
            continue
        if not _same_file(path, fd):
            os.close(fd)  # removed while we waited: the lock that counts is a new file
            continue
        lock = Lock(path, fd)
        lock.write(text)
        return lock
    return None


def adopt(path, fd, text):
    """The lock on `path` held through the inherited descriptor fd (a parent took it and passed
    it on); None when fd is not that file or not locked by its open file."""
    try:
        if not _same_file(path, fd):
            return None
        # the flock belongs to the open file: taking it again through it cannot block, and when
        # nobody held it the lock is ours now, which is as good
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return None
    os.set_inheritable(fd, False)
    lock = Lock(path, fd)
    lock.write(text)
    return lock


def acquire_blocking(path, text):
    """Wait for the lock on `path` (host-wide locks held for an instant)."""
    while True:
        fd = _open_lock(path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(path, fd):
            lock = Lock(path, fd)
            lock.write(text)
            return lock
        os.close(fd)


def acquire_waiting(path, text, seconds):
    """The lock on `path` with `text` in it, waited for at most `seconds`; None when another
    holder kept it all that time (the caller names that holder)."""
    deadline = time.monotonic() + seconds
    while True:
        got = try_acquire(path, text, tries=1)
        if got is not None or time.monotonic() >= deadline:
            return got
        time.sleep(min(TRY_INTERVAL, max(0.0, deadline - time.monotonic())))


def holder(path):
    """None when nobody holds the lock on `path`; else (pid, what) from its text (pid 0 while the
    holder is still writing it). Never creates the file; needs no root."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            words = os.pread(fd, 128, 0).decode(errors="replace").split(None, 1)
            pid = int(words[0]) if words and words[0].isdigit() else 0
            return pid, (words[1].strip() if len(words) > 1 else "")
        return None
    finally:
        os.close(fd)


def describe_holder(found):
    """'supervisor pid N' or 'pid N (snap rollback)' for an error message."""
    pid, what = found
    return f"pid {pid or '?'} ({what})" if what else f"supervisor pid {pid or '?'}"


def hold_vm(run, what):
    """The VM's lock for a command that changes the VM (`what` names it: 'snap rollback'...);
    `run` says where the VM's run files are (runfiles.RunFiles: its name, its lock's path).

    StateError when a supervisor runs the VM or another command holds it. Use as a context
    manager: `with lock.hold_vm(vm.run, "vmrename"): ...`.
    """
    path = run.lock
    if host.dry_run():
        # A dry run changes nothing, so it takes no lock and makes no lock file; it refuses what
        # the real run would, but a supervisor whose stop it planned (-f) would be gone by then.
        found = holder(path)
        if found and (found[1] or str(path) not in _stop_planned):
            _refuse(run.name, path, found)
        return NotTaken()
    run.make_folder()
    got = try_acquire(path, f"{os.getpid()} {what}\n")
    if got is None:
        _refuse(run.name, path, holder(path) or (0, ""))
    return got


def _refuse(name, path, found):
    if not found[1]:
        raise Refused(f"is running ({describe_holder(found)} holds {path}): stop it first", vm=name,
                      hint=f"stop {name}")
    raise Refused(f"is busy: {describe_holder(found)} holds {path}; try again when it is done", vm=name,
                  hint="try again when it is done")


_stop_planned = set()   # the lock paths of the VMs a dry run planned to stop


def plan_stopped(run):
    """A dry run planned the stop of this VM: its supervisor's lock would be released."""
    _stop_planned.add(str(run.lock))


class NotTaken:
    """The lock a dry run holds: none."""

    def release(self):
        """Nothing to drop."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


CONF_TRIES = 200           # x 50 ms: an edit of set.conf holds the config lock for milliseconds


def hold_config(run, what):
    """The VM's short config lock (run.conf_lock), held while set.conf is read-modified-written
    (insert, eject, every edit) and while the supervisor reads it before a launch, so that edits
    never interleave with each other or with that read. Unlike hold_vm it does not mean
    "running": a running VM's set.conf may be edited. Waits up to 10 s, then StateError naming
    the holder."""
    run.make_folder()
    path = run.conf_lock
    got = try_acquire(path, f"{os.getpid()} {what}\n", tries=CONF_TRIES)
    if got is None:
        found = holder(path) or (0, "")
        raise Refused(f"set.conf is being changed: {describe_holder(found)} holds {path}; try again",
                      vm=run.name)
    return got
