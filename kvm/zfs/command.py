"""The zfs command backend: ZFS through the `zfs` command, with the workarounds that keep its
answers the same on every ZFS (OpenZFS, FreeBSD's, zfs-fuse). kvm/zfs/__init__.py is the door
callers use; pyzfs.py subclasses CommandBackend for what libzfs_core does natively."""

import re
import time

from kvm import host
from kvm.errors import CommandFailed
from kvm.zfs.errors import DatasetBusy, NameInvalid, NameTooLong, PoolsDiffer, SnapshotNotFound, ZFSError, classify  # noqa: F401
from kvm.zfs.names import is_snapshot, snapshot_name, split_snapshot

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*(/[A-Za-z0-9_.:\-]+)*(@[A-Za-z0-9_.:\-]+)?\Z")


def check_name(name):
    """Raise NameInvalid unless `name` is a valid dataset or snapshot name."""
    if len(name) > 255:
        raise NameTooLong("name too long", name)
    if not _NAME_RE.match(name):
        raise NameInvalid("invalid dataset name", name)


def run(args, name=None, mutating=True):
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
        if not is_snapshot(snap):
            raise NameInvalid("not a snapshot name", snap)
    if len({split_snapshot(s)[0].split("/")[0] for s in snaps}) > 1:
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
        run(["create", *opts, name], name)

    def lzc_snapshot(self, snaps, props=None):
        snaps = _check_snaps(snaps)
        if len(snaps) == 1:
            run(["snapshot", snaps[0]], snaps[0])
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
            ds, short = split_snapshot(snap)
            by_dataset.setdefault(ds, []).append(short)
        for ds, shorts in by_dataset.items():
            _destroy_list(ds, shorts, ["-d"] if defer else [])

    def lzc_rollback(self, name):
        snaps = self.snapshots(name)
        if not snaps:
            raise SnapshotNotFound("no snapshots to roll back to", name)
        latest = snaps[-1]
        run(["rollback", latest], latest)
        return latest

    def lzc_rollback_to(self, name, snap):
        run(["rollback", snap], snap)

    def lzc_exists(self, name):
        res = host.run(["zfs", "get", "-H", "-o", "value", "type", name], mutating=False, check=False)
        return res.status == 0

    def lzc_rename(self, source, target):
        check_name(target)
        _rename_busy(source, target, lambda now: self.lzc_exists(now))

    def lzc_destroy(self, name):
        _retry_busy(lambda: run(["destroy", name], name), name)

    def snapshots(self, name):
        """Snapshot names of one dataset, oldest first."""
        rows = get_props([name], ["type", "createtxg", "creation"], recursive=True, depth=1)
        snaps = [(int(p.get("createtxg") or p.get("creation") or 0), n) for n, p in rows.items()
                 if p.get("type") == "snapshot" and split_snapshot(n)[0] == name]
        return [n for _, n in sorted(snaps)]



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
    res = run([*args, ",".join(props), *names], names[0], mutating=False)
    return _parse_get(res.stdout, with_source)


def get_props_later(names, props):
    """get_props' one call started now and collected later, so that its wait overlaps other
    work (vminfo reads set.conf meanwhile): returns a function that waits for it and gives
    {dataset: {prop: value}}. `names` None asks about every dataset. Read-only and never
    raises: a failing zfs (a missing dataset, no zfs at all) gives what it printed, often {}."""
    if names is not None and not names:
        return lambda: {}
    pending = host.run_later(["zfs", "get", "-H", "-p", "-o", "name,property,value", ",".join(props),
                              *(names or [])])
    return lambda: _parse_get(pending.result().stdout)


def _parse_get(stdout, with_source=False):
    """{dataset: {prop: value}} from `zfs get -H -p -o name,property,value[,source]`."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        value = None if parts[2] == "-" else parts[2]
        if with_source:
            value = (value, parts[3] if len(parts) > 3 else "-")
        out.setdefault(parts[0], {})[parts[1]] = value
    return out




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
            run(["snapshot", snap], snap)
            done.append(snap)
    except BaseException:
        for snap in reversed(done):
            host.run(["zfs", "destroy", snap], check=False)
        raise


def _destroy_list(ds, shorts, opts):
    """Destroy ds@each of shorts: one `zfs destroy ds@a,b,c` where ZFS has the list form."""
    if len(shorts) > 1 and not _NO_LIST_FORM:
        res = host.run(["zfs", "destroy", *opts, snapshot_name(ds, ",".join(shorts))], check=False)
        if res.status == 0 or "could not find any snapshots" in res.stderr:
            return
        if "invalid dataset name" in res.stderr or "does not exist" in res.stderr:
            _NO_LIST_FORM.append(True)
        # any other failure: one by one below, which names the snapshot at fault
    for short in shorts:
        try:
            snap = snapshot_name(ds, short)
            run(["destroy", *opts, snap], snap)
        except SnapshotNotFound:
            pass  # libzfs_core: destroying a missing snapshot is not an error


def _retry_busy(action, name, tries=BUSY_TRIES):
    """Run action, retrying "busy"; the last try unmounts first (a filesystem only) and mounts
    again if the action still fails."""
    for attempt in range(tries - 1):
        try:
            return action()
        except DatasetBusy:
            if host.dry_run():
                raise
            time.sleep(BUSY_WAIT * (attempt + 1))
    unmounted_now = not is_snapshot(name) and host.run(["zfs", "unmount", name], check=False).status == 0
    try:
        return action()
    except BaseException:
        if unmounted_now:
            mount_if_there(name)
        raise


def _rename_busy(source, target, exists):
    unmounted_now = False
    try:
        for attempt in range(RENAME_TRIES):
            try:
                run(["rename", source, target], source)
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
