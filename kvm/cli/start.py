"""start [-b] [-n] NAME: run the VM under its supervisor (foreground, or detached with -b)."""

import argparse
import os
import sys
import time

from kvm import host
from kvm import vm as vmmod
from kvm.cli import common, jsonout
from kvm.conf.reach import of_config
from kvm.errors import AlreadyExists, NotFound, NothingToDo, Refused, StateError, UsageError
from kvm.host import lock, runfiles
from kvm.hypervisor import current as hypervisor
from kvm.migrate.send import check_not_migrated
from kvm.run import detached
from kvm.run.launch import dry_run_lines
from kvm.run.supervisor import Supervisor, acquire_lock, write_line

PROG = "start"
LOG_MODE = 0o640        # NAME.log: readable by root and the wheel-like group only
SAME_STATUS = {e.exit_status: e for e in (NotFound, AlreadyExists, Refused, NothingToDo)}
DETACH_WAIT = 15        # seconds `start -b` waits for the launch before saying it is still before it
POLL = 0.05             # seconds between looks at the detached supervisor


def build_parser():
    hv = common.hypervisor_text("name", "the hypervisor")
    p = common.parser(PROG, f"Start the VM and keep it running across guest reboots: preRun, {hv}, "
                            "postRun, again on reboot. Runs in the foreground (Ctrl-C stops the guest "
                            "gracefully); -b detaches, logging to NAME.log in the VM folder and syslog.",
                      dry_run=True)
    p.add_argument("-b", "--background", action="store_true", help="detach; return once the VM is launched")
    p.add_argument("--json", action="store_true",
                   help="with -b or -n: print the result as a JSON object; a VM already running is "
                        "\"changed\": false with exit 0 (kvm(8) JSON OUTPUT)")
    # the supervisor of a start -b, handed its lock (never a window without it): start -b runs
    # kvm/run/detached.py now; a start -b of an earlier version (an upgrade under way) ran this
    p.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("name", help="VM name")
    return p


def body(args):
    if args.json and not (args.background or args.dry_run):
        raise UsageError("--json needs -b or -n (a foreground start prints its supervisor's lines until the "
                         "VM ends)", vm=args.name)
    vm = common.get_vm(args)
    if args.dry_run:
        for line in dry_run_lines(vm, lambda line: common.warn(PROG, line, vm=vm.name)):
            print(line, file=sys.stderr if args.json else sys.stdout)
        warn_unreachable(vm.config())
        if args.json:
            rt = vmmod.runtime(vm)
            jsonout.emit(started_json(vm, rt, changed=not rt.active, dry_run=True))
        return 0
    if not args.json:
        return start(args, vm)
    try:
        return start(args, vm)
    except NothingToDo:
        # --json: a VM already running is a result, not an error (the text form exits 9)
        jsonout.emit(started_json(vm, vmmod.runtime(vm), changed=False))
        return 0


def started_json(vm, rt, changed, dry_run=False, log=None):
    """start --json's object: the VM's state after the start (or before it, in a dry run)."""
    return {"vm": vm.name, "state": rt.state, "pid": rt.bhyve, "supervisor": rt.supervisor,
            "log": str(log or runfiles.log_path(vm)), "changed": changed, "dry_run": dry_run}


def start(args, vm):
    """A real start: the foreground supervisor, or a detached one (-b)."""
    common.need_root_user(vm.name)
    # start -b's supervisor (lock_fd) was checked by its parent, under the lock it hands over
    fresh = args.lock_fd is None
    if fresh:
        check_not_migrated(vm)  # vmsend moved it: one VM must not run on two hosts (a ZFS property)
    # the VM's lock next: nothing of the VM is read (set.conf) or opened (NAME.log) before it,
    # so a command holding it (snap rollback, vmdestroy) never finds a start half-way in
    held = acquire_lock(vm, args.lock_fd)
    try:
        if fresh:
            # again: a vmsend that held the lock may have set the mark since; a received copy
            # started here is marked kvm:started (a later vmsend would roll back its changes)
            check_not_migrated(vm, mark=True)
        cfg = vm.config(startable=True)  # refuse a broken set.conf here, before detaching
        for line in cfg.warnings:
            common.warn(PROG, line, vm=vm.name)
        if args.background:
            status = detach(vm, held, cfg.warnings, args.json)
            warn_unreachable(cfg)  # after the launch: a start that fails says its one error line only
            return status
    except BaseException:
        held.release()
        raise
    # the foreground start warns with the supervisor's first line (the launch), not before a refusal;
    # its detached supervisor (--lock-fd) does not: the start -b that spawned it did
    return Supervisor(vm, write_line if args.lock_fd is not None else warn_first(cfg), held).run()


def warn_unreachable(cfg):
    """One warning line when the VM has no console and no network (it starts all the same)."""
    if of_config(cfg):
        common.warn(PROG, of_config(cfg), vm=cfg.name)


def warn_first(cfg):
    """write_line, with warn_unreachable before the first line written."""
    pending = [cfg]

    def write(line):
        if pending:
            warn_unreachable(pending.pop())
        write_line(line)
    return write


def detach(vm, held, warnings=(), as_json=False):
    """Start a detached supervisor, handing it the VM's lock, and wait until it launched (or failed).
    It gets the VM as resolved here (root path and name) and reads set.conf only for its launch;
    the log gets set.conf's warnings, as this start printed them, before the supervisor's lines."""
    log = runfiles.log_path(vm)
    # 0640 and never through a link: the log holds the bhyve command line
    fd = lock.open_file(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
    try:
        log_lines(fd, [common.warning_line(PROG, line, vm.name) for line in warnings])
        proc = host.spawn(detached.argv(vm.root.path, vm.name, held.fd),
                          stdout=fd, stderr=fd, new_session=True, pass_fds=(held.fd,))
    finally:
        os.close(fd)
        held.release()  # the supervisor holds the same open lock file now
    state = wait_detached(vm, proc, log)
    if as_json:
        jsonout.emit(started_json(vm, vmmod.runtime(vm), changed=True, log=log))
    elif state.get("bhyve"):
        print(f"{vm.name}: started, {hypervisor().name} pid {state['bhyve']}, supervisor pid {proc.pid} "
              f"(log {log})")
    else:
        print(f"{vm.name}: supervisor pid {proc.pid} is still before the launch (preRun?); "
              f"follow it in {log}")
    return 0


def log_lines(fd, lines):
    """Lines into NAME.log; what a full pool refuses is dropped (as the supervisor's own lines)."""
    for line in lines:
        try:
            os.write(fd, (line + "\n").encode("utf-8", "backslashreplace"))
        except OSError:
            return


def wait_detached(vm, proc, log):
    """The detached supervisor's state once it launched (or DETACH_WAIT passed); StateError with
    its own error when it ended first."""
    end = time.time() + DETACH_WAIT
    state = {}
    while time.time() < end:
        state = vmmod.read_state(vm)
        if state.get("supervisor") == proc.pid and (state.get("bhyve") or state.get("ended")):
            break
        if proc.poll() is not None:
            # the supervisor's own status when it tells a refusal apart (kvm(8) EXIT STATUS): start -b
            # of a VM an orphan holds is refused (8) as start is
            kind = SAME_STATUS.get(proc.returncode, StateError)
            raise kind(f"did not start: {failure(vm, proc, log)} (see {log})", vm=vm.name)
        time.sleep(POLL)
    return state


def failure(vm, proc, log):
    """Why a detached supervisor ended: the error it kept in its state file (which a full pool does
    not stop), else its log's last line without the `start: NAME: ` it begins with."""
    state = vmmod.read_state(vm)
    if state.get("error_pid") == proc.pid and state.get("error"):
        return state["error"]
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
    except OSError:
        tail = []
    why = tail[0] if tail else f"exit {proc.returncode}"
    prefix = f"{PROG}: {vm.name}: "
    return why[len(prefix):] if why.startswith(prefix) else why

