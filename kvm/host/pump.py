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

    def __init__(self, argvs, *, feed, out=None):
        """feed: we write its stdin; else we read its stdout, or (out, a file descriptor) its last
        command writes there itself."""
        self.procs, self.errs = [], []
        prev = None
        for i, argv in enumerate(argvs):
            err = tempfile.TemporaryFile()
            first, last = i == 0, i == len(argvs) - 1
            stdin = process.PIPE if (feed and first) else prev
            stdout = None if (feed and last) else process.PIPE
            if last and out is not None:
                stdout = out
            proc = process.spawn(argv, stdin=stdin if stdin is not None else None, stdout=stdout, stderr=err)
            if prev is not None:
                prev.close()   # the child holds it now
            prev = proc.stdout
            self.procs.append(proc)
            self.errs.append(err)
        self.stdin = self.procs[0].stdin if feed else None
        self.stdout = self.procs[-1].stdout if not feed and out is None else None

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


def _widen(fd, size=CHUNK):
    """A Linux pipe holds 64 KiB: a wider one means fewer wake-ups (elsewhere, or refused: as is)."""
    import fcntl
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ"), size)
    except (AttributeError, OSError):
        pass


class Hasher:
    """sha256 in a thread of its own (hashlib lets go of the GIL on large buffers), so hashing a
    chunk overlaps writing it and reading the next: one chunk in flight at a time."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor
        self.digest, self.pool, self.pending = hashlib.sha256(), ThreadPoolExecutor(1), None

    def update(self, data):
        if self.pending is not None:
            self.pending.result()
        self.pending = self.pool.submit(self.digest.update, data)

    def hexdigest(self):
        if self.pending is not None:
            self.pending.result()
        self.pool.shutdown()
        return self.digest.hexdigest()


def _read_full(fd, size):
    """Up to `size` bytes from a pipe: reads until that much came or EOF (fewer, larger writes)."""
    parts, got = [], 0
    while got < size:
        data = os.read(fd, size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def pump_out(argvs, fd, progress=None):
    """The pipeline's output written to fd: (bytes, sha256 hex, [(argv, status, stderr)]).
    An OSError of the write (a full pool) is raised after the pipeline is stopped."""
    pipe = Pipeline(argvs, feed=False)
    digest, total = Hasher(), 0
    try:
        src = pipe.stdout.fileno()
        _widen(src)
        while True:
            data = _read_full(src, CHUNK)
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
        digest.hexdigest()
        pipe.kill()
        pipe.finish()
        raise
    return total, digest.hexdigest(), pipe.finish()


def pump_to_file(argvs, fd, progress=None, tick=0.05):
    """The pipeline's last command writes into the regular file fd (opened for reading and writing)
    at its current offset itself: no copy through this process (zfs-fuse's `zfs send` writes a
    file 2-3 times faster than a pipe). A thread hashes behind it as the file grows. Returns
    (bytes, sha256 hex, [(argv, status, stderr)])."""
    import threading
    import time
    start = os.lseek(fd, 0, os.SEEK_CUR)
    digest, state = hashlib.sha256(), {"done": 0, "end": None}

    def follow():
        while True:
            have = os.fstat(fd).st_size - start
            while state["done"] < have:
                data = os.pread(fd, min(CHUNK, have - state["done"]), start + state["done"])
                if not data:
                    break
                digest.update(data)
                state["done"] += len(data)
            if state["end"] is not None and state["done"] >= state["end"]:
                return
            time.sleep(tick)
    pipe = Pipeline(argvs, feed=False, out=fd)
    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        while any(p.poll() is None for p in pipe.procs):
            time.sleep(tick)
            if progress:
                progress(state["done"])
    except BaseException:
        pipe.kill()
        pipe.finish()
        state["end"] = 0
        raise
    results = pipe.finish()
    end = os.lseek(fd, 0, os.SEEK_END) - start
    state["end"] = end
    thread.join()
    return end, digest.hexdigest(), results


def pump_in(path, offset, size, argvs, progress=None):
    """Bytes [offset, offset+size) of the file at path into the pipeline: [(argv, status, stderr)].
    A pipeline that ends early (a refused stream) is not an error here: its status says so.
    One command alone (`zfs receive`, which reads a stream to its END record and no further) reads
    the file itself from offset: no copy through this process."""
    if len(argvs) == 1:
        return _direct_in(path, offset, argvs[0], progress)
    pipe = Pipeline(argvs, feed=True)
    sent = 0
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            dst = pipe.stdin.fileno()
            _widen(dst)
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


def _direct_in(path, offset, argv, progress, tick=0.05):
    import time
    with open(path, "rb") as fh:
        fh.seek(offset)
        err = tempfile.TemporaryFile()
        proc = process.spawn(argv, stdin=fh, stderr=err)
        while proc.poll() is None:
            time.sleep(tick)
            if progress:
                try:
                    progress(os.lseek(fh.fileno(), 0, os.SEEK_CUR) - offset)
                except OSError:
                    pass
        err.seek(0)
        out = [(proc.args, proc.returncode, err.read().decode(errors="replace"))]
        err.close()
    return out


def hash_range(fh, offset, size, progress=None, done=0):
    """(sha256 hex, bytes read) of [offset, offset+size) of an open binary file (the next chunk
    is read while the last one is hashed)."""
    digest, read = Hasher(), 0
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
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


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
