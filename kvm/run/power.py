"""Stopping a VM, written once: the request `stop` leaves for a supervisor, the ACPI -> forced
-> SIGKILL sequence (carried out by the supervisor for its bhyve, or by `stop` itself for a bhyve
without one), the grace periods and the default timeout.

With a live supervisor, stop writes a request (timeout, force) and sends it SIGTERM: the
supervisor runs `sequence`, then postRun, and exits; stop waits for that. Without one
(supervisor killed, or a bhyve the shell toolkit started), stop runs `sequence` itself and
destroys the VM. Nothing here imports the supervisor.
"""

import json
import signal
import time

from kvm import host
from kvm import vm as vmmod
from kvm.errors import KvmError, NothingToDo, Refused, StateError
from kvm.host import runfiles
from kvm.host.lock import plan_stopped
from kvm.hypervisor import current as hypervisor

DEFAULT_TIMEOUT = 60   # seconds for the guest to shut down when set.conf gives no StopTimeout
MAX_TIMEOUT = 3600     # the longest wait `stop -t` accepts: past an hour a guest is not shutting down
HOOK_GRACE = 10        # seconds a hook may go on after a stop request, before it is killed
FORCE_GRACE = 10       # seconds after a forced power-off before the hypervisor is killed
KILL_WAIT = 5          # seconds for a SIGKILLed process to be gone
SUPERVISOR_SLACK = 30  # seconds beyond its own waits for a supervisor to run postRun and exit
POLL = 0.05            # seconds between checks while waiting for a process to end


def request(name, timeout, force):
    """Leave the supervisor a stop request (read by its signal handler)."""
    host.make_dirs(runfiles.stop_request_path(name).parent)
    host.write_file(runfiles.stop_request_path(name), json.dumps({"timeout": timeout, "force": force}) + "\n")


def read_request(name):
    """The pending stop request ({} when none or unreadable)."""
    try:
        return json.loads(runfiles.stop_request_path(name).read_text())
    except (OSError, ValueError):
        return {}


def clear_request(name):
    runfiles.stop_request_path(name).unlink(missing_ok=True)


def vm_timeout(vm, fresh=False):
    """StopTimeout from set.conf, else the default (a broken set.conf must not prevent a stop).
    fresh: from the file as it is now (the supervisor: set.conf may have changed since it read it)."""
    try:
        return vm.config(fresh=fresh).stop_timeout
    except KvmError:
        return DEFAULT_TIMEOUT


def sequence(hv, name, pid, timeout, force):
    """The stop, step by step: after each action yields (method, seconds to wait for the exit,
    what to log). The caller waits, and asks for the next step when the time ran out."""
    if not force:
        hv.power_button(name, pid)
        yield "acpi", timeout, f"stopping: ACPI power button, waiting up to {timeout}s"
    hv.force_off(name, pid)
    yield "forced", FORCE_GRACE, "forcing the power off"
    host.send_signal(pid, signal.SIGKILL)
    yield "killed", KILL_WAIT, "bhyve did not exit after the forced power-off: killing it"


def _wait(predicate, seconds):
    end = time.time() + seconds
    while time.time() < end:
        if predicate():
            return True
        time.sleep(POLL)
    return predicate()


def waiting_text(name, timeout, force):
    """What a stop waits for, in one line (stop says it on a terminal)."""
    if force:
        return f"{name}: forcing the power off; waiting for it to end"
    return (f"{name}: ACPI power button pressed; waiting up to {timeout} s for the guest to shut down, "
            f"then forcing the power off")


def stop_vm(vm, timeout=None, force=False, progress=None):
    """Power the VM off; returns how: acpi, forced, killed, cleaned. StateError when not running.
    progress(line), when given, is told what the stop waits for before it waits."""
    rt = vmmod.runtime(vm)
    timeout = vm_timeout(vm) if timeout is None else timeout
    said = None
    if progress:
        def said():
            progress(waiting_text(vm.name, timeout, force))
    if rt.supervisor:
        return _stop_supervised(vm, rt, timeout, force, said)
    if rt.bhyve:
        return _stop_orphan(vm, rt, timeout, force, said)
    if rt.allocated:
        hypervisor().destroy(vm.name)
        return "cleaned"
    raise NothingToDo("is not running", vm=vm.name)


def _stop_supervised(vm, rt, timeout, force, progress=None):
    request(vm.name, timeout, force)
    host.send_signal(rt.supervisor, signal.SIGTERM)
    if host.dry_run():
        plan_stopped(vm.name)  # what follows in this dry run sees the VM stopped
        return "requested"
    if progress:
        progress()
    budget = (0 if force else timeout) + FORCE_GRACE + HOOK_GRACE + SUPERVISOR_SLACK
    if not _wait(lambda: not vmmod.lock_held(vm.name), budget):
        raise StateError(f"supervisor pid {rt.supervisor} did not finish within {budget}s", vm=vm.name)
    return vmmod.read_state(vm.name).get("stop_method") or "stopped"


def _stop_orphan(vm, rt, timeout, force, progress=None):
    hv, pid = hypervisor(), rt.bhyve
    how = "forced" if force else "acpi"
    for how, seconds, _ in sequence(hv, vm.name, pid, timeout, force):
        if host.dry_run():
            if how == "acpi":
                hv.force_off(vm.name, pid)
            break
        if progress:
            progress()
            progress = None
        if _wait(lambda: not host.pid_alive(pid), seconds):
            break
    hv.destroy(vm.name)
    return how


def ensure_stopped(vm, force_flag, prog_hint):
    """For vmdestroy/vmrename: refuse a running VM, or stop it when -f was given."""
    rt = vmmod.runtime(vm)
    if not (rt.active or rt.allocated):
        return None
    if not force_flag:
        raise Refused(f"is running (pid {rt.bhyve or rt.supervisor}): stop it first, or use {prog_hint} -f",
                         vm=vm.name)
    return stop_vm(vm)
