"""Finding the install root: --root, else KVM_ROOT, else the launcher's folder, else the marked
dataset (with several, the one holding the current folder)."""

import os
from pathlib import Path

from kvm import zfs
from kvm.errors import KvmError, NotFound, UsageError
from kvm.host import runfiles

ROOT_PROP = "kvm:root"
ROOTS_ENV = "KVM_ROOTS"  # the host's roots, for the checks of names bhyve shares host-wide
MARKER = ".kvm-root"


def is_root_dir(path):
    """True when `path` looks like an install root: ours (marker) or the shell toolkit's (functions).
    A folder that cannot be read (a FUSE mount whose daemon died: "Transport endpoint is not
    connected") is no root: _probe() says why, for the errors that name it."""
    return _probe(path)[0]


def _probe(path):
    """(looks like a root, why it cannot be read or None), from one look. Path.is_dir() raises on
    such errors: only "no such file" reads as False."""
    path = Path(path)
    try:
        return (path / "vm").is_dir() and ((path / MARKER).is_file() or (path / "functions").is_file()), None
    except OSError as exc:
        return False, f"{exc.filename or path}: {exc.strerror or exc}"


class Root:
    """An install root folder and (found lazily) its dataset."""

    def __init__(self, path, dataset=None):
        self.path = Path(path)
        self._dataset = dataset

    def __repr__(self):
        return f"Root({str(self.path)!r})"

    @property
    def vm_dir(self):
        """The folder holding one sub-folder per VM."""
        return self.path / "vm"

    def dataset(self):
        """The root's ZFS dataset (asked of ZFS: the mountpoint is the truth)."""
        if self._dataset is None:
            name = zfs.dataset_of_path(self.path)
            if name is None:
                raise NotFound(f"{self.path} is not the mountpoint of a ZFS dataset")
            self._dataset = name
        return self._dataset

    def vm_dataset(self):
        """The dataset holding the VM datasets (ROOT/vm)."""
        return self.dataset() + "/vm"


def find_root(explicit=None, launcher_dir=None):
    """The install root this command works on (see the README, 'Finding the install')."""
    for given, how in ((explicit, "--root"), (os.environ.get("KVM_ROOT"), "KVM_ROOT")):
        if given:
            path = Path(given).resolve()
            looks, unreadable = _probe(path)
            if unreadable:
                raise NotFound(f"{path} (from {how}) cannot be read: {unreadable}")
            if not looks:
                raise NotFound(f"{path} (from {how}) is not a kvm install root (no vm/ folder or marker)")
            return Root(path)
    if launcher_dir and is_root_dir(launcher_dir):
        return Root(Path(launcher_dir).resolve())
    return _marked_root()


def _marked_root():
    roots, unreadable = [], []
    for name, mnt in sorted(zfs.marked_mountpoints(ROOT_PROP).items()):
        if not mnt.startswith("/"):
            continue
        looks, why = _probe(mnt)
        if why:
            unreadable.append(why)  # a dead mount is nobody's root: the others are still found
        elif looks:
            roots.append(Root(Path(mnt), name))
    if not roots:
        also = f" (marked but unreadable: {'; '.join(unreadable)})" if unreadable else ""
        raise NotFound(f"no kvm install found{also}: run kvminst, or give --root DIR or KVM_ROOT")
    if len(roots) > 1:
        here = _holding_cwd(roots)
        if here is not None:
            return here
        where = ", ".join(str(r.path) for r in roots)
        raise UsageError(f"several kvm installs found ({where}): choose one with --root DIR or KVM_ROOT, "
                         f"or run the command inside one")
    return roots[0]


def _holding_cwd(roots):
    """The root the current folder lies in (the deepest, should roots nest), or None."""
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        return None  # the current folder was removed
    inside = [r for r in roots if cwd == r.path.resolve() or r.path.resolve() in cwd.parents]
    return max(inside, key=lambda r: len(r.path.resolve().parts), default=None)


def other_roots(root):
    """The other install roots of this host: KVM_ROOTS (a colon list) when set, else the marked
    datasets', and those with run files (RUN_DIR/ROOT_ID/.root); only those that are roots still."""
    if ROOTS_ENV in os.environ:
        marked = [p for p in os.environ[ROOTS_ENV].split(":") if p]
    else:
        try:
            marked = list(zfs.marked_mountpoints(ROOT_PROP).values())
        except KvmError:
            marked = []
    here = str(root.path)
    found = {p for p in marked + runfiles.recorded_roots() if p.startswith("/") and p != here}
    return [Root(Path(p)) for p in sorted(found) if is_root_dir(p)]
