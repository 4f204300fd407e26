"""All-or-nothing creation of a dataset, even if the creating process is killed with -9.

The dataset is created with the user property kvm:creating=<pid>. A watchdog
process, in its own session (so Ctrl-C and kill of the process group miss it),
holds a pipe to the creator. If the pipe closes without "commit" — normal failure,
exception, or kill -9 — the watchdog destroys the dataset, but only when it still
carries kvm:creating=<that pid>, so it can never destroy someone else's dataset.

If both die (power loss), the dataset keeps its marker: the next vmcreate finds it
with `stale()` (the marker set on the dataset itself, its pid no longer running)
and destroys it before going on.
"""

import os
import sys

from kvm import host, zfs

CREATING = "kvm:creating"


class Transaction:
    """Context manager: create `dataset` under a watchdog; commit() keeps it.

    origin: a snapshot to clone instead of creating an empty filesystem (vmcreate --from,
    vmclone, image publish). own_snap: a snapshot this transaction takes first (vmclone's
    clone-DST-...); the watchdog destroys it too unless committed, so a kill leaves none."""

    def __init__(self, dataset, origin=None, own_snap=None):
        self.dataset = dataset
        self.origin = origin
        self.own_snap = own_snap
        self.proc = None
        self.committed = False

    def __enter__(self):
        if not host.dry_run():
            env = dict(os.environ)
            self.proc = host.spawn([sys.executable, "-m", "kvm.zfs.txn", self.dataset, str(os.getpid()),
                                    self.own_snap or ""], stdin=-1, new_session=True, env=env)
        props = {CREATING: str(os.getpid())}
        if self.own_snap:
            zfs.lzc_snapshot([self.own_snap])
        if self.origin:
            clone(self.origin, self.dataset, props)
        else:
            zfs.lzc_create(self.dataset, props=props)
        return self

    def commit(self):
        """Keep the dataset: clear the marker, tell the watchdog."""
        zfs.inherit_prop(self.dataset, CREATING)
        self.committed = True

    def __exit__(self, exc_type, exc, tb):
        if self.proc is None:
            return False
        try:
            self.proc.stdin.write(b"commit\n" if self.committed else b"abort\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()  # on failure the dataset is gone before we report the error
        return False


def clone(origin, dataset, props):
    """zfs clone -o PROP=VALUE ORIGIN DATASET (zfs-fuse and OpenZFS both take -o here)."""
    zfs.check_name(dataset)
    opts = [x for key, value in props.items() for x in ("-o", f"{key}={value}")]
    zfs.run(["clone", *opts, origin, dataset], dataset)


def stale(parent, rows=None):
    """Children of `parent` that a dead creator left marked kvm:creating (one zfs call, or
    none when `rows`, zfs.get_props(..., with_source=True) of them, are given)."""
    if rows is None:
        rows = zfs.get_props([parent], [CREATING], recursive=True, depth=1, with_source=True)
    out = []
    for name, props in rows.items():
        value, source = props.get(CREATING, (None, "-"))
        # only a marker set on the dataset itself is ours; an inherited one belongs to a parent
        if name.startswith(parent + "/") and source == "local" and (value or "").isdigit() \
                and not host.pid_alive(int(value)):
            out.append(name)
    return out


def clean_stale(names):
    """Destroy the half-made datasets `stale()` found; those already gone are fine."""
    for name in names:
        try:
            zfs.destroy_recursive(name)
        except zfs.DatasetNotFound:
            pass


def watchdog(dataset, pid, own_snap=""):
    """Wait for the creator's pipe to close; destroy the dataset (then the snapshot it was
    cloned from, when the transaction took it) unless it committed."""
    data = sys.stdin.buffer.read()
    if b"commit" in data:
        return 0
    try:
        if zfs.get_prop(dataset, CREATING) == pid:
            zfs.destroy_recursive(dataset)
    except zfs.ZFSError:
        pass
    if own_snap:
        try:
            zfs.lzc_destroy_snaps([own_snap])
        except zfs.ZFSError:
            pass  # still cloned by someone else, or never taken
    return 0


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(watchdog(*sys.argv[1:4]))
