"""Files, the other half of the door to the OS (kvm/host/__init__.py hands these on): atomic writes (temp
file, fsync, rename, fsync of the folder), copies, sparse files; dry-run prints them instead."""

import errno
import os
import shlex
import stat
from pathlib import Path

from kvm.errors import KvmError, NotFound
from kvm.host.mode import _debug, _plan, dry_run


class WriteFailed(KvmError):
    """A file could not be written (read-only dataset, full pool, permissions)."""


def read_text(path):
    """A file's text as written, whatever its bytes: UTF-8, with any other byte (a Latin-1 comment)
    kept as a surrogate escape, so that write_file writes it back byte for byte."""
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", errors="surrogateescape")


class ReadRefused(KvmError):
    """A file a user named is no file kvm reads: not a regular file, too large, unreadable."""


def size_text(limit):
    """1 MiB, 64 KiB, 300 bytes: a limit as errors name it."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if limit >= 1 << shift and limit % (1 << shift) == 0:
            return f"{limit >> shift} {unit}"
    return f"{limit} bytes"


def read_bounded(path, limit, what, *, follow=True, check=None):
    """The bytes of a file a user named (a key, user-data, an imported conf): a regular file of at
    most `limit` bytes, read from one descriptor (a device, FIFO or folder is refused before a
    byte is read, and a file growing meanwhile never past the limit). follow=False refuses a
    symbolic link; check(path, fstat) runs on the opened file (an owner check). Errors are one
    line naming `what` and the path: NotFound, or ReadRefused."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFound(f"{what} '{path}' does not exist") from None
    except OSError as exc:
        why = "is a symbolic link: refusing it" if exc.errno == errno.ELOOP and not follow else \
            f"cannot be read: {exc.strerror}"
        raise ReadRefused(f"{what} '{path}' {why}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ReadRefused(f"{what} '{path}' is not a regular file ({file_kind(st.st_mode)})")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > limit:
            raise ReadRefused(f"{what} '{path}' is larger than {size_text(limit)}: not a file kvm reads")
        if check is not None:
            check(path, st)
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise ReadRefused(f"{what} '{path}' cannot be read: {exc.strerror}") from None
    if len(data) > limit:
        raise ReadRefused(f"{what} '{path}' is larger than {size_text(limit)}: not a file kvm reads")
    return data


def file_kind(mode):
    """What a file that is not a regular one is, for errors."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISBLK, "a block device"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "special"


def tighten_folder(path, mode):
    """tighten_mode for a folder (never through a link); True when it changed."""
    st = os.lstat(path)
    new = stat.S_IMODE(st.st_mode) & mode
    if not stat.S_ISDIR(st.st_mode) or new == stat.S_IMODE(st.st_mode):
        return False
    if dry_run():
        _plan(shlex.join(["chmod", f"{new:o}", str(path)]))
        return True
    _debug("chmod %o %s", new, path)
    os.chmod(path, new)
    return True


def tighten_mode(path, mode):
    """chmod the file down to at most `mode` (bits it has beyond `mode` are dropped, never added);
    True when it changed. A dry run prints the chmod."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    new = stat.S_IMODE(st.st_mode) & mode
    if new == stat.S_IMODE(st.st_mode):
        return False
    if dry_run():
        _plan(shlex.join(["chmod", f"{new:o}", str(path)]))
        return True
    _debug("chmod %o %s", new, path)
    try:
        os.chmod(path, new, follow_symlinks=False)
    except NotImplementedError:  # Linux cannot chmod without following: the lstat said it is no link
        os.chmod(path, new)
    except OSError as exc:
        raise WriteFailed(f"cannot chmod {path}: {exc.strerror or exc}") from None
    return True


def write_file(path, text, mode=0o644, *, backup=None):
    """Write a file atomically: temp file in the same folder, fsync, rename.

    Text is written as UTF-8, bytes read_text kept as surrogate escapes going back as they were.

    With `backup`, the old content is first copied to that path (also atomically).
    A failure leaves the old file as it was and raises WriteFailed.
    """
    try:
        _write_file(Path(path), text, mode, backup)
    except OSError as exc:
        raise WriteFailed(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_file(path, text, mode, backup):
    # bytes too (seed.iso); a str's surrogate escapes are the bytes read_text found (not UTF-8)
    data = text.encode("utf-8", errors="surrogateescape") if isinstance(text, str) else text
    if dry_run():
        if backup is not None and path.exists():
            _plan(shlex.join(["cp", "-p", str(path), str(backup)]))
        _plan(f"would write {shlex.quote(str(path))} ({len(data)} bytes, mode {mode:o})")
        return
    if backup is not None and path.exists():
        _atomic_write(Path(backup), path.read_bytes(), path.stat().st_mode & 0o7777)
    _atomic_write(path, data, mode)
    _debug("wrote %s", path)


def _atomic_write(path, data, mode):
    """Temp file in the same folder, fsync, chmod, rename, fsync the folder."""
    import tempfile
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder):
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(dfd)


def copy_file(src, dst, mode=None):
    """Copy a file (atomically at the destination); WriteFailed on failure."""
    try:
        _copy_file(Path(src), Path(dst), mode)
    except OSError as exc:
        raise WriteFailed(f"cannot copy {src} to {dst}: {exc.strerror or exc}") from None


def _copy_file(src, dst, mode):
    if dry_run():
        _plan(shlex.join(["cp", str(src), str(dst)]))
        return
    _atomic_write(dst, src.read_bytes(), mode if mode is not None else src.stat().st_mode & 0o777)


def remove_file(path, *, missing_ok=True):
    """Remove a file (printed only in dry-run)."""
    if dry_run():
        _plan(shlex.join(["rm", "-f", str(path)]))
        return
    _debug("rm %s", path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def write_control(path, text):
    """Write a kernel control file in place (a cgroup's cpu.max, cgroup.procs...: no temp file, no
    rename, which such files take no part in); WriteFailed naming the file and why."""
    if dry_run():
        _plan(f"echo {shlex.quote(text)} > {shlex.quote(str(path))}")
        return
    _debug("echo %s > %s", text, path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise WriteFailed(f"cannot write {text!r} to {path}: {exc.strerror or exc}") from None


def remove_folder(path):
    """rmdir (an empty folder: a cgroup); False when it was not there."""
    if dry_run():
        _plan(shlex.join(["rmdir", str(path)]))
        return True
    _debug("rmdir %s", path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return False
    return True


def make_dirs(path, mode=0o755):
    """mkdir -p (printed only in dry-run)."""
    if dry_run():
        if not Path(path).is_dir():
            _plan(shlex.join(["mkdir", "-p", str(path)]))
        return
    os.makedirs(path, mode=mode, exist_ok=True)


def make_sparse(path, size_bytes):
    """Create a sparse file of the given size (truncate -s), refusing to overwrite."""
    if dry_run():
        _plan(shlex.join(["truncate", "-s", str(size_bytes), str(path)]))
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size_bytes)
        finally:
            os.close(fd)
    except OSError as exc:
        raise WriteFailed(f"cannot create {path}: {exc.strerror or exc}") from None


def make_thick(path, size_bytes, chunk=1 << 20):
    """Create a file of the given size with every block written (zeros), refusing to overwrite;
    a failure (a full pool) removes it. On a compressing filesystem zeros still take no room."""
    if dry_run():
        _plan(shlex.join(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={-(-size_bytes // chunk)}"]))
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise WriteFailed(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        zeros, left = bytes(chunk), size_bytes
        while left > 0:
            left -= os.write(fd, zeros[:min(chunk, left)])
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise WriteFailed(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)


def grow_file(path, size_bytes):
    """Make a file larger, sparsely (never smaller: a shorter size is left alone)."""
    if dry_run():
        _plan(shlex.join(["truncate", "-s", str(size_bytes), str(path)]))
        return
    if os.path.getsize(path) < size_bytes:
        os.truncate(path, size_bytes)
