"""Commands (argv lists, never shell strings), processes and signals: the part of host's door that
starts and stops processes. Mutating calls obey the dry run (see mode.py)."""

import os
import shlex
import signal
from pathlib import Path

from kvm.errors import CommandFailed
from kvm.host.mode import _debug, _plan, dry_run

# subprocess and tempfile are imported where used: status and vmlist never need them.


class Result:
    """What a finished command gave back."""

    __slots__ = ("argv", "status", "stdout", "stderr")

    def __init__(self, argv, status, stdout, stderr):
        self.argv, self.status, self.stdout, self.stderr = argv, status, stdout, stderr


def run(argv, *, mutating=True, check=True, input=None, env=None, capture=True, vm=None, new_session=False,
        own_stdin=False):
    """Run argv and wait; raise CommandFailed on non-zero status when check is set. new_session:
    out of the terminal's process group, so a Ctrl-C meant for us does not reach it. own_stdin:
    the command reads our stdin (vmrecv's zfs receive reads the stream ssh hands us)."""
    argv = [str(a) for a in argv]
    line = shlex.join(argv)
    if mutating and dry_run():
        _plan(line)
        return Result(argv, 0, "", "")
    _debug("%s", line)
    import subprocess
    pipe = subprocess.PIPE if capture else None
    try:
        proc = subprocess.run(argv, input=input, stdout=pipe, stderr=pipe, text=True, env=env,
                              stdin=None if input is not None or own_stdin else subprocess.DEVNULL,
                              start_new_session=new_session)
    except FileNotFoundError:
        raise CommandFailed(argv, 127, f"{argv[0]}: command not found", vm=vm) from None
    res = Result(argv, proc.returncode, proc.stdout or "", proc.stderr or "")
    if check and res.status != 0:
        raise CommandFailed(argv, res.status, res.stderr, vm=vm)
    return res


class Pending:
    """A read-only command started by run_later; result() waits for it."""

    def __init__(self, argv, pid, fds, vm):
        self.argv, self._pid, self._fds, self._vm = argv, pid, fds, vm

    def result(self, check=False):
        if self._pid is None:
            res = Result(self.argv, 127, "", f"{self.argv[0]}: command not found")
        else:
            import select
            chunks = {fd: [] for fd in self._fds}
            left = list(self._fds)
            while left:  # read both pipes as they fill, so neither can block the command
                for fd in select.select(left, [], [])[0]:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        chunks[fd].append(chunk)
                    else:
                        left.remove(fd)
                        os.close(fd)
            status = os.waitstatus_to_exitcode(os.waitpid(self._pid, 0)[1])
            out, err = (b"".join(chunks[fd]).decode(errors="replace") for fd in self._fds)
            res = Result(self.argv, status, out, err)
        if check and res.status != 0:
            raise CommandFailed(self.argv, res.status, res.stderr, vm=self._vm)
        return res


def run_later(argv, *, vm=None):
    """Start a read-only command now and collect it later, so its wait overlaps other work.

    posix_spawn and two pipes, not subprocess: the commands that use this (vminfo) are the
    ones whose start-up time counts, and subprocess with what it imports costs ~10 ms.
    """
    argv = [str(a) for a in argv]
    _debug("%s", shlex.join(argv))
    out_r, out_w = os.pipe()  # close-on-exec: the child keeps only its dup2'd 1 and 2
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    except FileNotFoundError:
        os.close(out_r)
        os.close(err_r)
        return Pending(argv, None, (), vm)
    finally:
        os.close(out_w)
        os.close(err_w)
    return Pending(argv, pid, (out_r, err_r), vm)


PIPE = "pipe"  # spawn(stdin=PIPE, stdout=PIPE): a pipe to the child, without the caller importing subprocess


def spawn(argv, *, stdin=None, stdout=None, stderr=None, env=None, new_session=False, pass_fds=(),
          shown=None):
    """Start argv without waiting; returns the Popen object. `shown`: the line to log instead of
    argv (secrets masked)."""
    import subprocess
    argv = [str(a) for a in argv]
    _debug("%s &", shown or shlex.join(argv))
    stdin, stdout = (subprocess.PIPE if x == PIPE else x for x in (stdin, stdout))
    return subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                            stdout=stdout, stderr=stderr, env=env,
                            start_new_session=new_session, pass_fds=pass_fds)


class Timeout(Exception):
    """wait_process ran out of time."""


def wait_process(proc, timeout=None):
    """Wait for a spawned process; its exit status (negative: killed by that signal)."""
    import subprocess
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Timeout() from None


def run_limited(argv, seconds):
    """Run a read-only probe with a time limit: its exit status, or None when it did not end in
    time (then it is killed). Its output is discarded."""
    import subprocess
    argv = [str(a) for a in argv]
    _debug("%s (limit %ss)", shlex.join(argv), seconds)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return None
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def spawn_quiet(argv, shown=None):
    """Start argv with stdout discarded (bhyve prints nothing we want), in a session of its own:
    the terminal's signals (Ctrl-C) go to us, and we stop it our way."""
    import subprocess
    return spawn(argv, stdout=subprocess.DEVNULL, new_session=True, shown=shown)


def exec_replace(argv):
    """Replace this process with argv (for interactive tools such as cu)."""
    argv = [str(a) for a in argv]
    _debug("exec %s", shlex.join(argv))
    os.execvp(argv[0], argv)


def send_signal(pid, sig, *, mutating=True):
    """Send a signal; False when the process is already gone."""
    if mutating and dry_run():
        _plan(f"kill -{signal.Signals(sig).name[3:]} {pid}")
        return True
    _debug("kill -%s %s", signal.Signals(sig).name[3:], pid)
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def set_affinity(tid, cpus):
    """Let thread (or process) `tid` run only on the host CPUs `cpus` (sched_setaffinity)."""
    _debug("taskset -pc %s %s", ",".join(str(c) for c in sorted(cpus)), tid)
    os.sched_setaffinity(tid, set(cpus))


def kill_group(pgid):
    """SIGKILL a whole process group (a hook and what it started); False when already gone."""
    _debug("kill -KILL -%s", pgid)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def pid_alive(pid):
    """True when a process with this pid exists (zombies included)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie has exited: it is not alive for us (its parent may never reap it).
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def process_args(pid):
    """The argument list of a live process, or None (procfs where mounted, else ps)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.is_dir():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        return [a.decode(errors="replace") for a in raw.split(b"\0") if a] or None
    res = run(["ps", "-ww", "-o", "args=", "-p", str(pid)], mutating=False, check=False)
    text = res.stdout.strip()
    return text.split() if res.status == 0 and text else None


def parent_pid(pid):
    """The parent's pid of a live process, or 0 (procfs where mounted, else ps)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.is_dir():
        try:
            fields = stat.read_text(errors="replace").rpartition(")")[2].split()
            return int(fields[1])
        except (OSError, ValueError, IndexError):
            return 0
    res = run(["ps", "-o", "ppid=", "-p", str(pid)], mutating=False, check=False)
    text = res.stdout.strip()
    return int(text) if res.status == 0 and text.isdigit() else 0


def list_processes():
    """(pid, args) for every process: one `ps` call (used only as a fallback). -ww: whole command
    lines, whatever COLUMNS says (ps cuts them to its width otherwise, and a long path pushes the
    dataset a `zfs destroy` works on out of sight)."""
    res = run(["ps", "-ax", "-ww", "-o", "pid=,args="], mutating=False, check=False)
    out = []
    for line in res.stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit():
            out.append((int(pid), args.split()))
    return out


def is_root():
    """True when running with uid 0."""
    return os.geteuid() == 0
