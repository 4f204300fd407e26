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

    def __init__(self, argv, here=None):
        """here: a function that does what argv would, run in a forked copy of this process
        instead (no interpreter to start when argv is this very Python: vmsend --local's vmrecv);
        it returns the exit status. argv then only names it in messages and logs."""
        import tempfile
        self.argv = [str(a) for a in argv]
        self._err = tempfile.TemporaryFile()
        if here is None:
            self.proc = host.spawn(self.argv, stdin=host.PIPE, stdout=host.PIPE, stderr=self._err)
        else:
            mode._debug("%s &    # forked", shlex.join(self.argv))
            self.proc = Forked(here, self._err.fileno())
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


class Forked:
    """A forked child running a function as if it were a command of its own: its stdin and stdout
    are pipes to us (`stdin`, `stdout` as Popen has them), its stderr `err_fd`; `pid`, `wait()`."""

    def __init__(self, function, err_fd):
        import sys
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # what we buffered is ours to write, not the child's
        self.pid = os.fork()
        if self.pid == 0:
            _child(function, in_r, out_w, err_fd)  # never returns
        os.close(in_r)
        os.close(out_w)
        self.stdin, self.stdout = os.fdopen(in_w, "wb"), os.fdopen(out_r, "rb")
        self.returncode = None

    def wait(self):
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _child(function, in_r, out_w, err_fd):
    """The forked side of Forked: fds 0, 1, 2 are the pipes and err_fd, nothing else of ours stays
    open (no lock of the parent's), the signals and streams are a new command's; exits with
    function()'s status."""
    import gc
    import sys
    status = 1
    try:
        gc.disable()  # no finalizer of the parent's objects may close an fd number we reuse
        os.dup2(in_r, 0)
        os.dup2(out_w, 1)
        os.dup2(err_fd, 2)
        os.closerange(3, max(os.sysconf("SC_OPEN_MAX"), in_r + 1, out_w + 1, err_fd + 1))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        mode.set_dry_run(False)
        mode.set_debug(False)
        status = function()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must never go back into the parent's code
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(status if isinstance(status, int) else 1)


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
