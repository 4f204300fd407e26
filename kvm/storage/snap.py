"""Snapshots of a VM: its dataset and every dataset or zvol its set.conf points at, taken together.

A snapshot of a VM is a *set*: the same name on each of its datasets. Sets are listed,
destroyed and rolled back as one. Where ZFS takes them at once (libzfs_core, OpenZFS's
`zfs snapshot a@s b@s`) a set is all or none; where it does not (zfs-fuse), or when a
destroy or rollback spanning datasets is killed half-way, a set can be incomplete:
it is listed as such, never rolled back to, and the same command run again completes it.
"""

import re
import time
from contextlib import contextmanager

from kvm import zfs
from kvm.errors import AlreadyExists, NotFound, Refused, StateError, UsageError
from kvm.host import lock
from kvm.host.record import field, record
from kvm.zfs.deps import clones_by_origin, dependents

SNAP_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}\Z")
# A rollback writes a little (and a full pool may refuse it after the newer snapshots are
# gone): below this many free bytes on a dataset's pool, nothing is destroyed or rolled back.
ROLLBACK_MIN_FREE = 1 << 20
_PROPS = ["type", "used", "referenced", "creation", "createtxg", "available"]


def check_snap_name(vm_name, snap):
    """Refuse a snapshot name ZFS (or our % ranges) cannot take."""
    if not SNAP_RE.match(snap or ""):
        shown = (snap or "").encode("unicode_escape").decode()
        raise UsageError(f"invalid snapshot name '{shown}': use letters, digits, '_', '.', ':' and '-' "
                         f"(no '@', '/', '%' or spaces)", vm=vm_name)
    if snap.startswith("-") or snap in (".", ".."):
        raise UsageError(f"invalid snapshot name '{snap}': it may not start with '-' (commands would read it "
                         f"as an option) nor be '.' or '..'", vm=vm_name)


def default_name():
    """A timestamp name, e.g. 2026-11-23_18.05.00."""
    return time.strftime("%Y-%m-%d_%H.%M.%S")


def _block_paths(cfg):
    paths = [cfg.disk] if cfg.disk else []
    for dev in cfg.devices:
        if dev.kind == "disk" and dev.path.startswith("/"):
            paths.append(dev.path)
    return paths


def datasets_of(vm, cfg):
    """The VM's dataset first, then the other datasets/zvols its disk, ISO excluded, and Devices use.
    ZFS is asked about these only (zfs.filesystems_of), never about every dataset of the host."""
    out = [vm.dataset()]
    paths = _block_paths(cfg)
    outside = [p for p in paths if not p.startswith("/dev/zvol/") and not p.startswith(str(vm.dir) + "/")]
    holders = zfs.filesystems_of(outside) if outside else {}
    for path in paths:
        if path.startswith("/dev/zvol/"):
            name = path[len("/dev/zvol/"):]
        else:
            name = holders.get(path, (None,))[0]
        if name and name not in out:
            out.append(name)
    return out


@record()
class SnapSet:
    """One snapshot name across the VM's datasets: {dataset: props} of those that have it."""

    name: str
    members: dict
    datasets: list

    @property
    def missing(self):
        """The VM's datasets that lack this snapshot."""
        return [ds for ds in self.datasets if ds not in self.members]

    @property
    def complete(self):
        return not self.missing

    @property
    def props(self):
        """The props shown for the set: the VM dataset's snapshot, else the first there is."""
        return self.members.get(self.datasets[0]) or next(iter(self.members.values()))

    def order(self):
        return min(int(p.get("createtxg") or p.get("creation") or 0) for p in self.members.values())

    def full_names(self):
        return [zfs.snapshot_name(ds, self.name) for ds in self.datasets if ds in self.members]


@record()
class Listing:
    """Every snapshot set of a VM, oldest first, and the free bytes of each of its datasets."""

    sets: list
    available: dict = field(default_factory=dict)

    def names(self):
        return [s.name for s in self.sets]

    def get(self, name):
        return next((s for s in self.sets if s.name == name), None)


def listing(dsets):
    """The Listing of these datasets (the VM's first): one zfs call."""
    rows = zfs.get_props(dsets, _PROPS, recursive=True, depth=1)
    by_name, avail = {}, {}
    for full, props in rows.items():
        ds, short = zfs.split_snapshot(full)
        if ds not in dsets:
            continue
        if not short:
            avail[ds] = int(props.get("available") or 0)
        elif props.get("type") == "snapshot":
            by_name.setdefault(short, {})[ds] = props
    sets = sorted((SnapSet(n, m, dsets) for n, m in by_name.items()), key=SnapSet.order)
    return Listing(sets, avail)


def create(vm, cfg, snap):
    """Snapshot every dataset of the VM at once (all or none); a same-named incomplete set
    (left by a killed create or destroy) is replaced."""
    check_snap_name(vm.name, snap)
    dsets = datasets_of(vm, cfg)
    names = [zfs.snapshot_name(ds, snap) for ds in dsets]
    try:
        zfs.lzc_snapshot(names)
    except zfs.SnapshotExists:
        partial = listing(dsets).get(snap)
        if partial is None or partial.complete:
            raise AlreadyExists(f"snapshot '{snap}' already exists", vm=vm.name) from None
        zfs.lzc_destroy_snaps(partial.full_names())
        zfs.lzc_snapshot(names)
    except zfs.PoolsDiffer:
        raise StateError("its datasets lie in different pools: ZFS cannot snapshot them together "
                         f"({', '.join(names)})", vm=vm.name) from None
    return names


def _no_such(vm, name):
    return NotFound(f"no snapshot '{name}' (snap list {vm.name} shows them)", vm=vm.name, hint=f"snap list {vm.name}")


def select(vm, have, spec):
    """The SnapSets for `spec`: one name, or a zfs-style range a%b, %b, a% (inclusive)."""
    names = have.names()
    if "%" not in spec:
        check_snap_name(vm.name, spec)
        if spec not in names:
            raise _no_such(vm, spec)
        return [have.get(spec)]
    first, _, last = spec.partition("%")
    for part in (first, last):
        if part:
            check_snap_name(vm.name, part)
            if part not in names:
                raise _no_such(vm, part)
    lo = names.index(first) if first else 0
    hi = names.index(last) if last else len(names) - 1
    if lo > hi:
        raise UsageError(f"range '{spec}': '{first}' is newer than '{last}'", vm=vm.name)
    return have.sets[lo:hi + 1]


def clones_of_sets(vm, doomed):
    """Every dataset depending on a snapshot of the doomed sets (clones of clones too), deepest
    first (one zfs call over the pool)."""
    wanted = {full for s in doomed for full in s.full_names()}
    if not wanted:
        return []
    table = clones_by_origin(vm.dataset().split("/")[0])
    out = []
    for snap in sorted(wanted):
        for clone in table.get(snap, []):
            out += [d for d in dependents(clone, table) if d not in out] + [clone]
    return out


def check_no_clones(vm, doomed):
    """Refuse when any snapshot of the doomed sets has clones, naming them."""
    users = clones_of_sets(vm, doomed)
    if users:
        raise Refused(f"snapshot has clones: {', '.join(users)}; destroy or promote them first "
                         f"(snap destroy -R destroys them too)", vm=vm.name)


def destroy_sets(vm, doomed):
    """Destroy the sets on every dataset that has them: one zfs call per dataset at most."""
    check_no_clones(vm, doomed)
    zfs.lzc_destroy_snaps([full for s in doomed for full in s.full_names()])
    return [s.name for s in doomed]


def destroy(vm, cfg, spec, destroy_clones=None):
    """Destroy one snapshot set or a range of them; refuse cloned ones unless `destroy_clones` is
    given (-R): destroy_clones(vm, clones) goes first (the CLI passes manage.destroy's
    destroy_dependents, which destroys clone VMs as vmdestroy would)."""
    have = listing(datasets_of(vm, cfg))
    doomed = select(vm, have, spec)
    if destroy_clones:
        destroy_clones(vm, clones_of_sets(vm, doomed))
    return destroy_sets(vm, doomed)


def rollback_plan(vm, cfg, snap, older_ok):
    """(Listing, target set, newer sets that would be destroyed); refuses an incomplete target."""
    have = listing(datasets_of(vm, cfg))
    if not have.sets:
        raise NotFound("has no snapshot to roll back to", vm=vm.name)
    target = snap or have.sets[-1].name
    check_snap_name(vm.name, target)
    found = have.get(target)
    if found is None:
        raise _no_such(vm, target)
    if not found.complete:
        raise StateError(f"snapshot '{target}' is incomplete (missing on {', '.join(found.missing)}): "
                         f"cannot roll back to it; snap d {vm.name} {target} removes it", vm=vm.name)
    check_room(vm, have, found)
    newer = have.sets[have.sets.index(found) + 1:]
    if newer and not older_ok:
        raise StateError(f"'{target}' is not the latest snapshot ({', '.join(s.name for s in newer)} came "
                         f"after): use -r to destroy those and roll back", vm=vm.name)
    return have, found, newer


def check_room(vm, have, target):
    """Refuse a rollback where a dataset's pool is (nearly) full: before anything is destroyed."""
    short = [ds for ds in target.datasets if have.available.get(ds, 0) < ROLLBACK_MIN_FREE]
    if short:
        raise StateError(f"the pool of {short[0]} is full ({have.available.get(short[0], 0)} bytes free, "
                         f"need {ROLLBACK_MIN_FREE}): free some space, nothing was changed", vm=vm.name)


def rollback(vm, have, target, newer):
    """Destroy the newer sets, then roll every dataset back to target; checks room and clones
    before changing anything."""
    check_room(vm, have, target)
    if newer:
        destroy_sets(vm, newer)
    for ds in target.datasets:
        zfs.lzc_rollback_to(ds, zfs.snapshot_name(ds, target.name))


def prune_plan(vm, cfg, keep):
    """(Listing, the oldest sets to destroy to keep the newest `keep`)."""
    have = listing(datasets_of(vm, cfg))
    return have, have.sets[:max(0, len(have.sets) - keep)]


@contextmanager
def hold(vm, what, running_ok=False):
    """The VM's lock while a snap command changes its data. With running_ok, a VM that runs
    (its supervisor holds the lock, so no other command can) is worked on without it."""
    try:
        got = lock.hold_vm(vm.run, what)
    except StateError:
        found = lock.holder(vm.run.lock)
        if not (running_ok and found is not None and not found[1]):
            raise
        got = None
    try:
        yield got
    finally:
        if got is not None:
            got.release()


def fmt_when(epoch, parsable):
    if parsable:
        return str(epoch)
    return time.strftime("%a %b %d %H:%M %Y", time.localtime(int(epoch)))
