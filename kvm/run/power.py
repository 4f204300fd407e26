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
from kvm.host.lock import plan_stopped
from kvm.hypervisor import current as hypervisor
from kvm.run import agent as agentmod

DEFAULT_TIMEOUT = 60   # seconds for the guest to shut down when set.conf gives no StopTimeout
MAX_TIMEOUT = 3600     # the longest wait `stop -t` accepts: past an hour a guest is not shutting down
HOOK_GRACE = 10        # seconds a hook may go on after a stop request, before it is killed
FORCE_GRACE = 10       # seconds after a forced power-off before the hypervisor is killed
KILL_WAIT = 5          # seconds for a SIGKILLed process to be gone
SUPERVISOR_SLACK = 30  # seconds beyond its own waits for a supervisor to run postRun and exit
POLL = 0.05            # seconds between checks while waiting for a process to end


def request(vm, timeout, force):
    """Leave the supervisor a stop request (read by its signal handler): RUN_DIR/ROOT_ID/NAME/stop."""
    if host.dry_run():
        host.make_dirs(vm.run.stop.parent)  # printed when missing
    else:
        vm.run.make_folder()
    host.write_file(vm.run.stop, json.dumps({"timeout": timeout, "force": force}) + "\n")


def read_request(vm):
    """The pending stop request ({} when none or unreadable)."""
    try:
        return json.loads(vm.run.stop.read_text())
    except (OSError, ValueError):
        return {}


def clear_request(vm):
    vm.run.stop.unlink(missing_ok=True)


def vm_timeout(vm, fresh=False):
    """StopTimeout from set.conf, else the default (a broken set.conf must not prevent a stop).
    fresh: from the file as it is now (the supervisor: set.conf may have changed since it read it)."""
    try:
        return vm.config(fresh=fresh).stop_timeout
    except KvmError:
        return DEFAULT_TIMEOUT


def sequence(hv, run, pid, timeout, force, agent=False):
    """The stop, step by step: after each action yields (method, seconds to wait for the exit,
    what to log). The caller waits, and asks for the next step when the time ran out. run: the
    VM's run files (RunFiles). agent (Agent=yes): the guest agent is asked first (guest-shutdown),
    for guests that ignore or cancel the ACPI button; then ACPI, then the forced power-off, each
    given the timeout."""
    if not force and agent:
        if agentmod.shutdown(run):
            yield "agent", timeout, f"stopping: asked the guest agent to shut down, waiting up to {timeout}s"
        else:
            yield "agent", 0, "stopping: the guest agent did not answer"
    if not force:
        hv.power_button(run, pid)
        yield "acpi", timeout, f"stopping: ACPI power button, waiting up to {timeout}s"
    hv.force_off(run, pid)
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
        hypervisor().destroy(vm.run)
        return "cleaned"
    if rt.elsewhere:
        raise NothingToDo(f"is not running (the VM {vm.name} that runs is the one of {rt.elsewhere}: stop it "
                          f"there)", vm=vm.name)
    raise NothingToDo("is not running", vm=vm.name)


def _stop_supervised(vm, rt, timeout, force, progress=None):
    request(vm, timeout, force)
    host.send_signal(rt.supervisor, signal.SIGTERM)
    if host.dry_run():
        plan_stopped(vm.run)  # what follows in this dry run sees the VM stopped
        return "requested"
    if progress:
        progress()
    steps = 2 if vm_agent(vm) else 1   # the guest agent's wait, then ACPI's, each the timeout
    budget = (0 if force else steps * timeout) + FORCE_GRACE + HOOK_GRACE + SUPERVISOR_SLACK
    if not _wait(lambda: not vmmod.lock_held(vm), budget):
        raise StateError(f"supervisor pid {rt.supervisor} did not finish within {budget}s", vm=vm.name)
    return vmmod.read_state(vm).get("stop_method") or "stopped"


def vm_agent(vm, fresh=False):
    """Agent=yes in set.conf (False when it cannot be read: a stop must not fail on it); fresh: as
    vm_timeout's (a command reads set.conf once: the read that gave its timeout)."""
    try:
        return vm.config(fresh=fresh).agent
    except KvmError:
        return False


def _stop_orphan(vm, rt, timeout, force, progress=None):
    hv, pid = hypervisor(), rt.bhyve
    how = "forced" if force else "acpi"
    for how, seconds, _ in sequence(hv, vm.run, pid, timeout, force, agent=vm_agent(vm) and not host.dry_run()):
        if host.dry_run():
            if how == "acpi":
                hv.force_off(vm.run, pid)
            break
        if progress:
            progress()
            progress = None
        if _wait(lambda: not host.pid_alive(pid), seconds):
            break
    hv.destroy(vm.run)
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
