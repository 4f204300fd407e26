"""The names of a VM's run-time files, in one place (the lock's own name is lock.vm_lock_path).

Per VM in RUN_DIR: NAME.lock (the supervisor's lock), NAME.state (what runs: pids, port, boots),
NAME.stop (a stop request: timeout, force). Host-wide in RUN_DIR/host: vnc.lock (choosing a VNC
port). In the VM folder: NAME.log (a detached supervisor's output).
"""

from kvm.host import paths
from kvm.host.lock import vm_lock_path

STATE_SUFFIX = ".state"
STOP_SUFFIX = ".stop"
LOG_SUFFIX = ".log"
VNC_LOCK = "vnc.lock"

__all__ = ["vm_lock_path", "state_path", "stop_request_path", "vnc_lock_name", "log_path", "state_names"]


def state_path(name):
    """RUN_DIR/NAME.state."""
    return paths.current().run_dir / f"{name}{STATE_SUFFIX}"


def stop_request_path(name):
    """RUN_DIR/NAME.stop: how `stop` wants the supervisor to stop the VM."""
    return paths.current().run_dir / f"{name}{STOP_SUFFIX}"


def vnc_lock_name():
    """The host-wide lock taken while a VNC port is chosen, in RUN_DIR/host."""
    return VNC_LOCK


def log_path(vm):
    """VM_FOLDER/NAME.log: a detached supervisor's output."""
    return vm.dir / f"{vm.name}{LOG_SUFFIX}"


def state_names(entries):
    """The VM names that have a state file among the run dir's entries."""
    return {n[:-len(STATE_SUFFIX)] for n in entries if n.endswith(STATE_SUFFIX)}
