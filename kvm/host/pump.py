"""Byte streams between a pipeline of commands and a file, hashed on the way (vmexport, vmrestore):
part of host's door (processes start through host.spawn only, files are opened here).

pump_out: `CMD1 | CMD2 ...` -> a file descriptor, with the sha256 and the byte count of what was
written; pump_in: a byte range of a file -> `CMD1 | CMD2 ...`; hash_range: the sha256 of a range.
Each gives the statuses and stderr of its commands, so the caller says which failed and why.
"""

import hashlib
import os
import tempfile

from kvm.host import process

CHUNK = 1 << 20


class Pipeline:
    """argvs started as one pipeline: the first's stdin (or stdout) is ours, each stderr kept."""

    def __init__(self, argvs, *, feed):
        self.procs, self.errs = [], []
        prev = None
        for i, argv in enumerate(argvs):
            err = tempfile.TemporaryFile()
            first, last = i == 0, i == len(argvs) - 1
            stdin = process.PIPE if (feed and first) else prev
            stdout = None if (feed and last) else process.PIPE
            if feed and last:
                stdout = None
            proc = process.spawn(argv, stdin=stdin if stdin is not None else None, stdout=stdout, stderr=err)
            if prev is not None:
                prev.close()   # the child holds it now
            prev = proc.stdout
            self.procs.append(proc)
            self.errs.append(err)
        self.stdin = self.procs[0].stdin if feed else None
        self.stdout = self.procs[-1].stdout if not feed else None

    def finish(self):
        """[(argv, status, stderr text)] once every command ended."""
        for stream in (self.stdin, self.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        out = []
        for proc, err in zip(self.procs, self.errs):
            status = proc.wait()
            err.seek(0)
            out.append((proc.args, status, err.read().decode(errors="replace")))
            err.close()
        return out

    def kill(self):
        import signal
        for proc in self.procs:
            if proc.poll() is None:
                process.send_signal(proc.pid, signal.SIGKILL, mutating=False)


def pump_out(argvs, fd, progress=None):
    """The pipeline's output written to fd: (bytes, sha256 hex, [(argv, status, stderr)]).
    An OSError of the write (a full pool) is raised after the pipeline is stopped."""
    pipe = Pipeline(argvs, feed=False)
    digest, total = hashlib.sha256(), 0
    try:
        src = pipe.stdout.fileno()
        while True:
            data = os.read(src, CHUNK)
            if not data:
                break
            digest.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            total += len(data)
            if progress:
                progress(total)
    except BaseException:
        pipe.kill()
        pipe.finish()
        raise
    return total, digest.hexdigest(), pipe.finish()


def pump_in(path, offset, size, argvs, progress=None):
    """Bytes [offset, offset+size) of the file at path into the pipeline: [(argv, status, stderr)].
    A pipeline that ends early (a refused stream) is not an error here: its status says so."""
    pipe = Pipeline(argvs, feed=True)
    sent = 0
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            dst = pipe.stdin.fileno()
            while sent < size:
                data = fh.read(min(CHUNK, size - sent))
                if not data:
                    break
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(dst, view):]
                except BrokenPipeError:
                    break
                sent += len(data)
                if progress:
                    progress(sent)
    except BaseException:
        pipe.kill()
        pipe.finish()
        raise
    return pipe.finish()


def hash_range(fh, offset, size, progress=None, done=0):
    """(sha256 hex, bytes read) of [offset, offset+size) of an open binary file."""
    digest, read = hashlib.sha256(), 0
    fh.seek(offset)
    while read < size:
        data = fh.read(min(CHUNK, size - read))
        if not data:
            break
        digest.update(data)
        read += len(data)
        if progress:
            progress(done + read)
    return digest.hexdigest(), read


def create_exclusive(path, mode=0o600):
    """A new file for writing (never an existing one, never through a link): its fd."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def spool(src_fd, path, mode=0o600):
    """Copy everything from src_fd (stdin) into a new file at path; its size. The file is removed
    on any failure (a full pool)."""
    fd = create_exclusive(path, mode)
    total = 0
    try:
        while True:
            data = os.read(src_fd, CHUNK)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            total += len(data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return total
