"""Streams between processes, part of host's door (host.relay, host.Peer): `sender | (count) |
receiver`, where the receiver is a Peer: a command that answers one line on stdout first (what
vmrecv found on DEST), then takes a request line and the stream on its stdin. Processes start
through host.spawn only."""

import os
import shlex
import signal

from kvm.host import mode
from kvm.host import process as host


class Peer:
    """A command we talk to over its stdin and stdout; its stderr is kept for the error line."""

    def __init__(self, argv):
        import tempfile
        self.argv = [str(a) for a in argv]
        self._err = tempfile.TemporaryFile()
        self.proc = host.spawn(self.argv, stdin=host.PIPE, stdout=host.PIPE, stderr=self._err)
        self.result = None
        self.asked = False  # a request was written: from then on it is only waited for

    def line(self):
        """Its next line on stdout (no newline), or None when it ended without one."""
        raw = self.proc.stdout.readline()
        return raw.decode(errors="replace").rstrip("\n") if raw.endswith(b"\n") else None

    def write(self, data):
        """Write all of data to its stdin (BrokenPipeError when it ended)."""
        self.asked = True
        view = memoryview(data)
        while view:
            view = view[os.write(self.proc.stdin.fileno(), view):]

    def abandon(self):
        """End it without waiting for it to look further (an ssh still connecting, say): a peer
        never asked anything has only looked, so it is signalled; one asked is waited for."""
        if self.result is None and not self.asked:
            host.send_signal(self.proc.pid, signal.SIGTERM, mutating=False)  # our child, not yet waited for
        return self.finish()

    def finish(self):
        """Close its stdin (a peer still waiting for a request ends on that EOF), wait for it;
        its Result (what it printed after its first line)."""
        if self.result is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            out = self.proc.stdout.read()
            self.proc.stdout.close()
            status = self.proc.wait()
            self._err.seek(0)
            err = self._err.read().decode(errors="replace")
            self._err.close()
            self.result = host.Result(self.argv, status, out.decode(errors="replace"), err)
        return self.result


def _widen_pipes(inp, out, size):
    """Linux pipes hold 64 KiB: a wider one wakes the three processes of a relay less often.
    Elsewhere (FreeBSD grows its pipes itself), or when refused, they stay as they are."""
    import fcntl
    for fd in (inp, out):
        try:
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ"), size)
        except (AttributeError, OSError):
            pass


def _pump(inp, out, chunk, counted):
    """Move bytes from inp to out until EOF; returns how many (BrokenPipeError when out closes)."""
    _widen_pipes(inp, out, chunk)
    # Linux moves pipe pages with splice, never copying them through us; elsewhere they pass
    # through one buffer read into again and again (os.read(fd, 1 MiB) allocated, and the kernel
    # mapped, a fresh MiB per call, which made the relay several times slower than a bare pipe)
    splice = getattr(os, "splice", None)
    buf = bytearray(chunk)
    whole, total = memoryview(buf), 0
    while True:
        got = splice(inp, out, chunk) if splice else os.readv(inp, [buf])
        if not got:
            return total
        view = b"" if splice else whole[:got]
        while view:
            view = view[os.write(out, view):]
        total += got
        if counted:
            counted(total)


def relay(sender, peer, counted=None, request=b"", chunk=1 << 18):
    """sender | (count) | peer, after writing `request` to the peer: each chunk passes through
    us, so counted(total) can report progress. Returns (sender Result, peer Result, bytes). If
    we are killed, the sender gets EPIPE and the peer EOF: neither is signalled, so a zfs process
    is never killed mid-unmount."""
    import tempfile
    mode._debug("%s | (count) | %s", shlex.join(sender), shlex.join(peer.argv))
    with tempfile.TemporaryFile() as err:
        src = host.spawn(sender, stdout=host.PIPE, stderr=err)
        total = 0
        try:
            peer.write(request)
            total = _pump(src.stdout.fileno(), peer.proc.stdin.fileno(), chunk, counted)
        except BrokenPipeError:
            pass  # the peer ended early: its status and stderr say why (what it got is not counted)
        finally:
            src.stdout.close()  # a sender still writing gets EPIPE and ends
        got = peer.finish()
        status = src.wait()
        err.seek(0)
        sent = host.Result(sender, status, "", err.read().decode(errors="replace"))
    return sent, got, total
