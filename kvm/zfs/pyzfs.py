"""The pyzfs backend of kvm/zfs/__init__.py: ZFS through libzfs_core where it loads (FreeBSD, OpenZFS on
Linux); kvm/zfs/__init__.py chooses it once per process (backend()) and falls back to the command."""

from kvm.zfs.command import CommandBackend, _check_snaps, check_name, run
from kvm.zfs.errors import BY_NAME, ZFSError


class PyzfsBackend(CommandBackend):
    """ZFS through libzfs_core (pyzfs); listing and properties stay on the command."""

    name = "libzfs_core"

    def __init__(self, lzc, exceptions):
        self._lzc = lzc
        self._exc = exceptions

    def _call(self, name, func, *args):
        try:
            return func(*args)
        except self._exc.ZFSError as exc:
            cls = BY_NAME.get(type(exc).__name__, ZFSError)
            text = getattr(exc, "message", None) or str(exc)
            # pyzfs' ZFSGenericError swaps name and message: keep our own name.
            raise cls(str(text), name) from None

    def lzc_create(self, name, ds_type="zfs", props=None):
        check_name(name)
        encoded = {k.encode(): v.encode() for k, v in (props or {}).items()}
        self._call(name, self._lzc.lzc_create, name.encode(), ds_type, encoded)
        # libzfs_core does not mount what it creates; `zfs create` would have.
        run(["mount", name], name)

    def lzc_snapshot(self, snaps, props=None):
        snaps = _check_snaps(snaps)
        self._call(snaps[0] if snaps else None, self._lzc.lzc_snapshot, [s.encode() for s in snaps])

    def lzc_destroy_snaps(self, snaps, defer=False):
        snaps = list(snaps)
        self._call(snaps[0] if snaps else None, self._lzc.lzc_destroy_snaps, [s.encode() for s in snaps], defer)

    def lzc_rollback(self, name):
        return self._call(name, self._lzc.lzc_rollback, name.encode()).decode()

    def lzc_rollback_to(self, name, snap):
        self._call(snap, self._lzc.lzc_rollback_to, name.encode(), snap.encode())

    def lzc_exists(self, name):
        return bool(self._lzc.lzc_exists(name.encode()))

    def lzc_destroy(self, name):
        self._call(name, self._lzc.lzc_destroy, name.encode())


def _libzfs_core_findable():
    """Whether cffi's dlopen("zfs_core") can succeed, asked before pyzfs's import (about 0.1 s of
    cffi declarations): by that name (FreeBSD's /lib/libzfs_core.so, or a -dev package's link),
    else as ctypes.util.find_library finds it, which is what cffi falls back to."""
    import ctypes
    try:
        ctypes.CDLL("libzfs_core.so")
        return True
    except OSError:
        import ctypes.util
        return ctypes.util.find_library("zfs_core") is not None


def probe():
    """A PyzfsBackend when libzfs_core really loads, else (None, reason)."""
    if not _libzfs_core_findable():
        return None, "libzfs_core cannot be loaded (no libzfs_core.so found)"
    try:
        import libzfs_core as lzc
        from libzfs_core import exceptions
    except ImportError as exc:
        return None, f"pyzfs is not installed ({exc})"
    try:
        # pyzfs loads the library lazily: only a real call proves it is there.
        lzc.lzc_exists(b"kvm-probe-nonexistent-pool")
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return None, f"libzfs_core cannot be loaded ({type(exc).__name__}: {exc})"
    return PyzfsBackend(lzc, exceptions), "libzfs_core loaded"
