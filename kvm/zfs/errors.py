"""ZFS failures, named as in `libzfs_core.exceptions`, and how a `zfs` command's stderr maps onto them."""

from kvm.errors import EXISTS, NOT_FOUND, REFUSED, KvmError
from kvm.zfs.names import is_snapshot


class ZFSError(KvmError):
    """Any ZFS failure."""

    def __init__(self, message, name=None):
        super().__init__(f"{name}: {message}" if name else message)
        self.name = name


class DatasetNotFound(ZFSError):
    """The dataset does not exist."""

    exit_status = NOT_FOUND
    kind = "not-found"


class DatasetExists(ZFSError):
    """The dataset already exists."""

    exit_status = EXISTS
    kind = "exists"


class ParentNotFound(ZFSError):
    """The parent dataset or pool does not exist."""

    exit_status = NOT_FOUND
    kind = "not-found"


class SnapshotExists(ZFSError):
    """The snapshot already exists."""

    exit_status = EXISTS
    kind = "exists"


class SnapshotNotFound(ZFSError):
    """The snapshot does not exist."""

    exit_status = NOT_FOUND
    kind = "not-found"


class SnapshotNotLatest(ZFSError):
    """A rollback target is not the most recent snapshot."""


class SnapshotIsCloned(ZFSError):
    """The snapshot has dependent clones."""

    exit_status = REFUSED
    kind = "refused"


class DatasetBusy(ZFSError):
    """The dataset is busy (mounted and in use, or held)."""

    exit_status = REFUSED
    kind = "refused"


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


BY_NAME = {cls.__name__: cls for cls in (
    ZFSError, DatasetNotFound, DatasetExists, ParentNotFound, SnapshotExists, SnapshotNotFound,
    SnapshotNotLatest, SnapshotIsCloned, DatasetBusy, NameInvalid, NameTooLong, NoSpace, PoolsDiffer,
    PropertyInvalid)}

# (text in the zfs command's stderr, class); None: decided by whether the name is a snapshot
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


def classify(name, stderr):
    """The ZFSError a failed `zfs` command's stderr stands for."""
    text = stderr.strip().splitlines()
    msg = text[-1] if text else "zfs failed"
    low = stderr.lower()
    snapshot = is_snapshot(name or "")
    for needle, cls in _PATTERNS:
        if needle in low:
            if cls is None and needle == "dataset does not exist":
                cls = SnapshotNotFound if snapshot else DatasetNotFound
            elif cls is None:
                cls = SnapshotExists if snapshot else DatasetExists
            return cls(needle, name)
    return ZFSError(msg, name)
