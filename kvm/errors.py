"""The error hierarchy: each error carries its exit status and a one-line message."""


# exit statuses beyond 0 ok, 1 failure, 2 usage (kvm(8) EXIT STATUS): what a script (an Ansible
# module) needs to be idempotent without reading the message; 3, 4 and 5 are a foreground start's
NOT_FOUND = 6       # the VM, snapshot, image, pool or file named does not exist
EXISTS = 7          # what was to be made exists already
REFUSED = 8         # refused for a state: running, busy (a lock held), in use (clones), migrated
NOTHING_TO_DO = 9   # the VM is already as asked (start: running; stop: not running)


class KvmError(Exception):
    """Base of every error the commands report as one line."""

    exit_status = 1
    kind = "failure"    # the word for the exit status in a --json error object

    def __init__(self, message, vm=None, hint=None):
        super().__init__(message)
        self.message = message
        self.vm = vm
        self.hint = hint

    def line(self, prog):
        """The one line printed on stderr: `prog: VM: message`."""
        who = f"{prog}: {self.vm}: " if self.vm else f"{prog}: "
        return one_line(who + self.message)


def one_line(text):
    """text with control characters (a newline in a value, say) written as escapes: one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class UsageError(KvmError):
    """Bad command-line usage."""

    exit_status = 2
    kind = "usage"


class NotFound(KvmError):
    """A VM, root, pool or file that does not exist."""

    exit_status = NOT_FOUND
    kind = "not-found"


class ConfigError(KvmError):
    """A set.conf that cannot be read or holds an invalid value."""


class StateError(KvmError):
    """The VM is in a state that forbids the operation (running, locked...)."""


class Refused(StateError):
    """Refused for a state the user can change: the VM runs, a lock is held, clones use it."""

    exit_status = REFUSED
    kind = "refused"


class AlreadyExists(StateError):
    """What was to be made (a VM, snapshot, image, dataset) exists already."""

    exit_status = EXISTS
    kind = "exists"


class NothingToDo(StateError):
    """The VM is already as asked: a start of a running VM, a stop of a stopped one."""

    exit_status = NOTHING_TO_DO
    kind = "nothing-to-do"


class PermissionDenied(KvmError):
    """Not root, or a file with unsafe ownership or mode."""


class CommandFailed(KvmError):
    """An external command exited non-zero."""

    def __init__(self, argv, status, stderr="", vm=None):
        detail = (stderr or "").strip().splitlines()
        tail = detail[-1] if detail else f"exit status {status}"
        super().__init__(f"{argv[0]} failed: {tail}", vm=vm)
        self.argv = list(argv)
        self.status = status
        self.stderr = stderr or ""
