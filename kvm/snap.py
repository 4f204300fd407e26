"""Snapshots of a VM: its dataset and every dataset or zvol its set.conf points at, taken together."""

import re
import time

from . import zfs
from .errors import NotFound, StateError, UsageError

SNAP_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}\Z")


def check_snap_name(vm_name, snap):
    """Refuse a snapshot name ZFS (or our % ranges) cannot take."""
    if not SNAP_RE.match(snap or ""):
        shown = (snap or "").encode("unicode_escape").decode()
        raise UsageError(f"invalid snapshot name '{shown}': use letters, digits, '_', '.', ':' and '-' "
                         f"(no '@', '/', '%' or spaces)", vm=vm_name)


def default_name():
    """A timestamp name, e.g. 2026-11-23_18.05.00."""
    return time.strftime("%Y-%m-%d_%H.%M.%S")


def _mounts(rows):
    return sorted(((p.get("mountpoint") or "", n) for n, p in rows.items()
                   if (p.get("mountpoint") or "").startswith("/")), reverse=True)


def datasets_of(vm, cfg):
    """The VM's dataset first, then the other datasets/zvols its disk, ISO excluded, and Devices use."""
    main = vm.dataset()
    paths = [cfg.disk] if cfg.disk else []
    for dev in cfg.devices:
        if dev.emulation in ("nvme", "virtio-blk", "ahci-hd", "ahci", "virtio-scsi"):
            src = dev.source.split(":", 1)[-1] if dev.emulation == "ahci" else dev.source
            if src.startswith("/"):
                paths.append(src)
    extra = []
    rows = None
    for path in paths:
        if path.startswith("/dev/zvol/"):
            extra.append(path[len("/dev/zvol/"):])
            continue
        if path.startswith(str(vm.dir) + "/"):
            continue
        if rows is None:
            rows = zfs.get_props([vm.root.dataset().split("/")[0]], ["mountpoint"], recursive=True)
        for mnt, name in _mounts(rows):
            if path == mnt or path.startswith(mnt.rstrip("/") + "/"):
                extra.append(name)
                break
    out = [main]
    for name in extra:
        if name not in out:
            out.append(name)
    return out


def snapshots(dataset):
    """[(name, props)] of the dataset's snapshots, oldest first: one zfs call."""
    rows = zfs.get_props([dataset], ["type", "used", "referenced", "creation", "createtxg"],
                         recursive=True, depth=1)
    snaps = [(n, p) for n, p in rows.items() if p.get("type") == "snapshot" and n.split("@")[0] == dataset]
    snaps.sort(key=lambda item: int(item[1].get("createtxg") or item[1].get("creation") or 0))
    return [(n.split("@", 1)[1], p) for n, p in snaps]


def create(vm, cfg, snap):
    """Snapshot every dataset of the VM at once (all or none)."""
    check_snap_name(vm.name, snap)
    names = [f"{ds}@{snap}" for ds in datasets_of(vm, cfg)]
    try:
        zfs.lzc_snapshot(names)
    except zfs.SnapshotExists:
        raise StateError(f"snapshot '{snap}' already exists", vm=vm.name) from None
    except zfs.PoolsDiffer:
        raise StateError("its datasets lie in different pools: ZFS cannot snapshot them together "
                         f"({', '.join(names)})", vm=vm.name) from None
    return names


def select(vm, spec):
    """Snapshot names for `spec`: one name, or a zfs-style range a%b, %b, a% (inclusive)."""
    have = [n for n, _ in snapshots(vm.dataset())]
    if "%" not in spec:
        check_snap_name(vm.name, spec)
        if spec not in have:
            raise NotFound(f"no snapshot '{spec}' (snap list {vm.name} shows them)", vm=vm.name)
        return [spec]
    first, _, last = spec.partition("%")
    for part in (first, last):
        if part:
            check_snap_name(vm.name, part)
            if part not in have:
                raise NotFound(f"no snapshot '{part}' (snap list {vm.name} shows them)", vm=vm.name)
    lo = have.index(first) if first else 0
    hi = have.index(last) if last else len(have) - 1
    if lo > hi:
        raise UsageError(f"range '{spec}': '{first}' is newer than '{last}'", vm=vm.name)
    return have[lo:hi + 1]


def clones_of(vm, snap_names, datasets):
    """{snapshot: [clones]} among the given snapshots (one zfs call over the pool)."""
    pool = vm.dataset().split("/")[0]
    rows = zfs.get_props([pool], ["origin"], recursive=True)
    wanted = {f"{ds}@{s}" for ds in datasets for s in snap_names}
    out = {}
    for name, props in rows.items():
        origin = props.get("origin")
        if origin in wanted:
            out.setdefault(origin, []).append(name)
    return out


def destroy(vm, cfg, spec):
    """Destroy one snapshot or a range, on every dataset of the VM; refuse cloned ones."""
    names = select(vm, spec)
    dsets = datasets_of(vm, cfg)
    clones = clones_of(vm, names, dsets)
    if clones:
        snap, users = next(iter(clones.items()))
        raise StateError(f"snapshot {snap} has clones: {', '.join(users)}; destroy or promote them first",
                         vm=vm.name)
    zfs.lzc_destroy_snaps([f"{ds}@{s}" for s in names for ds in dsets])
    return names


def rollback_plan(vm, snap, older_ok):
    """(target snapshot, newer snapshots that would be destroyed)."""
    have = [n for n, _ in snapshots(vm.dataset())]
    if not have:
        raise NotFound("has no snapshot to roll back to", vm=vm.name)
    target = snap or have[-1]
    check_snap_name(vm.name, target)
    if target not in have:
        raise NotFound(f"no snapshot '{target}' (snap list {vm.name} shows them)", vm=vm.name)
    newer = have[have.index(target) + 1:]
    if newer and not older_ok:
        raise StateError(f"'{target}' is not the latest snapshot ({', '.join(newer)} came after): "
                         f"use -r to destroy those and roll back", vm=vm.name)
    return target, newer


def rollback(vm, cfg, target, newer):
    """Destroy the newer snapshots, then roll every dataset back to target."""
    dsets = datasets_of(vm, cfg)
    if newer:
        clones = clones_of(vm, newer, dsets)
        if clones:
            snap, users = next(iter(clones.items()))
            raise StateError(f"snapshot {snap} has clones: {', '.join(users)}", vm=vm.name)
        zfs.lzc_destroy_snaps([f"{ds}@{s}" for s in newer for ds in dsets])
    for ds in dsets:
        if zfs.lzc_exists(f"{ds}@{target}"):
            zfs.lzc_rollback_to(ds, f"{ds}@{target}")


def prune_plan(vm, keep):
    """Snapshot names to destroy to keep the newest `keep`."""
    have = [n for n, _ in snapshots(vm.dataset())]
    return have[:max(0, len(have) - keep)]


def fmt_when(epoch, parsable):
    if parsable:
        return str(epoch)
    return time.strftime("%a %b %d %H:%M %Y", time.localtime(int(epoch)))

