"""Who depends on whom: ZFS clones, found by their `origin` (zfs-fuse has no `clones` property),
in one zfs call over the pool. vmdestroy, snap destroy and image destroy refuse with the names."""

from kvm import zfs


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
