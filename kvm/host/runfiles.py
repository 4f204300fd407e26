"""Where a VM's run-time files are, in one place: per install root, a folder per VM.

    RUN_DIR/ROOT_ID/NAME/lock       the VM's lock (its supervisor's, or a command's working on it)
    RUN_DIR/ROOT_ID/NAME/conf.lock  the short lock of set.conf edits and of the launch's read
    RUN_DIR/ROOT_ID/NAME/state      what runs: pids, VNC port, boots, the last exit (JSON)
    RUN_DIR/ROOT_ID/NAME/stop       a stop request for the supervisor: timeout, force
    RUN_DIR/ROOT_ID/NAME/qmp        qemu's QMP socket; .../console: its COM1 socket
    RUN_DIR/ROOT_ID/NAME/tpm.sock   swtpm's socket (tpm.pid, tpm.log its pid and log); .../agent:
                                    the guest agent's socket (helper_file gives each)
    RUN_DIR/ROOT_ID/NAME/ctl        qemu's second QMP socket, for vmdisk while the supervisor holds qmp
    RUN_DIR/ROOT_ID/NAME/bhyve.conf bhyve's -k file (the VNC password), 0600, removed when bhyve ends
    RUN_DIR/ROOT_ID/.root           the root's path, for whoever reads the run dir
    RUN_DIR/host/                   host-wide files: vnc.lock (choosing a VNC port), kvminst.lock...
    VM_FOLDER/NAME.log              a detached supervisor's output

One name space per kind of file: a VM name holds no '/', so VM `cx.conf` and VM `cx` never
share a file, and two install roots never share a VM's files. ROOT_ID comes from the root's
path (see root_id), so it is the same for every command and across reboots; it is short, for
qemu's sockets (a unix socket's path takes at most 107 bytes).

Earlier versions kept the files of every root in one name space, RUN_DIR/NAME.lock, .conf.lock,
.state, .stop, .qmp, .console, .bhyve.conf (LEGACY). A VM whose supervisor started there (kvm upgraded while it
runs) is still found there: `for_vm` gives that place while that supervisor, or the hypervisor
process it recorded, lives and its state names this root (or no root). Its next start uses the
folder of its root.
"""

import json
import os
import re
import zlib

from kvm.host import paths
from kvm.host.lock import FILE_MODE, holder, make_safe_dirs, open_file
from kvm.host.process import pid_alive

LOCK, CONF_LOCK, STATE, STOP, QMP, CONSOLE = "lock", "conf.lock", "state", "stop", "qmp", "console"
# a VM's helpers (issue 22): swtpm's socket, pid file and log; the guest agent's socket
TPM_SOCKET, TPM_PID, TPM_LOG, AGENT = "tpm.sock", "tpm.pid", "tpm.log", "agent"
CONTROL = "ctl"   # qemu's second QMP socket (vmdisk, while the supervisor holds the first)
SECRETS = "bhyve.conf"   # bhyve's -k file holding the VNC password: 0600, there only while bhyve runs
KINDS = (LOCK, CONF_LOCK, STATE, STOP, QMP, CONSOLE, TPM_SOCKET, TPM_PID, TPM_LOG, AGENT, CONTROL, SECRETS)
ROOT_FILE = ".root"    # RUN_DIR/ROOT_ID/.root: no VM name starts with a dot
HOST_DIR = "host"      # RUN_DIR/host: a ROOT_ID always ends in _ and 8 hex digits
LOG_SUFFIX = ".log"
VNC_LOCK = "vnc.lock"
TAIL = 20              # characters of the root's path kept readable in its id


SWITCH_DIR = "switch"  # RUN_DIR/switch/NAME/: kvm's dnsmasq of switch NAME (its conf, pid and leases)


def switch_file(switch, filename):
    """RUN_DIR/switch/SWITCH/FILENAME: a run file of a kvm switch (kvm/net names them; vminfo and
    vmlist read the DHCP leases)."""
    return paths.current().run_dir / SWITCH_DIR / switch / filename


def root_id(root_path):
    """The run-dir name of an install root: the end of its path as letters, digits and _ (at most
    20), then _ and the CRC-32 of the whole path in hex: /zroot/kvm -> zroot_kvm_1a2b3c4d. Stable
    (the path decides), readable, short, and a name cron.d and sh variables take as it is."""
    text = str(root_path)
    tail = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[-TAIL:].strip("_") or "root"
    return f"{tail}_{zlib.crc32(text.encode()):08x}"


def root_dir(root_path):
    """RUN_DIR/ROOT_ID: the run folders of the root's VMs."""
    return paths.current().run_dir / root_id(root_path)


class RunFiles:
    """Where one VM's run files are: `folder` (RUN_DIR/ROOT_ID/NAME), or with legacy=True the run
    dir itself, with the files named NAME.KIND (an earlier version's supervisor)."""

    def __init__(self, name, folder, legacy=False, root=None):
        self.name, self.folder, self.legacy = name, folder, legacy
        self.root = root   # the root's path (str), recorded in RUN_DIR/ROOT_ID/.root

    def __repr__(self):
        return f"RunFiles({str(self.path(LOCK))!r})"

    def __eq__(self, other):
        return isinstance(other, RunFiles) and (self.name, self.folder, self.legacy) == \
            (other.name, other.folder, other.legacy)

    def __hash__(self):
        return hash((self.name, str(self.folder), self.legacy))

    def path(self, kind):
        return self.folder / (f"{self.name}.{kind}" if self.legacy else kind)

    @property
    def lock(self):
        return self.path(LOCK)

    @property
    def conf_lock(self):
        return self.path(CONF_LOCK)

    @property
    def state(self):
        return self.path(STATE)

    @property
    def stop(self):
        return self.path(STOP)

    @property
    def root_folder(self):
        """RUN_DIR/ROOT_ID (None for the legacy place)."""
        return None if self.legacy else self.folder.parent

    def make_folder(self):
        """The folders the files go in, made (0755, root's) when missing and checked; the root's
        .root record written when missing."""
        if self.legacy:
            make_safe_dirs(paths.current().run_dir)
            return
        if self.root:
            record_root(self.root)
        make_safe_dirs(paths.current().run_dir, self.root_folder, self.folder)

    def read_state(self):
        """The state file as a dict ({} when absent or unreadable)."""
        return read_json(self.state)


def read_json(path):
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_root(root_path):
    """RUN_DIR/ROOT_ID made (0755, root's; checked), with its .root naming the root when missing:
    a root other roots' name checks find (kvminst, and every command that makes run files)."""
    folder = root_dir(root_path)
    make_safe_dirs(paths.current().run_dir, folder)
    record = folder / ROOT_FILE
    if not os.path.lexists(record):
        fd = open_file(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.write(fd, f"{root_path}\n".encode())
        finally:
            os.close(fd)
    return folder


def of(root_path, name):
    """The VM's run files in its root's folder (where every start since this version puts them)."""
    return RunFiles(name, root_dir(root_path) / name, root=str(root_path))


def legacy(name):
    """RUN_DIR/NAME.*: where an earlier version kept the VM's run files."""
    return RunFiles(name, paths.current().run_dir, legacy=True)


def for_vm(root_path, name, legacy_names=None, runs=None):
    """The run files in force for VM `name` of the root at `root_path`: its root's folder, unless an
    earlier version's supervisor still runs it from the legacy place (see the module's text).
    legacy_names: the names with files in the legacy place, when the caller listed them already;
    runs(run, pid): True when pid is the hypervisor running that VM (else: any live process)."""
    new = of(root_path, name)
    if legacy_names is not None and name not in legacy_names:
        return new
    old = legacy(name)
    if not os.path.lexists(old.state) and not os.path.lexists(old.lock):
        return new
    return old if legacy_in_force(old, root_path, runs) and holder(new.lock) is None else new


def legacy_in_force(old, root_path, runs=None):
    """True when the legacy files `old` belong to a live run of a VM of this root (or of a root
    not recorded: the oldest states had none): its lock held, or the hypervisor process its state
    names alive (an earlier version's supervisor killed: its orphan)."""
    state = old.read_state()
    if state.get("root") not in (None, str(root_path)):
        return False
    if holder(old.lock) is not None:
        return True
    pid = int(state.get("bhyve") or 0)
    return pid_alive(pid) and (runs is None or runs(old, pid))


def legacy_names():
    """The VM names with run files in the legacy place (one listing of the run dir)."""
    try:
        entries = os.listdir(paths.current().run_dir)
    except OSError:
        return set()
    out = set()
    for entry in entries:
        for suffix in (f".{STATE}", f".{LOCK}"):
            if entry.endswith(suffix) and not entry.endswith(f".{CONF_LOCK}"):
                out.add(entry[:-len(suffix)])
    return out


def all_runs():
    """Every VM run-files place on this host, of every root, and the legacy ones (for what is
    host-wide: VNC ports, bhyve's VM names)."""
    run = paths.current().run_dir
    try:
        entries = sorted(os.listdir(run))
    except OSError:
        return []
    out = []
    for entry in entries:
        if entry == HOST_DIR or "." in entry:
            continue
        try:
            names = sorted(os.listdir(run / entry))
        except OSError:
            continue
        out += [RunFiles(name, run / entry / name) for name in names if not name.startswith(".")]
    out += [legacy(name) for name in sorted(legacy_names())]
    return out


def recorded_root(run):
    """The root path the run-files place belongs to: RUN_DIR/ROOT_ID/.root, or for the legacy
    place the root its state names (None when unknown)."""
    if run.legacy:
        return run.read_state().get("root")
    try:
        with open(run.root_folder / ROOT_FILE) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def recorded_roots():
    """The root paths with a run folder on this host (RUN_DIR/*/.root)."""
    run = paths.current().run_dir
    try:
        entries = sorted(os.listdir(run))
    except OSError:
        return []
    out = []
    for entry in entries:
        if entry == HOST_DIR or "." in entry:
            continue
        try:
            with open(run / entry / ROOT_FILE) as fh:
                path = fh.read().strip()
        except OSError:
            continue
        if path:
            out.append(path)
    return out


def vnc_lock_name():
    """The host-wide lock taken while a VNC port is chosen, in RUN_DIR/host."""
    return VNC_LOCK


def log_path(vm):
    """VM_FOLDER/NAME.log: a detached supervisor's output."""
    return vm.dir / f"{vm.name}{LOG_SUFFIX}"


def helper_file(run, kind):
    """The run file of one of a VM's helpers: TPM_SOCKET, TPM_PID, TPM_LOG or AGENT (issue 22's
    files, all through here: a later layout changes this function only)."""
    if kind not in (TPM_SOCKET, TPM_PID, TPM_LOG, AGENT):
        raise ValueError(f"not a helper's run file: {kind}")
    return run.path(kind)


def secrets_file(run):
    """The hypervisor's file of secrets for one launch (bhyve's -k file with the VNC password):
    written 0600 before each launch, removed once the hypervisor ended (kvm/run/supervisor.py)."""
    return run.path(SECRETS)
