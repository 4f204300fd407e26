"""Who depends on whom: ZFS clones, found by their `origin` (zfs-fuse has no `clones` property),
in one zfs call over the pool. vmdestroy, snap destroy and image destroy refuse with the names."""

import re

from kvm import zfs

# the snapshots kvm takes for a dependent: vmclone's clone-DST-..., image publish's publish-NAME-...
OWN_SNAPSHOT_RE = re.compile(r"(clone|publish)-[A-Za-z0-9._-]+-[0-9]{14}\Z")


def clones_by_origin(pool):
    """{snapshot: [clone datasets]} for every clone in the pool."""
    rows = zfs.get_props([pool], ["origin"], recursive=True)
    out = {}
    for name, props in rows.items():
        origin = props.get("origin")
        if origin and not zfs.is_snapshot(name):
            out.setdefault(origin, []).append(name)
    return out


def clones_of(dataset, table=None):
    """The clones of any snapshot of `dataset` (not of its children), sorted."""
    table = clones_by_origin(dataset.split("/")[0]) if table is None else table
    return sorted(c for snap, users in table.items() if zfs.split_snapshot(snap)[0] == dataset for c in users)


def dependents(dataset, table=None):
    """Every dataset that depends on `dataset`, clones of clones too, deepest first: the order
    they can be destroyed in."""
    table = clones_by_origin(dataset.split("/")[0]) if table is None else table
    out = []
    todo = [dataset]
    while todo:
        for clone in clones_of(todo.pop(0), table):
            if clone not in out:
                out.append(clone)
                todo.append(clone)
    return list(reversed(out))


def origin_of(dataset):
    """The snapshot `dataset` is a clone of, or None."""
    origin = zfs.get_prop(dataset, "origin")
    return origin if origin and origin != "-" and zfs.is_snapshot(origin) else None


def origins_in(dataset):
    """The snapshots `dataset` and its descendants are clones of (vmclone clones a VM's zvols
    below it too), the dataset's own first; one zfs call."""
    rows = zfs.get_props([dataset], ["origin"], recursive=True)
    out = []
    for name in sorted(rows):
        origin = rows[name].get("origin")
        if origin and origin != "-" and zfs.is_snapshot(origin) and not zfs.is_snapshot(name):
            out.append(origin)
    return out


def release_origin(origin):
    """After a clone was destroyed: its origin snapshot goes too when kvm took it for a clone
    (vmclone's, publish's) and nothing is cloned from it any more; a snapshot of the user's stays.
    True when it went."""
    if not origin or not OWN_SNAPSHOT_RE.match(zfs.split_snapshot(origin)[1]):
        return False
    if clones_by_origin(origin.split("/")[0]).get(origin):
        return False
    try:
        zfs.lzc_destroy_snaps([origin])
    except zfs.ZFSError:
        return False  # gone already, or cloned meanwhile: left as it is
    return True
