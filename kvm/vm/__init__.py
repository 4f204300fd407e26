"""A VM by name: its dataset, folder, files and runtime state; listing every VM in one pass."""

import json
import os
import re
from pathlib import Path

from kvm import host, zfs
from kvm.errors import AlreadyExists, ConfigError, KvmError, NotFound, Refused, UsageError
from kvm.host import lock, runfiles
from kvm.hypervisor import current as hypervisor
from kvm.vm.root import other_roots

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,30}\Z")
RUN_FILE = "run"
CONF_FILE = "set.conf"


def check_name(name, what="VM name"):
    """Refuse a name bhyve or our files cannot take: 1-31 of letters, digits, . _ -, first alphanumeric."""
    if not name:
        raise UsageError(f"the {what} is empty")
    shown = name.encode("unicode_escape").decode() if not name.isprintable() else name
    if len(name) > 31:
        raise UsageError(f"invalid {what} '{shown}': longer than 31 characters (bhyve's limit)")
    if not NAME_RE.match(name):
        raise UsageError(f"invalid {what} '{shown}': use letters, digits, '.', '_' and '-', "
                         f"starting with a letter or digit")


class Vm:
    """One VM of an install root."""

    def __init__(self, root, name, run=None):
        self.root, self.name = root, name
        self._config = None   # set.conf as config() read and validated it: one read per command
        self._run = run       # where its run files are, found once per command (see `run`)
        self._elsewhere = False  # not asked yet (see elsewhere())

    def __repr__(self):
        return f"Vm({self.name!r})"

    @property
    def dir(self):
        """The VM folder."""
        return self.root.vm_dir / self.name

    @property
    def conf_path(self):
        return self.dir / CONF_FILE

    @property
    def run_path(self):
        return self.dir / RUN_FILE

    def exists(self):
        """A folder counts as a VM when it holds both set.conf and run."""
        return self.conf_path.is_file() and self.run_path.is_file()

    def check_files(self):
        """set.conf and run are files of the VM's own, not symbolic links: every read refuses a link,
        and so must a command that copies, rewrites or installs from them (ConfigError)."""
        for path in (self.conf_path, self.run_path):
            if path.is_symlink():
                raise ConfigError(f"{path.name} ({path}): is a symbolic link: refusing it", vm=self.name)

    @property
    def run(self):
        """Where the VM's run files are (lock, config lock, state, stop request, qemu's sockets):
        RUN_DIR/ROOT_ID/NAME/, or the legacy place while an earlier version's supervisor runs
        it (runfiles.for_vm); found once for the life of this Vm (one command)."""
        if self._run is None:
            self._run = runfiles.for_vm(self.root.path, self.name, runs=_runs)
        return self._run

    def dataset(self):
        """The VM's dataset: ROOT/vm/NAME."""
        return f"{self.root.vm_dataset()}/{self.name}"

    def config(self, *, evaluate=False, fresh=False, startable=False):
        """The validated set.conf. Every reader gets evaluate=False: nothing is run, what needs sh
        is reported unevaluated. The file is read once for the life of this Vm (one command):
        later calls get the same VmConfig. fresh=True reads it again (and keeps that), for a
        reader that needs the file as it is now (the supervisor, which outlives many edits);
        a command that rewrote set.conf calls forget_config().

        evaluate=True is the launch's read only, always of the file as it is now and never kept:
        set.conf, run, functions and their folders must be root's and writable by root only, then
        sh may evaluate set.conf, under the config lock edits hold (kvm/config.py, kvm/edit.py).
        startable: refuse a set.conf no VM can start from (config.validate), read afresh."""
        from kvm.conf import config
        if not evaluate:
            if fresh or startable or self._config is None:
                self._config = None  # a fresh read that fails keeps nothing older
                self._config = config.load(self.name, str(self.dir), evaluate=False, startable=startable)
            return self._config
        from kvm.conf import hooks
        with lock.hold_config(self.run, "supervisor read"):
            hooks.check_safe(self)
            return config.load(self.name, str(self.dir), evaluate=True)

    def forget_config(self):
        """After a write of set.conf: the next config() reads the file again."""
        self._config = None


def _runs(run, pid):
    """pid is the hypervisor running the VM whose run files are `run`."""
    return hypervisor().is_own_process(host.process_args(pid), run)


def check_free_on_host(root, name, spare=None):
    """Where the hypervisor's VM names are host-wide (bhyve: /dev/vmm/NAME, its title and the
    console /dev/nmdmNAMEA, as the shell toolkit has them), refuse a name a VM of another install
    root of this host has: the two could not run together, and each would take the other's
    console. spare(vm): True for another root's VM that may share the name (the one vmimport
    imports, the one a vmrecv --local stream comes from)."""
    if not hypervisor().host_wide_names:
        return
    for other in other_roots(root):
        there = Vm(other, name)
        if there.exists() and not (spare and spare(there)):
            raise AlreadyExists(f"the name is taken on this host by the VM {name} of {other.path}: bhyve's VM "
                                f"names are host-wide (/dev/vmm/{name}, the console /dev/nmdm{name}A), one VM "
                                f"of a name per host whatever its root; choose another name", vm=name)


def get_vm(root, name):
    """The VM `name`, which must exist."""
    check_name(name)
    vm = Vm(root, name)
    if not vm.exists():
        hint = remount(vm)
        if vm.exists():
            return vm
        raise NotFound(hint or f"no such VM (no {CONF_FILE} and {RUN_FILE} in {vm.dir})", vm=name,
                       hint=None if hint else f"vmlist lists the VMs of {root.path}")
    return vm


def remount(vm):
    """For a VM whose dataset exists unmounted (a command killed between an unmount and its
    mount: zfs-fuse's busy rename or destroy): mount it again when root may (the dataset is
    the VM's own, under ROOT/vm); returns the hint for the user, or None when it was mounted."""
    hint = unmounted_hint(vm)
    if hint and host.is_root() and not host.dry_run():
        _mount_unless_busy(vm)
    return hint


def _mount_unless_busy(vm):
    """Mount the VM's dataset under its lock; a dataset that another command holding the lock
    has unmounted (zfs-fuse's rollback, a busy rename) is its business: refuse, never race it."""
    found = lock.holder(vm.run.lock)
    if found is not None and found[0] != os.getpid():
        raise Refused(f"is busy: {lock.describe_holder(found)} is working on its dataset; "
                         f"try again when it is done", vm=vm.name)
    if found is not None:
        zfs.mount_if_there(vm.dataset())
        return
    with lock.hold_vm(vm.run, "remount"):
        if unmounted_hint(vm):
            zfs.mount_if_there(vm.dataset())


def unmounted_hint(vm):
    """How to recover when the VM's dataset exists but is not mounted (a vmrename or vmdestroy
    killed half-way), else None. Asks ZFS, so only on the not-found path."""
    try:
        dataset = vm.dataset()
        if not zfs.unmounted(dataset):
            return None
    except KvmError:
        return None
    return f"its dataset {dataset} exists but is not mounted (a command killed half-way?): zfs mount {dataset}"


def list_vms(root):
    """Every VM of the root, sorted by name: one directory scan, no per-VM process."""
    try:
        entries = sorted(os.scandir(root.vm_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if entry.is_dir() and NAME_RE.match(entry.name):
            vm = Vm(root, entry.name)
            if vm.exists():
                out.append(vm)
    return out


# ------------------------------------------------------------------------ runtime state

def read_state(vm):
    """The supervisor's state file as a dict ({} when absent or unreadable)."""
    return vm.run.read_state()


def write_state(vm, state):
    """Write the state file atomically."""
    vm.run.make_folder()
    host.write_file(vm.run.state, json.dumps(state, sort_keys=True) + "\n")


def lock_held(vm):
    """True when a supervisor holds the VM's lock (a shared probe lock, never blocking)."""
    return lock_holder(vm) is not None


def lock_holder(vm):
    """None when nobody holds the VM's lock; else the pid the holder wrote in it (0 while it is
    still writing it)."""
    found = lock.holder(vm.run.lock)
    return None if found is None else found[0]


class Runtime:
    """What is running for a VM: pids are 0 when none; times are epoch seconds."""

    def __init__(self, name, allocated=False):
        self.name = name
        self.supervisor = 0       # pid of our supervisor
        self.bhyve = 0            # pid of bhyve
        self.allocated = allocated  # the hypervisor keeps the VM allocated
        self.started = 0.0        # when the VM was started (first launch)
        self.booted = 0.0         # when the current bhyve was launched
        self.vnc_port = 0
        self.boots = 0
        self.crashed = ""         # with nothing running: the crash its last run ended with (reason)
        self.elsewhere = None     # bhyve: the other root whose VM of this name runs (names are host-wide)
        self.agent = None         # the guest agent's last answer (Agent=yes): {"os", "addresses"}

    @property
    def active(self):
        """Anything running for this VM."""
        return bool(self.supervisor or self.bhyve)

    @property
    def state(self):
        """running | orphaned | starting | allocated | crashed | stopped."""
        if self.bhyve:
            return "running" if self.supervisor else "orphaned"
        if self.supervisor:
            return "starting"
        if self.allocated:
            return "allocated"
        return "crashed" if self.crashed else "stopped"


def runtimes(vms):
    """Runtime of many VMs (of one root): one listing of its run folder, of the legacy place and
    of the allocated VMs; details only where needed."""
    if not vms:
        return []
    folder = runfiles.root_dir(vms[0].root.path)
    try:
        ran = set(os.listdir(folder))
    except OSError:
        ran = set()
    old = runfiles.legacy_names()
    allocated = hypervisor().allocated(folder)
    out = []
    for vm in vms:
        if vm.name in ran or vm.name in old or vm.name in allocated:
            if vm._run is None:
                vm._run = runfiles.for_vm(vm.root.path, vm.name, old, runs=_runs)
            out.append(runtime(vm))
        else:
            out.append(Runtime(vm.name))
    return out


def runtime(vm, scan=True):
    """The VM's runtime state from its lock, state file and the hypervisor — never `ps | grep`."""
    name, run = vm.name, vm.run
    hv = hypervisor()
    st = run.read_state()
    rt = Runtime(name, allocated=hv.is_allocated(run))
    sup = int(st.get("supervisor") or 0)
    # the supervisor named in the state file counts only if it is the lock's holder: after a
    # crash both files stay behind, and their pids may belong to other programs by now
    if sup and lock_holder(vm) == sup and host.pid_alive(sup):
        rt.supervisor = sup
    pid = int(st.get("bhyve") or 0)
    # With its supervisor alive, the recorded bhyve is that supervisor's child, whose pid cannot
    # be reused before the supervisor reaps it and records bhyve=0: no need to look at its
    # arguments (which costs a `ps` on a FreeBSD without procfs). Without one, make sure.
    if pid and host.pid_alive(pid) and (rt.supervisor or hv.is_own_process(host.process_args(pid), run)):
        rt.bhyve = pid
        rt.started, rt.booted = float(st.get("started") or 0), float(st.get("booted") or 0)
        rt.vnc_port, rt.boots = int(st.get("vnc_port") or 0), int(st.get("boots") or 0)
        rt.agent = st.get("agent") if isinstance(st.get("agent"), dict) else None
    elif rt.allocated and not rt.supervisor and hv.host_wide_names and elsewhere(vm):
        # bhyve's names are host-wide: what is allocated under this name is another root's VM
        rt.allocated, rt.elsewhere = False, elsewhere(vm)
    elif rt.allocated and scan:
        rt.bhyve = hv.find_process(run) or 0
    if rt.bhyve and not rt.supervisor:
        # no supervisor in the run files (the run dir was removed under a running VM): the
        # hypervisor's parent, when it is our supervisor of this VM, still is
        parent = host.parent_pid(rt.bhyve)
        if parent > 1 and is_supervisor_of(host.process_args(parent), name):
            rt.supervisor = parent
    if rt.supervisor and not rt.bhyve:
        rt.started, rt.vnc_port = float(st.get("started") or 0), int(st.get("vnc_port") or 0)
    if not rt.active and not st.get("stop_method") and st.get("last_code") is not None \
            and st.get("last_exit") in hv.crash_reasons:
        rt.crashed = st["last_exit"]  # the supervisor ended on a crash (a stop would have said so)
    return rt


def is_supervisor_of(args, name):
    """True when a process's arguments are our supervisor of VM `name`: a detached one
    (`python -m kvm.run.detached start ... NAME`) or a foreground `start NAME` (./start, kvm start)."""
    if not args or args[-1] != name:
        return False
    if "kvm.run.detached" in args:
        return True
    words = [os.path.basename(a) for a in args[:-1] if not a.startswith("-")]
    return "start" in words and any(w in ("start", "kvm") or w.startswith("python") for w in words[:2])


def check_not_running_elsewhere(vm, rt=None):
    """Before a start (or its dry run): refuse a VM whose name another install root's VM runs
    under, where names are host-wide (bhyve); rt: the VM's Runtime, when known."""
    hv = hypervisor()
    if not hv.host_wide_names or (rt is not None and rt.bhyve):
        return
    other = (rt.elsewhere if rt is not None else None) or elsewhere(vm)
    if other:
        raise Refused(f"the name is in use on this host by the VM {vm.name} of {other}, which runs: "
                      f"{hv.name}'s VM names are host-wide (one VM of a name per host): stop it there "
                      f"first, or rename one of them", vm=vm.name)


def elsewhere(vm):
    """The root path of another install root whose VM of this name runs on this host (its
    supervisor holds its lock, or the hypervisor process it recorded is alive), else None. Asked
    where names are host-wide (bhyve), for a VM of this root that has nothing running of its own."""
    if vm._elsewhere is not False:
        return vm._elsewhere
    vm._elsewhere = None
    for run in runfiles.all_runs():
        if run.name != vm.name or run == vm.run:
            continue
        there = runfiles.recorded_root(run)
        if there == str(vm.root.path) or (there is None and run.legacy):
            continue
        found = lock.holder(run.lock)  # a supervisor's holds no text, a command's says what it is
        pid = int(run.read_state().get("bhyve") or 0)  # an orphan's, if that pid is still its bhyve
        if (found is not None and not found[1]) or (host.pid_alive(pid) and _runs(run, pid)):
            vm._elsewhere = there or str(run.folder)
            break
    return vm._elsewhere


def folder_size_hint(path):
    """Apparent and allocated size of a file (for a sparse disk)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_size, st.st_blocks * 512
