"""The console relay: a terminal <-> the VM's serial socket, as cu does.

`~.` typed at the start of a line ends the relay (cu's escape; `~~` sends one `~`). Nothing is
logged here: qemu appends all the guest prints to console.log itself (hypervisor/qemu/backend.py).
No process is created here: the caller gives the terminal's fd and a connected socket.
"""

import os
import select
import termios
import tty
from contextlib import contextmanager

CHUNK = 65536


class EscapeFilter:
    """Bytes typed by the user -> bytes for the guest, watching for `~.` at a line's start."""

    def __init__(self):
        self.line_start, self.tilde = True, False

    def feed(self, data):
        """(bytes to send, True when `~.` was typed)."""
        out = bytearray()
        for byte in data:
            c = bytes((byte,))
            if self.tilde:
                self.tilde = False
                if c == b".":
                    return bytes(out), True
                out += b"~" if c == b"~" else b"~" + c
            elif c == b"~" and self.line_start:
                self.tilde = True
                continue
            else:
                out += c
            self.line_start = c in (b"\r", b"\n")
        return bytes(out), False


@contextmanager
def raw_terminal(fd):
    """The terminal in raw mode (every key goes to the guest, Ctrl-C included), restored after."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSADRAIN)  # not TCSAFLUSH: keys typed ahead of the attach go to the guest
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def relay(term_in, term_out, sock):
    """Copy until `~.` ("escape"), the guest side closes ("closed") or the terminal does ("hangup").

    The caller puts the terminal in raw mode (raw_terminal) and connects the socket.
    """
    keys = EscapeFilter()
    sock_fd = sock.fileno()
    while True:
        ready = select.select([term_in, sock_fd], [], [])[0]
        if sock_fd in ready:
            data = sock.recv(CHUNK)
            if not data:
                return "closed"
            _write_all(term_out, data)
        if term_in in ready:
            typed = os.read(term_in, CHUNK)
            if not typed:
                return "hangup"
            data, quit_now = keys.feed(typed)
            if data:
                sock.sendall(data)
            if quit_now:
                return "escape"


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
