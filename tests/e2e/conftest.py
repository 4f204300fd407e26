"""Real guests through the CLI as a user types it: ./vmcreate, ./insert, ./start -b, ./stop,
./console, vminfo, on the qemu backend with TCG (tests/guest's ISO booted through OVMF).

Each test boots as few times as it can and checks several things on one VM; on a failure the
VM's console.log and supervisor log are shown."""

import json
import os
import pty
import select
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import SIM_BIN, cmd, run_folder
from tests.guest import guestdisk
from tests.qemu.conftest import OVMF_CODE, guest_iso, need, qemu_bin  # noqa: F401 (fixtures)

BOOT_WAIT = 120   # seconds for the guest's banner (ISO through OVMF under TCG on a loaded machine)


@pytest.fixture
def env(env):
    """The suite's env with the qemu backend and TCG (KVM hangs on nested machines) on the Linux
    platform, as a stock Debian has it: no FreeBSD stand-in (sockstat, ifconfig, uname ...) on
    PATH, so that a command reaching for a FreeBSD tool fails here as it would there."""
    path = ":".join(p for p in env["PATH"].split(":") if Path(p) != SIM_BIN)
    return {**env, "KVM_HYPERVISOR": "qemu", "KVM_ACCEL": "tcg", "KVM_PLATFORM": "linux", "PATH": path}


@pytest.fixture
def netns():
    """A network namespace of the test's own (commands enter it with `nsenter --net`)."""
    if not (shutil.which("ip") and shutil.which("nsenter")):
        pytest.skip("iproute2 or nsenter (util-linux) is missing")
    name = f"kvmb{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=True)


def links(ns=None):
    """{interface name: ip's JSON of it} in a namespace (None: the host's)."""
    where = ["-n", ns] if ns else []
    out = subprocess.run(["ip", *where, "-j", "link", "show"], check=True, capture_output=True, text=True)
    return {link["ifname"]: link for link in json.loads(out.stdout)}


class Vm:
    """One VM made with ./vmcreate, its test-guest disk scripted; helpers read its logs."""

    def __init__(self, root, env, name, iso):
        self.root, self.env, self.name, self.iso = root, env, name, iso
        self.dir = Path(root) / "vm" / name
        self.disk = self.dir / "disk"

    def run(self, *args, ok=True, timeout=120):
        res = cmd(self.root, self.env, *args, timeout=timeout)
        if ok:
            assert res.returncode == 0, self.explain(f"{args}: exit {res.returncode}\n{res.stdout}{res.stderr}")
        return res

    def console_log(self):
        try:
            return (self.dir / "console.log").read_text(errors="replace")
        except OSError:
            return ""

    def supervisor_log(self):
        try:
            return (self.dir / f"{self.name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def explain(self, what):
        return (f"{what}\n--- console.log (tail) ---\n{self.console_log()[-3000:]}\n"
                f"--- {self.name}.log (tail) ---\n{self.supervisor_log()[-3000:]}")

    def wait_console(self, text, timeout=BOOT_WAIT, count=1):
        """Seconds until console.log holds `text` `count` times."""
        start = time.monotonic()
        while self.console_log().count(text) < count:
            if time.monotonic() - start > timeout:
                pytest.fail(self.explain(f"no {text!r} (x{count}) in console.log after {timeout} s"))
            time.sleep(0.2)
        return time.monotonic() - start

    def info(self):
        return json.loads(self.run("vminfo", "--json", self.name).stdout)

    def state(self):
        return json.loads((run_folder(self.env, self.root, self.name) / "state").read_text())


@pytest.fixture
def make_vm(install, env, guest_iso):
    """make_vm(name, script, *vmcreate flags) -> a Vm with the guest ISO inserted."""
    made = []

    def make(name, script="", *flags):
        vm = Vm(install, env, name, guest_iso)
        vm.run("vmcreate", name, "-y", "--loader", "uefi", "--mem", "256M", "--disk-size", "64M",
               "--com", "yes", "--no-network", *flags)
        guestdisk.make_disk(vm.disk, script)
        vm.run("insert", name, guest_iso)
        made.append(vm)
        return vm

    yield make
    for vm in made:
        subprocess.run(["./stop", "-f", vm.name], cwd=install, env=env, capture_output=True, timeout=60)


class Terminal:
    """A command run on a pseudo-terminal, as a user at a terminal runs it."""

    def __init__(self, argv, cwd, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.out = b""

    def read_until(self, text, timeout=30):
        end = time.monotonic() + timeout
        while text.encode() not in self.out:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                pytest.fail(f"no {text!r} on the terminal in {timeout} s; got:\n{self.out[-2000:]!r}")
            try:
                self.out += os.read(self.fd, 4096)
            except OSError:
                pytest.fail(f"terminal closed before {text!r}; got:\n{self.out[-2000:]!r}")

    def type(self, text):
        os.write(self.fd, text.encode())

    def wait(self, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                if select.select([self.fd], [], [], 0.1)[0]:
                    self.out += os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"the terminal's command did not end in {timeout} s; got:\n{self.out[-2000:]!r}")


def rfb_banner(port, timeout=10):
    """(the server's RFB version line, the first security type it offers: 1 none, 2 VNC password)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        banner = s.recv(12)
        s.sendall(b"RFB 003.008\n")
        types = s.recv(16)
        return banner, types[1] if len(types) > 1 else None
