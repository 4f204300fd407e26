"""All-or-nothing creation of a dataset, even if the creating process is killed with -9.

The dataset is created with the user property kvm:creating=<pid>. A watchdog
process, forked from the creator (no second interpreter to start: the creator
would wait for it at the commit) into its own session (so Ctrl-C and kill of the
process group miss it), holds a pipe to the creator. If the pipe closes without "commit" — normal failure,
exception, or kill -9 — the watchdog destroys the dataset, but only when it still
carries kvm:creating=<that pid>, so it can never destroy someone else's dataset.

If both die (power loss), the dataset keeps its marker: the next vmcreate finds it
with `stale()` (the marker set on the dataset itself, its pid no longer running)
and destroys it before going on.
"""

import os
import signal

from kvm import host, zfs

CREATING = "kvm:creating"
TITLE = "kvm-txn"   # the watchdog's process name (ps -o comm): its command line is its creator's


class Transaction:
    """Context manager: create `dataset` under a watchdog; commit() keeps it.

    origin: a snapshot to clone instead of creating an empty filesystem (vmcreate --from,
    vmclone, image publish). own_snap: a snapshot this transaction takes first (vmclone's
    clone-DST-...), or a list of them taken at once (a VM's dataset and its zvols); the watchdog
    destroys them too unless committed, so a kill leaves none."""

    def __init__(self, dataset, origin=None, own_snap=None):
        self.dataset = dataset
        self.origin = origin
        self.own_snap = [own_snap] if isinstance(own_snap, str) else list(own_snap or ())
        self.proc = None
        self.committed = False

    def __enter__(self):
        if not host.dry_run():
            host.debug_line(f"watchdog of {self.dataset} (forked) &")
            self.proc = fork_watchdog(self.dataset, self.own_snap)
        props = {CREATING: str(os.getpid())}
        if self.own_snap:
            zfs.lzc_snapshot(self.own_snap)
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
        pid, fd = self.proc
        try:
            os.write(fd, b"commit\n" if self.committed else b"abort\n")
        except OSError:
            pass
        os.close(fd)
        try:
            os.waitpid(pid, 0)  # on failure the dataset is gone before we report the error
        except ChildProcessError:
            pass
        return False


def fork_watchdog(dataset, own_snap):   # own_snap: a list of snapshot names (a fork: no exec)
    """Fork the watchdog of `dataset`: (its pid, the write end of its pipe). The child keeps only
    the pipe (as its stdin) and the standard output and error: no lock or other file of the creator."""
    creator = os.getpid()
    r, w = os.pipe()
    # a Ctrl-C between the fork and the child's setsid must not kill the watchdog: held back
    # in both until the child left the terminal's process group and ignores it
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.close(r)
        return pid, w
    code = 0
    try:
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.close(w)
        os.dup2(r, 0)
        os.closerange(3, max(os.sysconf("SC_OPEN_MAX"), r + 1))  # close_range(2) where there is one
        _title()
        watchdog(dataset, str(creator), own_snap, fd=0)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _title():
    """Name the watchdog kvm-txn in ps, where the host lets a process rename itself."""
    try:
        with open("/proc/self/comm", "w") as fh:
            fh.write(TITLE)
    except OSError:
        pass


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


def watchdog(dataset, pid, own_snap=(), fd=0):
    """Read the creator's pipe (fd) until it closes; destroy the dataset (then the snapshots it was
    cloned from, when the transaction took them: a name or a list) unless it committed."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    if b"commit" in data:
        return 0
    try:
        if zfs.get_prop(dataset, CREATING) == pid:
            zfs.destroy_recursive(dataset)
    except zfs.ZFSError:
        pass
    if own_snap:
        try:
            zfs.lzc_destroy_snaps([own_snap] if isinstance(own_snap, str) else list(own_snap))
        except zfs.ZFSError:
            pass  # still cloned by someone else, or never taken
    return 0
