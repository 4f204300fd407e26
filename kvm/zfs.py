"""The one module that touches ZFS: a libzfs_core-shaped API over pyzfs or the `zfs` command.

Mutating calls carry libzfs_core's names and meanings; failures raise classes named
as in `libzfs_core.exceptions`. What libzfs_core cannot do on OpenZFS 2.2 (listing,
properties, mounting, recursive destroy) always goes through the command, parsing
only its script formats (`-H -p`). Listing many datasets is one call, never one per
dataset. `zfs get -H -p -r` is used for listing because it is the form every ZFS we
meet (FreeBSD's OpenZFS, and zfs-fuse, whose `zfs list` has no -p) agrees on.
"""

import re

from . import host
from .errors import CommandFailed, KvmError


class ZFSError(KvmError):
    """Any ZFS failure."""

    def __init__(self, message, name=None):
        super().__init__(f"{name}: {message}" if name else message)
        self.name = name


class DatasetNotFound(ZFSError):
    """The dataset does not exist."""


class DatasetExists(ZFSError):
    """The dataset already exists."""


class ParentNotFound(ZFSError):
    """The parent dataset or pool does not exist."""


class SnapshotExists(ZFSError):
    """The snapshot already exists."""


class SnapshotNotFound(ZFSError):
    """The snapshot does not exist."""


class SnapshotNotLatest(ZFSError):
    """A rollback target is not the most recent snapshot."""


class SnapshotIsCloned(ZFSError):
    """The snapshot has dependent clones."""


class DatasetBusy(ZFSError):
    """The dataset is busy (mounted and in use, or held)."""


class NameInvalid(ZFSError):
    """The name is not a valid dataset or snapshot name."""


class NameTooLong(NameInvalid):
    """The name is longer than ZFS allows."""


class NoSpace(ZFSError):
    """The pool is out of space."""


class PoolsDiffer(ZFSError):
    """Snapshots requested at once lie in different pools."""


class PropertyInvalid(ZFSError):
    """A property name or value ZFS refuses."""


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*(/[A-Za-z0-9_.:\-]+)*(@[A-Za-z0-9_.:\-]+)?\Z")


def check_name(name):
    """Raise NameInvalid unless `name` is a valid dataset or snapshot name."""
    if len(name) > 255:
        raise NameTooLong("name too long", name)
    if not _NAME_RE.match(name):
        raise NameInvalid("invalid dataset name", name)


# --------------------------------------------------------------------- command backend

_PATTERNS = [
    ("dataset does not exist", None),
    ("no such pool", ParentNotFound),
    ("parent does not exist", ParentNotFound),
    ("missing dataset name", NameInvalid),
    ("dataset already exists", None),
    ("snapshot already exists", SnapshotExists),
    ("more recent snapshots", SnapshotNotLatest),
    ("dependent clones", SnapshotIsCloned),
    ("is busy", DatasetBusy),
    ("out of space", NoSpace),
    ("quota exceeded", NoSpace),
    ("invalid character", NameInvalid),
    ("name is too long", NameTooLong),
    ("invalid property", PropertyInvalid),
    ("bad property", PropertyInvalid),
]


def _classify(name, stderr):
    text = stderr.strip().splitlines()
    msg = text[-1] if text else "zfs failed"
    low = stderr.lower()
    for needle, cls in _PATTERNS:
        if needle in low:
            if cls is None and needle == "dataset does not exist":
                cls = SnapshotNotFound if "@" in (name or "") else DatasetNotFound
            elif cls is None:
                cls = SnapshotExists if "@" in (name or "") else DatasetExists
            return cls(needle, name)
    return ZFSError(msg, name)


def _zfs(args, name=None, mutating=True):
    try:
        return host.run(["zfs", *args], mutating=mutating)
    except CommandFailed as exc:
        if exc.status == 127:
            raise ZFSError("the zfs command is not installed") from None
        raise _classify(name, exc.stderr) from None


class CommandBackend:
    """ZFS through the `zfs` command."""

    name = "command"

    def lzc_create(self, name, ds_type="zfs", props=None):
        check_name(name)
        opts = []
        for key, value in (props or {}).items():
            opts += ["-o", f"{key}={value}"]
        _zfs(["create", *opts, name], name)

    def lzc_clone(self, name, origin, props=None):
        check_name(name)
        opts = []
        for key, value in (props or {}).items():
            opts += ["-o", f"{key}={value}"]
        _zfs(["clone", *opts, origin, name], name)

    def lzc_snapshot(self, snaps, props=None):
        snaps = list(snaps)
        for snap in snaps:
            check_name(snap)
            if "@" not in snap:
                raise NameInvalid("not a snapshot name", snap)
        pools = {s.split("/")[0].split("@")[0] for s in snaps}
        if len(pools) > 1:
            raise PoolsDiffer("snapshots must be in one pool", snaps[0])
        if len(snaps) == 1:
            _zfs(["snapshot", snaps[0]], snaps[0])
            return
        try:
            # OpenZFS takes several snapshots atomically in one command.
            host.run(["zfs", "snapshot", *snaps])
            return
        except CommandFailed as exc:
            if exc.status != 2 or "too many arguments" not in exc.stderr:
                raise _classify(snaps[0], exc.stderr) from None
        # An older zfs (zfs-fuse) takes one name a call: make all or none by hand.
        done = []
        try:
            for snap in snaps:
                _zfs(["snapshot", snap], snap)
                done.append(snap)
        except ZFSError:
            for snap in reversed(done):
                host.run(["zfs", "destroy", snap], check=False)
            raise

    def lzc_destroy_snaps(self, snaps, defer=False):
        for snap in snaps:
            try:
                _zfs(["destroy", *(["-d"] if defer else []), snap], snap)
            except SnapshotNotFound:
                pass  # libzfs_core: destroying a missing snapshot is not an error

    def lzc_rollback(self, name):
        snaps = self.snapshots(name)
        if not snaps:
            raise SnapshotNotFound("no snapshots to roll back to", name)
        latest = snaps[-1]
        _zfs(["rollback", latest], latest)
        return latest

    def lzc_rollback_to(self, name, snap):
        _zfs(["rollback", snap], snap)

    def lzc_exists(self, name):
        res = host.run(["zfs", "get", "-H", "-o", "value", "type", name], mutating=False, check=False)
        return res.status == 0

    def lzc_rename(self, source, target):
        check_name(target)
        # A mounted dataset can be "busy" to rename for a moment (zfs-fuse often, real ZFS at
        # times): retry, then unmount, rename and mount the new name; whatever happens, the
        # dataset ends up mounted under the name it has.
        import time
        unmounted = False
        try:
            for attempt in range(8):
                try:
                    _zfs(["rename", source, target], source)
                    break
                except DatasetBusy:
                    if host.dry_run() or attempt == 7:
                        raise
                    if attempt >= 2 and not unmounted:
                        unmounted = host.run(["zfs", "unmount", source], check=False).status == 0
                    time.sleep(0.1 * (attempt + 1))
        finally:
            if unmounted:
                now = target if self.lzc_exists(target) else source
                host.run(["zfs", "mount", now], check=False)

    def lzc_destroy(self, name):
        _retry_busy(lambda: _zfs(["destroy", name], name), name)

    def snapshots(self, name):
        """Snapshot names of one dataset, oldest first."""
        rows = get_props([name], ["type", "createtxg", "creation"], recursive=True, depth=1)
        snaps = [(int(p.get("createtxg") or p.get("creation") or 0), n) for n, p in rows.items()
                 if p.get("type") == "snapshot" and n.split("@")[0] == name]
        return [n for _, n in sorted(snaps)]


# ----------------------------------------------------------------------- pyzfs backend

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
            cls = globals().get(type(exc).__name__)
            text = getattr(exc, "message", None) or str(exc)
            # pyzfs' ZFSGenericError swaps name and message: keep our own name.
            if cls is None or not issubclass(cls, ZFSError):
                cls = ZFSError
            raise cls(str(text), name) from None

    def lzc_create(self, name, ds_type="zfs", props=None):
        check_name(name)
        encoded = {k.encode(): v.encode() for k, v in (props or {}).items()}
        self._call(name, self._lzc.lzc_create, name.encode(), ds_type, encoded)
        # libzfs_core does not mount what it creates; `zfs create` would have.
        _zfs(["mount", name], name)

    def lzc_snapshot(self, snaps, props=None):
        snaps = list(snaps)
        for snap in snaps:
            check_name(snap)
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


def probe_pyzfs():
    """A PyzfsBackend when libzfs_core really loads, else (None, reason)."""
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


_backend = []


def backend():
    """The backend chosen once per process: pyzfs when it loads, else the command."""
    if not _backend:
        found, _ = probe_pyzfs()
        _backend.append(found or CommandBackend())
    return _backend[0]


def lzc_create(name, ds_type="zfs", props=None):
    """Create a filesystem (mounted, as `zfs create` does)."""
    backend().lzc_create(name, ds_type, props)


def lzc_snapshot(snaps, props=None):
    """Create snapshots: all or none, same pool."""
    backend().lzc_snapshot(snaps, props)


def lzc_destroy_snaps(snaps, defer=False):
    """Destroy snapshots; missing ones are ignored."""
    backend().lzc_destroy_snaps(snaps, defer)


def lzc_rollback(name):
    """Roll back to the latest snapshot; returns its name."""
    return backend().lzc_rollback(name)


def lzc_rollback_to(name, snap):
    """Roll back to `snap`, which must be the latest."""
    backend().lzc_rollback_to(name, snap)


def lzc_exists(name):
    """True when the dataset or snapshot exists."""
    return backend().lzc_exists(name)


def lzc_rename(source, target):
    """Rename a dataset."""
    backend().lzc_rename(source, target)


def lzc_destroy(name):
    """Destroy one dataset or snapshot (not recursive)."""
    backend().lzc_destroy(name)


# ------------------------------------------------------------- command-only operations

def get_props(names, props, recursive=False, depth=None, with_source=False):
    """{dataset: {prop: value}} for the named datasets (and descendants), in one call.

    Values are exact (`-p`); unset is None. With `with_source`, each value is a
    (value, source) pair.
    """
    if not names:
        return {}
    cols = "name,property,value,source" if with_source else "name,property,value"
    args = ["get", "-H", "-p", "-o", cols]
    if recursive:
        args.append("-r")
        if depth is not None:
            args += ["-d", str(depth)]
    res = _zfs([*args, ",".join(props), *names], names[0], mutating=False)
    out = {}
    for line in res.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        value = None if parts[2] == "-" else parts[2]
        if with_source:
            value = (value, parts[3] if len(parts) > 3 else "-")
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def get_prop(name, prop):
    """One property of one dataset (None when unset)."""
    return get_props([name], [prop]).get(name, {}).get(prop)


def set_prop(name, prop, value):
    """zfs set prop=value name."""
    _zfs(["set", f"{prop}={value}", name], name)


def inherit_prop(name, prop):
    """zfs inherit prop name."""
    _zfs(["inherit", prop, name], name)


def mount(name):
    """zfs mount name."""
    _zfs(["mount", name], name)


def unmount(name):
    """zfs unmount name."""
    _zfs(["unmount", name], name)


def destroy_recursive(name, tries=5):
    """zfs destroy -r name: the dataset, its children and snapshots.

    Real ZFS, and zfs-fuse more often, can answer "dataset is busy" for a moment
    after a mount or a file close; that is retried a few times.
    """
    _retry_busy(lambda: _zfs(["destroy", "-r", name], name), name, tries)


def _retry_busy(action, name, tries=5):
    """Run action, retrying "busy"; the last try unmounts first (a filesystem only)."""
    import time
    for attempt in range(tries):
        try:
            return action()
        except DatasetBusy:
            if host.dry_run():
                raise
            if attempt == tries - 1:
                if "@" in name:
                    raise
                host.run(["zfs", "unmount", name], check=False)
                return action()
            time.sleep(0.2 * (attempt + 1))


def find_marked(prop):
    """Datasets where the user property `prop` is set locally (not inherited)."""
    res = host.run(["zfs", "get", "-H", "-p", "-o", "name,value,source", prop], mutating=False, check=False)
    return [line.split("\t")[0] for line in res.stdout.splitlines()
            if line.count("\t") >= 2 and line.split("\t")[2] == "local"]


def pools():
    """Imported pools: list of (name, health)."""
    res = host.run(["zpool", "list", "-H", "-o", "name,health"], mutating=False, check=False)
    if res.status == 127:
        raise ZFSError("the zpool command is not installed")
    return [tuple(line.split("\t")[:2]) for line in res.stdout.splitlines() if "\t" in line]


def dataset_of_path(path):
    """The mounted filesystem whose mountpoint is exactly `path`, or None."""
    res = host.run(["zfs", "get", "-H", "-p", "-o", "name,value", "mountpoint"], mutating=False, check=False)
    if res.status != 0:
        lines = res.stderr.strip().splitlines()
        raise ZFSError(f"zfs get failed: {lines[-1] if lines else res.status}")
    target = str(path).rstrip("/")
    for line in res.stdout.splitlines():
        name, _, mnt = line.partition("\t")
        if mnt.rstrip("/") == target and "@" not in name:
            return name
    return None
