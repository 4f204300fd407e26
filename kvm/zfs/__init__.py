"""The one module that touches ZFS: a libzfs_core-shaped API over pyzfs or the `zfs` command.

Mutating calls carry libzfs_core's names and meanings; failures raise classes named
as in `libzfs_core.exceptions` (kvm/zfserrors.py). What libzfs_core cannot do on
OpenZFS 2.2 (listing, properties, mounting, recursive destroy) always goes through
the command, parsing only its script formats (`-H -p`). Listing many datasets is one
call, never one per dataset. Where a ZFS we meet (zfs-fuse above all) lacks a form or
answers "busy" for a moment, the workaround lives in the last section of this file.
"""

import re

from kvm import host
from kvm.errors import CommandFailed
from kvm.zfs.errors import (DatasetBusy, DatasetExists, DatasetNotFound, NameInvalid, NameTooLong, NoSpace,  # noqa: F401
    ParentNotFound, PoolsDiffer, PropertyInvalid, SnapshotExists, SnapshotIsCloned, SnapshotNotFound,
    SnapshotNotLatest, ZFSError, classify)
from kvm.zfs.errors import BY_NAME

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*(/[A-Za-z0-9_.:\-]+)*(@[A-Za-z0-9_.:\-]+)?\Z")


def check_name(name):
    """Raise NameInvalid unless `name` is a valid dataset or snapshot name."""
    if len(name) > 255:
        raise NameTooLong("name too long", name)
    if not _NAME_RE.match(name):
        raise NameInvalid("invalid dataset name", name)


def _zfs(args, name=None, mutating=True):
    try:
        return host.run(["zfs", *args], mutating=mutating)
    except CommandFailed as exc:
        if exc.status == 127:
            raise ZFSError("the zfs command is not installed") from None
        raise classify(name, exc.stderr) from None


def _check_snaps(snaps):
    """The snapshot names, checked: valid, each with '@', all in one pool."""
    snaps = list(snaps)
    for snap in snaps:
        check_name(snap)
        if "@" not in snap:
            raise NameInvalid("not a snapshot name", snap)
    if len({s.split("/")[0].split("@")[0] for s in snaps}) > 1:
        raise PoolsDiffer("snapshots must be in one pool", snaps[0])
    return snaps


# --------------------------------------------------------------------- command backend

class CommandBackend:
    """ZFS through the `zfs` command."""

    name = "command"

    def lzc_create(self, name, ds_type="zfs", props=None):
        check_name(name)
        opts = []
        for key, value in (props or {}).items():
            opts += ["-o", f"{key}={value}"]
        _zfs(["create", *opts, name], name)

    def lzc_snapshot(self, snaps, props=None):
        snaps = _check_snaps(snaps)
        if len(snaps) == 1:
            _zfs(["snapshot", snaps[0]], snaps[0])
            return
        try:
            # OpenZFS takes several snapshots atomically in one command.
            host.run(["zfs", "snapshot", *snaps])
        except CommandFailed as exc:
            if not _lacks_multi_snapshot(exc):
                raise classify(snaps[0], exc.stderr) from None
            _snapshot_each(snaps)

    def lzc_destroy_snaps(self, snaps, defer=False):
        by_dataset = {}
        for snap in snaps:
            ds, _, short = snap.partition("@")
            by_dataset.setdefault(ds, []).append(short)
        for ds, shorts in by_dataset.items():
            _destroy_list(ds, shorts, ["-d"] if defer else [])

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
        _rename_busy(source, target, lambda now: self.lzc_exists(now))

    def lzc_destroy(self, name):
        _retry_busy(lambda: _zfs(["destroy", name], name), name)

    def snapshots(self, name):
        """Snapshot names of one dataset, oldest first."""
        rows = get_props([name], ["type", "createtxg", "creation"], recursive=True, depth=1)
        snaps = [(int(p.get("createtxg") or p.get("creation") or 0), n) for n, p in rows.items()
                 if p.get("type") == "snapshot" and n.split("@")[0] == name]
        return [n for _, n in sorted(snaps)]


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


def destroy_recursive(name, tries=5):
    """zfs destroy -r name: the dataset, its children and snapshots (see _retry_busy)."""
    _retry_busy(lambda: _zfs(["destroy", "-r", name], name), name, tries)


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


def unmounted(name):
    """True when filesystem `name` exists and is not mounted (False when it is, or is missing)."""
    res = host.run(["zfs", "get", "-H", "-p", "-o", "value", "mounted", name], mutating=False, check=False)
    return res.status == 0 and res.stdout.strip() == "no"


# ------------------------------------------------ workarounds: zfs-fuse and "busy" answers
#
# Each covers one ZFS behaviour; product code never checks which ZFS it runs on.
# - zfs-fuse's `zfs snapshot` takes one name ("too many arguments"): take the snapshots
#   one by one and destroy those made if one fails (_snapshot_each). A kill -9 in
#   between leaves a partial set, which snap.py lists as incomplete and repairs.
# - zfs-fuse's `zfs destroy` knows neither `ds@a,b` lists nor `ds@a%b` ranges: one call
#   per snapshot there (_destroy_list), remembered for the rest of the process.
# - `zfs list` of zfs-fuse has no -p: everything lists with `zfs get -H -p` (get_props).
# - a mounted dataset can be "busy" to rename or destroy for a moment after a file
#   closes (zfs-fuse often, real ZFS at times): retry, then unmount, act and mount again
#   whatever happens (_rename_busy, _retry_busy), so a failure never leaves it unmounted.

BUSY_TRIES = 5          # destroy: attempts before the unmount-first last try
BUSY_WAIT = 0.2         # seconds, times the attempt number, between destroy attempts
RENAME_TRIES = 8        # rename: attempts; unmounted after the third busy answer
RENAME_WAIT = 0.1
_NO_LIST_FORM = []      # set once `zfs destroy ds@a,b` proved unknown to this zfs


def _lacks_multi_snapshot(exc):
    return exc.status == 2 and "too many arguments" in exc.stderr


def _snapshot_each(snaps):
    done = []
    try:
        for snap in snaps:
            _zfs(["snapshot", snap], snap)
            done.append(snap)
    except BaseException:
        for snap in reversed(done):
            host.run(["zfs", "destroy", snap], check=False)
        raise


def _destroy_list(ds, shorts, opts):
    """Destroy ds@each of shorts: one `zfs destroy ds@a,b,c` where ZFS has the list form."""
    if len(shorts) > 1 and not _NO_LIST_FORM:
        res = host.run(["zfs", "destroy", *opts, f"{ds}@{','.join(shorts)}"], check=False)
        if res.status == 0 or "could not find any snapshots" in res.stderr:
            return
        if "invalid dataset name" in res.stderr or "does not exist" in res.stderr:
            _NO_LIST_FORM.append(True)
        # any other failure: one by one below, which names the snapshot at fault
    for short in shorts:
        try:
            _zfs(["destroy", *opts, f"{ds}@{short}"], f"{ds}@{short}")
        except SnapshotNotFound:
            pass  # libzfs_core: destroying a missing snapshot is not an error


def _retry_busy(action, name, tries=BUSY_TRIES):
    """Run action, retrying "busy"; the last try unmounts first (a filesystem only) and mounts
    again if the action still fails."""
    import time
    for attempt in range(tries - 1):
        try:
            return action()
        except DatasetBusy:
            if host.dry_run():
                raise
            time.sleep(BUSY_WAIT * (attempt + 1))
    unmounted_now = "@" not in name and host.run(["zfs", "unmount", name], check=False).status == 0
    try:
        return action()
    except BaseException:
        if unmounted_now:
            mount_if_there(name)
        raise


def _rename_busy(source, target, exists):
    import time
    unmounted_now = False
    try:
        for attempt in range(RENAME_TRIES):
            try:
                _zfs(["rename", source, target], source)
                return
            except DatasetBusy:
                if host.dry_run() or attempt == RENAME_TRIES - 1:
                    raise
                if attempt >= 2 and not unmounted_now:
                    unmounted_now = host.run(["zfs", "unmount", source], check=False).status == 0
                time.sleep(RENAME_WAIT * (attempt + 1))
    finally:
        if unmounted_now:
            mount_if_there(target if exists(target) else source)


def mount_if_there(name):
    """zfs mount NAME when it exists (a failure is left to the next look)."""
    if host.run(["zfs", "get", "-H", "-o", "value", "type", name], mutating=False, check=False).status == 0:
        host.run(["zfs", "mount", name], check=False)
