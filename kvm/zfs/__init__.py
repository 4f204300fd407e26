"""The one door to ZFS: a libzfs_core-shaped API over pyzfs (pyzfs.py) or the `zfs` command
(command.py); send and receive streams (stream.py), all-or-nothing creation (txn.py), who depends
on whom (deps.py), libzfs_core's error classes (errors.py), snapshot names (names.py). Nothing
outside this package runs `zfs` or `zpool`, or joins or splits DATASET@SNAP itself
(tests/unit/test_zfs_door.py holds kvm/ to that).

Mutating calls carry libzfs_core's names and meanings; failures raise classes named
as in `libzfs_core.exceptions` (errors.py). What libzfs_core cannot do on
OpenZFS 2.2 (listing, properties, mounting, recursive destroy) always goes through
the command, parsing only its script formats (`-H -p`). Listing many datasets is one
call, never one per dataset. Where a ZFS we meet (zfs-fuse above all) lacks a form or
answers "busy" for a moment, the workaround lives in command.py's last section.
"""

from kvm import host
from kvm.zfs.command import (  # noqa: F401
    BUSY_TRIES,
    BUSY_WAIT,
    RENAME_TRIES,
    RENAME_WAIT,
    CommandBackend,
    _retry_busy,
    check_name,
    get_props,
    get_props_later,
    mount_if_there,
    run,
)
from kvm.zfs.errors import (  # noqa: F401
    BY_NAME,  # noqa: F401
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    NameInvalid,
    NameTooLong,
    NoSpace,
    ParentNotFound,
    PoolsDiffer,
    PropertyInvalid,
    SnapshotExists,
    SnapshotIsCloned,
    SnapshotNotFound,
    SnapshotNotLatest,
    ZFSError,
    classify,
)
from kvm.zfs.names import is_snapshot, snapshot_name, split_snapshot  # noqa: F401


def probe_pyzfs():
    """A PyzfsBackend (kvm/zfs_pyzfs.py) when libzfs_core really loads, else (None, reason)."""
    from kvm.zfs.pyzfs import probe
    return probe()


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
    """Destroy snapshots (one call per dataset at most); missing ones are ignored."""
    backend().lzc_destroy_snaps(snaps, defer)


def lzc_rollback_to(name, snap):
    """Roll back to `snap`, which must be the latest."""
    backend().lzc_rollback_to(name, snap)


def lzc_exists(name):
    """True when the dataset or snapshot exists (asked through the command until some other call
    has loaded the backend: a question alone is not worth loading pyzfs for)."""
    return (_backend[0] if _backend else CommandBackend()).lzc_exists(name)


def lzc_rename(source, target):
    """Rename a dataset; it ends up mounted under the name it has, whatever happens."""
    backend().lzc_rename(source, target)


# ------------------------------------------------------------- command-only operations

def get_prop(name, prop):
    """One property of one dataset (None when unset)."""
    return get_props([name], [prop]).get(name, {}).get(prop)


def set_prop(name, prop, value):
    """zfs set prop=value name."""
    run(["set", f"{prop}={value}", name], name)


def inherit_prop(name, prop):
    """zfs inherit prop name."""
    run(["inherit", prop, name], name)


ZVOL_DEVICES = "/dev/zvol/"   # where a zvol's device is, on FreeBSD and (udev) Linux


class NoZvols(ZFSError):
    """This ZFS makes no volumes (zfs-fuse has none)."""


def create_volume(name, size, sparse=True, props=None):
    """zfs create [-s] -V SIZE [-o PROP=VALUE]... NAME: a zvol (sparse: no refreservation).
    NoZvols when this ZFS cannot make one (zfs-fuse)."""
    check_name(name)
    opts = [x for key, value in (props or {}).items() for x in ("-o", f"{key}={value}")]
    try:
        run(["create", *(["-s"] if sparse else []), "-V", str(size), *opts, name], name)
    except ZFSError as exc:
        low = str(exc).lower()
        # zfs-fuse: "invalid property 'volmode'" (every ZFS with zvols knows volmode), and
        # without it an abort, "Function not implemented"
        if isinstance(exc, PropertyInvalid) or "not implemented" in low or "not supported" in low:
            raise NoZvols(f"this ZFS makes no zvols (zfs-fuse has none: zfs create -V said "
                          f"'{exc.message.split(': ', 1)[-1]}'); use a file disk", name) from None
        raise


def zvol_device(name):
    """The device path of zvol `name`."""
    return ZVOL_DEVICES + name


def set_volsize(name, size):
    """zfs set volsize=SIZE NAME (a zvol grows; ZFS refuses a shrink below what is written too)."""
    run(["set", f"volsize={size}", name], name)


def destroy_recursive(name, tries=5):
    """zfs destroy -r name: the dataset, its children and snapshots (see _retry_busy)."""
    _retry_busy(lambda: run(["destroy", "-r", name], name), name, tries)


def volume_sizes(names):
    """{zvol: volsize in bytes} of the named volumes, in one call; one zfs cannot answer for
    (missing, not a volume) is left out, and a failing zfs gives {} (never raises)."""
    res = host.run(["zfs", "get", "-H", "-p", "-o", "name,value", "volsize", *names], mutating=False, check=False)
    out = {}
    for line in res.stdout.splitlines():
        name, _, value = line.partition("\t")
        if value.isdigit():
            out[name] = int(value)
    return out


def marked_mountpoints(prop):
    """{dataset: mountpoint} of the datasets where the user property `prop` is set locally, from
    one zfs call (a dataset destroyed meanwhile is simply not in it; a second call per dataset
    would fail on it)."""
    res = host.run(["zfs", "get", "-H", "-p", "-o", "name,property,value,source", f"{prop},mountpoint"],
                   mutating=False, check=False)
    rows = {}
    for line in res.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            rows.setdefault(parts[0], {})[parts[1]] = (parts[2], parts[3])
    return {name: props.get("mountpoint", ("-", ""))[0] for name, props in rows.items()
            if props.get(prop, ("", ""))[1] == "local"}


def pools():
    """Imported pools: list of (name, health)."""
    res = host.run(["zpool", "list", "-H", "-o", "name,health"], mutating=False, check=False)
    if res.status == 127:
        raise ZFSError("the zpool command is not installed")
    return [tuple(line.split("\t")[:2]) for line in res.stdout.splitlines() if "\t" in line]


VDEV_GROUPS = ("mirror", "raidz", "draid", "spare", "replacing", "logs", "cache", "spares", "special", "dedup")


def pool_devices():
    """[(pool, vdev path)] of every imported pool: the devices and files ZFS itself uses (a VM must
    never get one as a disk). `zpool status -P` names them by full path; zfs-fuse has no -P and
    names a file under /dev relative to /dev (shm/x.img), others by their full path."""
    res = host.run(["zpool", "status", "-P"], mutating=False, check=False)
    if res.status != 0:
        res = host.run(["zpool", "status"], mutating=False, check=False)
    out, pool, in_config = [], None, False
    for line in res.stdout.splitlines():
        head = line.strip()
        if head.startswith("pool:"):
            pool, in_config = head.split(":", 1)[1].strip(), False
        elif head.startswith("config:"):
            in_config = True
        elif head.startswith("errors:"):
            in_config = False
        elif in_config and head and pool and not head.startswith("NAME"):
            name = head.split()[0]
            if name == pool or name.split("-")[0] in VDEV_GROUPS:
                continue
            out.append((pool, name if name.startswith("/") else f"/dev/{name}"))
    return out


def dataset_of_path(path):
    """The mounted filesystem whose mountpoint is exactly `path`, or None (asked about that path only,
    see filesystems_of)."""
    name, mnt = filesystems_of([path]).get(str(path), (None, None))
    return name if mnt is not None and mnt.rstrip("/") == str(path).rstrip("/") else None


def filesystems_of(paths):
    """{path: (filesystem, its mountpoint)} of the mounted ZFS filesystem holding each path (a file
    or folder; a missing one: its nearest existing folder); a path not on ZFS is left out.

    One `zfs list PATH...` call about those filesystems only (zfs resolves a path to the filesystem
    it is on; zfs-fuse too, whose list has no -p, which name and mountpoint do not need): never a
    listing of every dataset of the host, which costs half a second at 700 datasets. Only when zfs
    answers nothing at all (no path on ZFS, or a zfs that takes no paths) are the mountpoints of
    every filesystem read instead, in one call."""
    paths = [str(p) for p in paths]
    if not paths:
        return {}
    existing = [_nearest_existing(p) for p in paths]
    res = host.run(["zfs", "list", "-H", "-o", "name,mountpoint", *dict.fromkeys(existing)],
                   mutating=False, check=False)
    rows = _mount_rows(res.stdout)
    if not rows and res.status != 0:
        res = host.run(["zfs", "get", "-H", "-p", "-o", "name,value", "mountpoint"], mutating=False, check=False)
        if res.status != 0:
            lines = res.stderr.strip().splitlines()
            raise ZFSError(f"zfs get failed: {lines[-1] if lines else res.status}")
        rows = _mount_rows(res.stdout)
    out = {}
    for path in paths:
        holder = max(((len(mnt), name, mnt) for name, mnt in rows if _under(path, mnt)), default=None)
        if holder:
            out[path] = holder[1:]
    return out


def _nearest_existing(path):
    import os
    while path not in ("", "/") and not os.path.lexists(path):
        path = os.path.dirname(path.rstrip("/")) or "/"
    return path


def _mount_rows(stdout):
    """[(filesystem, mountpoint)] of `zfs list|get` lines: mounted at a path, snapshots left out."""
    rows = []
    for line in stdout.splitlines():
        name, _, mnt = line.partition("\t")
        if mnt.startswith("/") and not is_snapshot(name):
            rows.append((name, mnt))
    return rows


def _under(path, mountpoint):
    mnt = mountpoint.rstrip("/")
    return path == mnt or path.startswith(mnt + "/") or mnt == ""


def unmounted(name):
    """True when filesystem `name` exists and is not mounted (False when it is, or is missing)."""
    res = host.run(["zfs", "get", "-H", "-p", "-o", "value", "mounted", name], mutating=False, check=False)
    return res.status == 0 and res.stdout.strip() == "no"


def mount(name):
    """zfs mount NAME."""
    run(["mount", name], name)


def try_unmount(name):
    """zfs unmount NAME, never forced; True when it was unmounted (busy: False, left as it is)."""
    return host.run(["zfs", "unmount", name], check=False).status == 0
