"""The detached supervisor `start -b` spawns: `python -m kvm.run.detached start --lock-fd FD --root ROOT NAME`.

start -b found the install root, the VM and a valid set.conf, and took the VM's lock, which it
hands over on descriptor FD: this process takes all of that as given. No root discovery, no
command-line parser, no second reading of set.conf before the supervisor's own (at each launch,
as a foreground start's). Its stdout and stderr are NAME.log; an error before or during the
supervision ends it with start's one line there (`start: NAME: why`) and start's exit status,
which the waiting start -b reports. The command line reads as it did when start -b ran
`python -m kvm start --lock-fd FD --root ROOT NAME` (what `ps` shows), but for the module.
"""

import sys

from kvm import vm as vmmod
from kvm.errors import KvmError, UsageError
from kvm.run.supervisor import Supervisor, acquire_lock, write_line
from kvm.vm.root import Root

PROG = "start"   # its messages are start's
MODULE = "kvm.run.detached"


def argv(root_path, name, lock_fd):
    """The command line that runs the supervisor of VM `name` of the root at `root_path` (both as
    start -b resolved them), handed the VM's lock on descriptor lock_fd."""
    return [sys.executable, "-m", MODULE, PROG, "--lock-fd", str(lock_fd), "--root", str(root_path), name]


def supervise(vm, lock_fd):
    """Adopt the lock start -b took for `vm` and supervise it; the exit status."""
    return Supervisor(vm, write_line, acquire_lock(vm, lock_fd)).run()


def main(args=None):
    """Run the supervisor argv() describes; errors as start prints them (kvm/cli/common.py's run)."""
    args = sys.argv[1:] if args is None else args
    name = args[-1] if args else None
    try:
        if len(args) != 6 or args[:2] != [PROG, "--lock-fd"] or args[3] != "--root" or not args[2].isdigit():
            raise UsageError(f"usage: python -m {MODULE} {PROG} --lock-fd FD --root ROOT NAME (start -b runs it)")
        vmmod.check_name(name)  # the one check kept: the name makes the lock's and state file's paths
        return supervise(vmmod.Vm(Root(args[4]), name), int(args[2]))
    except KvmError as exc:
        if exc.vm is None and not isinstance(exc, UsageError):
            exc.vm = name
        print(exc.line(PROG), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(KvmError("interrupted", vm=name).line(PROG), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - as every command: one line, not a traceback
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
