"""Files, the other half of the door to the OS (kvm/host/__init__.py hands these on): atomic writes (temp
file, fsync, rename, fsync of the folder), copies, sparse files; dry-run prints them instead."""

import errno
import os
import shlex
from pathlib import Path

from kvm.errors import KvmError
from kvm.host.mode import _debug, _plan, dry_run


class WriteFailed(KvmError):
    """A file could not be written (read-only dataset, full pool, permissions)."""


def read_text(path):
    """A file's text as written, whatever its bytes: UTF-8, with any other byte (a Latin-1 comment)
    kept as a surrogate escape, so that write_file writes it back byte for byte."""
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", errors="surrogateescape")


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


def grow_file(path, size_bytes):
    """Make a file larger, sparsely (never smaller: a shorter size is left alone)."""
    if dry_run():
        _plan(shlex.join(["truncate", "-s", str(size_bytes), str(path)]))
        return
    if os.path.getsize(path) < size_bytes:
        os.truncate(path, size_bytes)
