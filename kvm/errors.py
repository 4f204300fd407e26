"""The error hierarchy: each error carries its exit status and a one-line message."""


class KvmError(Exception):
    """Base of every error the commands report as one line."""

    exit_status = 1

    def __init__(self, message, vm=None):
        super().__init__(message)
        self.message = message
        self.vm = vm

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


class NotFound(KvmError):
    """A VM, root, pool or file that does not exist."""


class ConfigError(KvmError):
    """A set.conf that cannot be read or holds an invalid value."""


class StateError(KvmError):
    """The VM is in a state that forbids the operation (running, locked...)."""


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
