"""A minimal synchronous QMP client: connect to qemu's unix socket, execute, read events.

Why not the QEMU project's `qemu.qmp` (0.0.6): it is built on asyncio (its sync `legacy`
class too). Measured here (tests/guest/README.md): importing it costs 60-100 ms (asyncio
alone ~65 ms) against 11-19 ms for this module, and a python process that imported the
supervisor and connected with it has 21.1 MiB RSS against 13.9 MiB with this module: over
the 20 MiB target for the supervisor, which stays resident for the VM's whole life. What the supervisor needs is four things — negotiate
capabilities, execute a command, wait for an event, notice that qemu is gone — which fit
in a blocking socket and a line reader. QMP is one JSON object per line (RFC-less but
stable since qemu 0.14): a greeting, then `{"return": ...}` or `{"error": ...}` per
command, and `{"event": ...}` at any time, which are queued here while a command waits.
"""

import json
import time

from kvm.errors import KvmError

# What kvm uses of QMP, named here only (backend.py and argv.py import these; this module imports
# nothing of kvm's but errors, so that status and vmlist keep importing it cheaply).
# Commands (qapi/*.json):
CAPABILITIES = "qmp_capabilities"     # leaves capabilities negotiation: the first command
CONT = "cont"                         # runs a guest started with -S
POWERDOWN = "system_powerdown"        # the ACPI power button
QUIT = "quit"                         # qemu ends at once
SET_VNC_PASSWORD = "change-vnc-password"
QUERY_CPUS = "query-cpus-fast"        # each vCPU's cpu-index and host thread-id
BLOCKDEV_ADD = "blockdev-add"         # a block node (vmdisk add on a running VM)
BLOCKDEV_DEL = "blockdev-del"
DEVICE_ADD = "device_add"             # a device on that node, behind a hot-plug port
BLOCK_RESIZE = "block_resize"         # grows a disk and its raw file (vmdisk grow on a running VM)
# Events:
SHUTDOWN = "SHUTDOWN"                 # the guest or the host ended it: data.reason says why
VNC_CONNECTED = "VNC_CONNECTED"       # a VNC client came
# The SHUTDOWN event's `reason` values kvm tells apart (qapi/run-state.json, ShutdownCause).
GUEST_RESET = "guest-reset"
GUEST_SHUTDOWN = "guest-shutdown"
GUEST_PANIC = "guest-panic"
HOST_QUIT = "host-qmp-quit"
HOST_RESET = "host-qmp-system-reset"
HOST_SIGNAL = "host-signal"
HOST_UI = "host-ui"
HOST_ERROR = "host-error"


class QmpError(KvmError):
    """QMP failed: qemu refused a command, closed the socket or did not answer in time."""


class Qmp:
    """One QMP session over a unix socket (blocking, with a per-call time limit)."""

    def __init__(self, sock):
        self._sock, self._buf, self.events, self.greeting = sock, b"", [], None

    @classmethod
    def connect(cls, path, timeout=10.0):
        """Connect (retrying while qemu has not yet made the socket) and negotiate capabilities."""
        import socket  # here: status and vmlist import this module and never connect (7 ms)
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise QmpError(f"no QMP socket at {path} after {timeout:g} s") from None
                time.sleep(0.02)
        qmp = cls(sock)
        qmp.greeting = qmp._read(deadline)
        if "QMP" not in qmp.greeting:
            raise QmpError(f"{path} is not a QMP socket")
        qmp.execute(CAPABILITIES, timeout=max(0.1, deadline - time.monotonic()))
        return qmp

    def fileno(self):
        """The socket, for select() alongside other waits."""
        return self._sock.fileno()

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def execute(self, command, arguments=None, timeout=10.0):
        """Run a command and return its `return` value; events meanwhile are queued."""
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise QmpError(f"QMP {command}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise QmpError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
            elif "return" in reply:
                return reply["return"]

    def wait_event(self, name, timeout=None):
        """The next event called `name` (or any of a tuple of names; earlier queued ones first);
        None when qemu closed first.

        Other events read meanwhile stay queued. Raises QmpError on timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        names = name if isinstance(name, tuple) else (name,)
        while True:
            for i, event in enumerate(self.events):
                if event["event"] in names:
                    return self.events.pop(i)
            try:
                msg = self._read(deadline)
            except QmpError as exc:
                if exc.message == _CLOSED:
                    return None
                raise
            if "event" in msg:
                self.events.append(msg)

    def _read(self, deadline):
        """One JSON message; blocks until `deadline` (monotonic, None: for ever)."""
        while b"\n" not in self._buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise QmpError("QMP: no answer in time")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:  # socket.timeout
                continue
            except OSError:
                chunk = b""
            if not chunk:
                raise QmpError(_CLOSED)
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise QmpError(f"QMP: not JSON: {line[:80]!r}") from None


_CLOSED = "QMP: qemu closed the connection"


def shutdown_reason(event):
    """The `reason` of a SHUTDOWN event ("" when there is none: qemu died without one)."""
    return (event or {}).get("data", {}).get("reason", "")
