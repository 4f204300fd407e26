"""What every command shares: common options, the one error handler, prompts."""

import argparse
import sys

from kvm import host, hypervisor
from kvm import vm as vmmod
from kvm.cli import jsonout
from kvm.errors import KvmError, PermissionDenied, UsageError, one_line
from kvm.vm import NAME_RE
from kvm.vm.root import find_root
from kvm.zfs.errors import DatasetExists, DatasetNotFound, ZFSError


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line `prog: message` on usage errors."""

    json_errors = False  # set by run() for a --json command line: the error is a JSON object

    def error(self, message):
        if self.json_errors:
            jsonout.print_error(self.prog, f"{message} (see {self.prog} --help)", 2, "usage")
            self.exit(2)
        self.exit(2, f"{self.prog}: {message}\n(see {self.prog} --help)\n")


class IntermixedParser(Parser):
    """Options may come between positional words (`vmset web Cores=2 -u ISO Mem=2G`)."""

    def parse_args(self, args=None, namespace=None):
        return self.parse_intermixed_args(args, namespace)


def parser(prog, description, *, root=True, dry_run=False, intermixed=False):
    """A parser with the common options."""
    p = (IntermixedParser if intermixed else Parser)(prog=prog, description=description)
    p.add_argument("--debug", action="store_true", help="log every command run, show tracebacks")
    if root:
        p.add_argument("--root", metavar="DIR", help="install root (default: KVM_ROOT, the launcher's folder, "
                                                     "or the dataset marked kvm:root holding the current folder)")
    if dry_run:
        p.add_argument("-n", "--dry-run", action="store_true",
                       help="print the commands and writes it would do, change nothing")
    return p


def hypervisor_text(attribute, otherwise):
    """A text of the hypervisor in use for a parser's help (its name, its power button ...), or
    `otherwise` when the environment names no known one (the command itself then says so)."""
    try:
        return getattr(hypervisor.current(), attribute)
    except KvmError:
        return otherwise


# a prompt's line on stderr not ended by the user's echoed Enter (answers from a pipe): a --json
# error object must still begin a line of its own
_PROMPT = {"open": False}


def _json_error(prog, message, status, kind, vm=None, hint=None):
    if _PROMPT["open"]:
        print(file=sys.stderr)
    jsonout.print_error(prog, message, status, kind, vm, hint)


def run(prog, build_parser, body, argv, launcher_dir=None):
    """Parse argv, run body(args), turn errors into one line and an exit status."""
    p = build_parser()
    p.json_errors = jsonout.wanted(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    as_json = getattr(args, "json", False)
    # a value read from a file keeps bytes that are not UTF-8 (surrogate escapes, see
    # host.read_text): printed, they go out as the same bytes, never an internal error
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    args.launcher_dir = launcher_dir
    if args.debug:
        host.set_debug(True)
    if getattr(args, "dry_run", False):
        # with --json, stdout is the one JSON document: what a dry run would do goes to stderr
        host.set_dry_run(True, sys.stderr if as_json else sys.stdout)
    try:
        status = body(args)
        return 0 if status is None else status
    except KvmError as exc:
        if args.debug:
            raise
        if exc.vm is None:
            exc.vm = _named_vm(args, valid_only=isinstance(exc, UsageError))  # every error about a VM names it
        _raced(exc)
        if as_json:
            _json_error(prog, exc.message, exc.exit_status, exc.kind, exc.vm, exc.hint)
        else:
            print(exc.line(prog), file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        if as_json:
            _json_error(prog, "interrupted", 130, "interrupted", _named_vm(args))
        else:
            print(KvmError("interrupted", vm=_named_vm(args)).line(prog), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
        if args.debug:
            raise
        text = f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)"
        if as_json:
            _json_error(prog, text, 1, "failure", _named_vm(args))
        else:
            print(f"{prog}: {text}", file=sys.stderr)
        return 1


def _raced(exc):
    """ZFS's own words for a race with another command, said as what happened to the VM: its
    dataset gone (destroyed or renamed meanwhile), or made meanwhile (two vmclone at once)."""
    name = getattr(exc, "name", None) or ""
    if not isinstance(exc, ZFSError) or not exc.vm or not name.endswith(f"/vm/{exc.vm}"):
        return
    if isinstance(exc, DatasetNotFound):
        exc.message = f"no such VM (its dataset {name} is gone: destroyed or renamed meanwhile)"
    elif isinstance(exc, DatasetExists):
        exc.message = f"already exists (its dataset {name} was made meanwhile by another command)"


def _named_vm(args, valid_only=False):
    """The VM a command line names (NAME, or OLD for vmrename), or None.

    valid_only: None for a name that is not a valid VM name (its own error says why, and a
    raw name with control characters is not printed).
    """
    name = getattr(args, "name", None) or getattr(args, "old", None)
    if name and valid_only:
        return name if NAME_RE.match(name) else None
    return name


def get_root(args):
    """The install root for this command."""
    return find_root(getattr(args, "root", None), args.launcher_dir)


def get_vm(args, root_user=False, name=None):
    """The VM the command names: name checked first, then the root, the VM, and root if needed."""
    name = args.name if name is None else name
    vmmod.check_name(name)
    vm = vmmod.get_vm(get_root(args), name)
    if root_user:
        need_root_user(vm.name)
    return vm


def need_root_user(vm=None):
    """Refuse to go on unless running as root (skipped in dry-run: nothing changes)."""
    if not host.is_root() and not host.dry_run():
        raise PermissionDenied("you need to be root to do this", vm=vm)


def said(args, done, would):
    """The result line on stdout: what was done, or in a dry run what would be (nothing was)."""
    print(would if getattr(args, "dry_run", False) else done)


def would(args):
    """'would ' in a dry run, else '': for progress lines about work a dry run does not do."""
    return "would " if getattr(args, "dry_run", False) else ""


def warn(prog, message, vm=None):
    """A warning line on stderr."""
    print(warning_line(prog, message, vm), file=sys.stderr)


def warning_line(prog, message, vm=None):
    """The text of a warning line: `prog: VM: warning: message`."""
    who = f"{prog}: {vm}: " if vm else f"{prog}: "
    return one_line(f"{who}warning: {message}")


def info(message):
    """Progress on stderr (stdout is for results)."""
    print(message, file=sys.stderr, flush=True)


def ask(question, default=None, stream_in=None, flag=None):
    """Prompt on stderr, read one line from stdin; EOF is a usage error (no input to answer)
    naming `flag`, the option that answers the question instead."""
    stream_in = stream_in or sys.stdin
    print(question, end="", file=sys.stderr, flush=True)
    _PROMPT["open"] = not is_terminal(stream_in)
    line = stream_in.readline()
    if not line:
        raise UsageError(f"no answer to '{question.strip()}' (stdin closed): "
                         f"{flag or 'give the answers as flags'}")
    answer = line.strip()
    return answer if answer else default


def confirm(question, assume_yes, flag="-y answers yes"):
    """y/N question; True with -y."""
    if assume_yes:
        return True
    answer = ask(f"{question} (y/N)? ", "n", flag=flag)
    return answer.lower().startswith("y")


def is_terminal(stream=None):
    """True when `stream` (stdin) is a terminal: someone is there to answer."""
    stream = stream or sys.stdin
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def print_table(header, rows, scripted=False):
    """Rows as aligned columns under a header, or tab-separated without it (-H, like zfs)."""
    if scripted:
        for row in rows:
            print("\t".join(row))
        return
    table = [header] + list(rows)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
