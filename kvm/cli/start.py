"""start [-b] [-n] NAME: run the VM under its supervisor (foreground, or detached with -b)."""

import sys
import time

from ..errors import StateError
from . import common

PROG = "start"
LOG_MODE = 0o640  # NAME.log: readable by root and the wheel-like group only


def build_parser():
    p = common.parser(PROG, "Start the VM and keep it running across guest reboots: preRun, bhyve, "
                            "postRun, again on reboot. Runs in the foreground (Ctrl-C stops the guest "
                            "gracefully); -b detaches, logging to NAME.log in the VM folder and syslog.",
                      dry_run=True)
    p.add_argument("-b", "--background", action="store_true", help="detach; return once the VM is launched")
    p.add_argument("name", help="VM name")
    return p


def body(args):
    vm = common.get_vm(args)
    root = vm.root
    if args.dry_run:
        from ..supervisor import dry_run
        dry_run(vm, sys.stdout)
        return 0
    common.need_root_user(vm.name)
    cfg = vm.config()  # refuse a broken set.conf here, before detaching
    for line in cfg.warnings:
        common.warn(PROG, line, vm=vm.name)
    if args.background:
        return detach(root, vm)
    from ..supervisor import Supervisor
    return Supervisor(vm).run()


def detach(root, vm):
    """Start a detached supervisor and wait until it holds the lock (or failed)."""
    from .. import host, vm as vmmod
    rt = vmmod.runtime(vm)
    if rt.supervisor:
        raise StateError(f"already running (supervisor pid {rt.supervisor})", vm=vm.name)
    import os
    from .. import lock
    log = vm.dir / f"{vm.name}.log"
    # 0640 and never through a link: the log holds the bhyve command line
    fd = lock.open_file(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
    try:
        proc = host.spawn([sys.executable, "-m", "kvm", "start", "--root", str(root.path), vm.name],
                          stdout=fd, stderr=fd, new_session=True)
    finally:
        os.close(fd)
    end = time.time() + 15
    state = {}
    while time.time() < end:
        state = vmmod.read_state(vm.name)
        if state.get("supervisor") == proc.pid and (state.get("bhyve") or state.get("ended")):
            break
        if proc.poll() is not None:
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            why = tail[0] if tail else f"exit {proc.returncode}"
            raise StateError(f"did not start: {why} (see {log})", vm=vm.name)
        time.sleep(0.05)
    if state.get("bhyve"):
        print(f"{vm.name}: started, bhyve pid {state['bhyve']}, supervisor pid {proc.pid} (log {log})")
    else:
        print(f"{vm.name}: supervisor pid {proc.pid} is still before the launch (preRun?); "
              f"follow it in {log}")
    return 0
