"""ZFS names: a snapshot is DATASET@SNAP. The one place that joins and splits them, so that no
caller writes the '@' itself (tests/unit/test_zfs_door.py holds kvm/ to that). Plain functions:
this module imports nothing, and whatever loads kvm.zfs pays nothing for it."""


def snapshot_name(dataset, snap):
    """The full name of snapshot `snap` of `dataset`: DATASET@SNAP."""
    return f"{dataset}@{snap}"


def split_snapshot(name):
    """(dataset, snapshot) of DATASET@SNAP; (name, "") when `name` is a dataset, no snapshot."""
    dataset, _, snap = name.partition("@")
    return dataset, snap


def is_snapshot(name):
    """True when `name` is a snapshot's (DATASET@SNAP), not a dataset's."""
    return "@" in name
