"""Stopping a VM from outside its supervisor: `stop`, and vmdestroy/vmrename with -f.

With a live supervisor, stop writes a request (timeout, force) and sends it SIGTERM:
the supervisor presses the ACPI button, forces the power-off after the timeout, runs
postRun and exits; stop waits for that. Without one (supervisor killed, or a bhyve
the shell toolkit started), stop does the same steps itself and destroys the VM.
"""

import json
import signal
import time

from . import host, paths, vm as vmmod
from .errors import StateError
from .supervisor import FORCE_GRACE, HOOK_GRACE, stop_request_path

POLL = 0.05
DEFAULT_TIMEOUT = 60


def _wait(predicate, seconds):
    end = time.time() + seconds
    while time.time() < end:
        if predicate():
            return True
        time.sleep(POLL)
    return predicate()


def stop_vm(vm, timeout=None, force=False):
    """Power the VM off; returns how: acpi, forced, killed, cleaned. StateError when not running."""
    rt = vmmod.runtime(vm)
    if timeout is None:
        try:
            timeout = vm.config().stop_timeout
        except Exception:  # noqa: BLE001 - a broken set.conf must not prevent a stop
            timeout = DEFAULT_TIMEOUT
    if rt.supervisor:
        return _stop_supervised(vm, rt, timeout, force)
    if rt.bhyve:
        return _stop_orphan(vm, rt, timeout, force)
    if rt.allocated:
        host.run(["bhyvectl", f"--vm={vm.name}", "--destroy"])
        return "cleaned"
    raise StateError("is not running", vm=vm.name)


def _stop_supervised(vm, rt, timeout, force):
    host.make_dirs(paths.current().run_dir)
    host.write_file(stop_request_path(vm.name), json.dumps({"timeout": timeout, "force": force}) + "\n")
    host.send_signal(rt.supervisor, signal.SIGTERM)
    if host.dry_run():
        return "requested"
    budget = (0 if force else timeout) + FORCE_GRACE + HOOK_GRACE + 30
    if not _wait(lambda: not vmmod.lock_held(vm.name), budget):
        raise StateError(f"supervisor pid {rt.supervisor} did not finish within {budget}s", vm=vm.name)
    return vmmod.read_state(vm.name).get("stop_method") or "stopped"


def _stop_orphan(vm, rt, timeout, force):
    pid = rt.bhyve
    gone = lambda: not host.pid_alive(pid)  # noqa: E731
    how = "forced"
    if not force:
        host.send_signal(pid, signal.SIGTERM)
        how = "acpi"
    if host.dry_run():
        host.run(["bhyvectl", f"--vm={vm.name}", "--force-poweroff"])
        host.run(["bhyvectl", f"--vm={vm.name}", "--destroy"])
        return how
    if force or not _wait(gone, timeout):
        how = "forced"
        host.run(["bhyvectl", f"--vm={vm.name}", "--force-poweroff"], check=False)
        if not _wait(gone, FORCE_GRACE):
            how = "killed"
            host.send_signal(pid, signal.SIGKILL)
            _wait(gone, 5)
    if (paths.current().vmm_dir / vm.name).exists():
        host.run(["bhyvectl", f"--vm={vm.name}", "--destroy"], check=False)
    return how


def ensure_stopped(vm, force_flag, prog_hint):
    """For vmdestroy/vmrename: refuse a running VM, or stop it when -f was given."""
    rt = vmmod.runtime(vm)
    if not (rt.active or rt.allocated):
        return None
    if not force_flag:
        raise StateError(f"is running (pid {rt.bhyve or rt.supervisor}): stop it first, or use {prog_hint} -f",
                         vm=vm.name)
    return stop_vm(vm)
