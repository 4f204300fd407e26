"""Real qemu for the tests here: a guest harness over kvm.hypervisor.qemu's argv (TCG, no KVM).

Skips when qemu (or, for guest tests, root / OVMF / the guest builder's tools) is missing,
unless CI=true, where a missing piece is a failure.
"""

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kvm.conf import config
from kvm.hypervisor.qemu import argv as qemu
from kvm.hypervisor.qemu.qmp import Qmp
from tests.guest import guestdisk

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def need(why):
    if IN_CI:
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def qemu_bin():
    path = shutil.which(qemu.BINARY)
    if not path:
        need(f"{qemu.BINARY} is not installed (apt-get install qemu-system-x86)")
    return path


@pytest.fixture
def short_dir():
    """A folder with a short path: unix socket paths are limited to 107 bytes."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="kq", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def guest_iso(qemu_bin):
    if os.geteuid() != 0:
        need("building the test guest needs root")
    if not OVMF_CODE.exists():
        need(f"{OVMF_CODE} is missing (apt-get install ovmf)")
    res = subprocess.run([str(REPO / "tests/guest/build-guest")], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"build-guest failed: {res.stderr.strip()[-2000:]}")
    return res.stdout.strip()


class Serial:
    """Everything the guest prints on COM1, read from the console socket in a thread."""

    def __init__(self, path, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX)
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.data, self.cond = b"", threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        while True:
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                chunk = b""
            with self.cond:
                self.data += chunk
                self.cond.notify_all()
            if not chunk:
                return

    def wait_for(self, text, timeout=90):
        """Seconds until `text` appeared; fails the test with the output so far when it does not."""
        start = time.monotonic()
        with self.cond:
            if not self.cond.wait_for(lambda: text.encode() in self.data, timeout):
                pytest.fail(f"no {text!r} on the console in {timeout} s; got:\n"
                            f"{self.data[-2000:].decode(errors='replace')}")
        return time.monotonic() - start

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")


class Guest:
    """One qemu running the test guest from the argv our builder makes."""

    def __init__(self, vmdir, run_dir, iso, script, values, prefix=()):
        self.vmdir, self.disk = vmdir, vmdir / "disk"
        guestdisk.make_disk(self.disk, script)
        shutil.copy(OVMF_VARS, vmdir / qemu.VARS_FILE)
        conf = {"VMrom": "uefi", "Cores": "1", "Mem": "256M", "Disk": "disk", "ISO": iso, "COM": "1"}
        conf.update(values)
        self.cfg = config.validate(vmdir.name, vmdir, conf)
        (run_dir / vmdir.name).mkdir(exist_ok=True)  # the VM's run folder: its qmp and console sockets
        self.plan = qemu.plan(self.cfg, sockets=qemu.run_files(run_dir / vmdir.name), code=str(OVMF_CODE))
        self.started = time.monotonic()
        self.proc = subprocess.Popen([*prefix, *self.plan.argv], stdin=subprocess.DEVNULL,
                                     stdout=open(vmdir / "qemu.out", "wb"), stderr=subprocess.STDOUT)
        self.qmp = Qmp.connect(self.plan.qmp)
        self.serial = Serial(self.plan.console)

    def wait_exit(self, timeout=60):
        """(SHUTDOWN reason, qemu's exit status, seconds from the call to the exit)."""
        start = time.monotonic()
        event = self.qmp.wait_event("SHUTDOWN", timeout=timeout)
        code = self.proc.wait(timeout=timeout)
        return (event or {}).get("data", {}).get("reason"), code, time.monotonic() - start

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.qmp.close()


@pytest.fixture
def guest(guest_iso, short_dir):
    """start(script, **set.conf values) -> a running Guest; all are killed at the end."""
    made = []

    def start(script="", prefix=(), **values):
        vmdir = short_dir / f"vm{len(made)}"
        vmdir.mkdir()
        made.append(Guest(vmdir, short_dir, guest_iso, script, values, prefix))
        return made[-1]

    yield start
    for g in made:
        g.close()
