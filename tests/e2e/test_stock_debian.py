"""A Linux admin's first hour (issue 20): README's "On Linux" lines run as they are written, on a
host that has what a stock Debian 12 has and nothing of kvm's test set-up.

The block of commands is read from README.md, and each line is run with /bin/sh: Debian's own
python3 makes the virtualenv, its pip installs a copy of this checkout, its kvminst installs the
root (answering its question as an admin does), then `./vmcreate web -y`, `./insert`, `./start
-b`, `./vminfo` and `./stop` in the root, a real guest (tests/guest) booting from its ISO.
What differs from an admin's host, and why: the pool is the test's (README's `tank`), `/opt/kvm` a
folder of the test's, the ISO the test guest's; `./start` runs inside a network namespace of the
test's (`nsenter --net`: its tap and bridge never appear in the host's); KVM_ACCEL=tcg (KVM hangs
on nested machines) and the KVM_* paths of run state and schedules point into the test's folder.
PATH holds Debian's /usr/bin, /usr/sbin, /bin and /sbin only, less `ifconfig` and `sockstat` (no
FreeBSD stand-in, no net-tools, nothing of the test's virtualenv); KVM_PLATFORM, KVM_HYPERVISOR
and PYTHONPATH are unset, so kvm finds out for itself that this is Linux with qemu. A line the
test does not know fails it: README and test change together."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, destroy_dataset
from tests.e2e.conftest import links, netns  # noqa: F401 (fixture)
from tests.guest import guestdisk

pytestmark = pytest.mark.guest

SYSTEM_BIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
ABSENT = ("ifconfig", "sockstat")   # FreeBSD's tools (net-tools has an ifconfig): not on this PATH
BOOT_WAIT = 180


def readme_lines():
    """The commands of README's "On Linux" block, comments left out."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## On Linux"):]
    section = section[:section.index("\n## ", 1)]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def stock_path(folder):
    """A PATH folder of links to Debian's own commands, less ABSENT."""
    folder.mkdir()
    for bin_dir in SYSTEM_BIN:
        for entry in sorted(Path(bin_dir).iterdir()) if Path(bin_dir).is_dir() else []:
            if entry.name not in ABSENT and not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return str(folder)


@pytest.fixture
def stock_env(env, tmp_path):
    """The environment of a root shell on a stock Debian, but for the test's own system folders."""
    e = {k: v for k, v in env.items()
         if k not in ("PYTHONPATH", "KVM_PLATFORM", "KVM_HYPERVISOR", "KVM_ROOT", "VIRTUAL_ENV",
                      "KVM_GRUB_BHYVE", "KVM_FIRMWARE_DIRS", "KVM_VMM_DIR", "KVM_DEV_DIR")
         and not k.startswith("KVM_SIM")}
    e["PATH"] = stock_path(tmp_path / "bin")
    e["KVM_ACCEL"] = "tcg"
    for tool in ABSENT:
        assert shutil.which(tool, path=e["PATH"]) is None
    return e


def test_readme_linux_section_on_a_stock_debian(pool, stock_env, guest_iso, netns, tmp_path):  # noqa: F811
    env = stock_env
    for package in ("qemu-system-x86", "ovmf", "python3-venv"):  # what README's apt-get line installs
        if subprocess.run(["dpkg", "-s", package], capture_output=True).returncode != 0:
            pytest.skip(f"{package} is not installed (apt-get install {package})")
    venv = tmp_path / "opt-kvm"
    src = tmp_path / "src"  # the checkout as an admin has it: no tests, no virtualenv
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "tests", "bench", "__pycache__",
                                                            "*.egg-info", "build", ".pytest_cache", ".hypothesis"))
    root = Path(f"/{pool}/kvm")
    destroy_dataset(f"{pool}/kvm")
    cwd, seen = src, []

    def run(line, stdin="", prefix=(), timeout=300):
        words = line.replace("/opt/kvm", str(venv))
        words = re.sub(r"\btank\b", pool, words)
        words = re.sub(r"/iso/\S+\.iso", guest_iso, words)
        res = subprocess.run([*prefix, "/bin/sh", "-c", words], cwd=cwd, env=env, input=stdin,
                             capture_output=True, text=True, timeout=timeout)
        assert res.returncode == 0, f"{line}: exit {res.returncode}\n{res.stdout}{res.stderr}\n{explain()}"
        return res

    def explain():
        out = []
        for name in ("console.log", "web.log"):
            try:
                out.append(f"--- {name} ---\n" + (root / "vm" / "web" / name).read_text(errors="replace")[-3000:])
            except OSError:
                pass
        return "\n".join(out)

    try:
        for line in readme_lines():
            seen.append(line)
            if line.startswith("apt-get install"):
                continue  # checked above: this host has them
            if line.startswith("python3 -m venv"):
                assert shutil.which("python3", path=env["PATH"]) and \
                    os.path.realpath(shutil.which("python3", path=env["PATH"])).startswith("/usr/bin/python3")
                run(line)
            elif line.startswith("/opt/kvm/bin/pip install"):
                run(line)
                shutil.rmtree(src / "kvm")  # from now on kvm comes from the virtualenv only
            elif line.startswith("/opt/kvm/bin/kvminst"):
                res = run(line, stdin="y\n")  # it asks before installing: the admin says yes
                assert f"the commands run {venv}/bin/python" in res.stderr, res.stderr
                for word in ("sysrc", "rc.d/kvm", "/usr/local/etc"):
                    assert word not in res.stderr + res.stdout, res.stderr
            elif line.startswith("cd "):
                cwd = Path(re.sub(r"\btank\b", pool, line[3:]))
                assert cwd == root
            elif line.startswith("./vmcreate web -y"):
                res = run(line)
                assert (root / "start").read_text().startswith(f"#!{venv}/bin/python")
                run_text = (root / "vm" / "web" / "run").read_text()
                assert "BridgeAdd bridgeLOCAL tapWEB" in run_text and "ifconfig" not in run_text
                with open(root / "vm" / "web" / "disk", "r+b") as disk:  # the test guest's script: none
                    disk.write(b"\0" * (guestdisk.SCRIPT_SIZE + 512))
            elif line.startswith("./insert web"):
                run(line)
            elif line.startswith("./start -b web"):
                run(line, prefix=["nsenter", f"--net=/run/netns/{netns}"], timeout=180)
                wait_console(root / "vm" / "web" / "console.log", "KVMGUEST up boot=1", explain)
                inner = links(netns)
                assert inner["tapWEB"].get("master") == "bridgeLOCAL", inner
                assert not {"tapWEB", "bridgeLOCAL"} & set(links())
            elif line.startswith("./vminfo web"):
                out = run(line).stdout
                assert re.search(r"^state: +running, pid \d+", out, re.M), out
                assert re.search(r"^hypervisor: +qemu, accelerator tcg$", out, re.M), out
                assert re.search(r"^com: +on: console web$", out, re.M), out
            elif line.startswith("./stop web"):
                out = run(line, timeout=120).stdout
                assert out == "web: shut down by the guest (ACPI power button)\n", out
                assert "KVMGUEST poweroff (ACPI power button)" in (root / "vm" / "web" / "console.log").read_text()
            else:
                pytest.fail(f"README's Linux block has a line this test does not know: {line!r}")
        assert [line.split()[0] for line in seen][:2] == ["apt-get", "python3"] and len(seen) >= 10, seen
        end = time.monotonic() + 15  # postRun's DestroyIF, inside the namespace
        while "tapWEB" in links(netns) and time.monotonic() < end:
            time.sleep(0.2)
        assert "tapWEB" not in links(netns)
    finally:
        subprocess.run([str(root / "stop"), "-f", "web"], cwd="/", env=env, capture_output=True, timeout=60)
        destroy_dataset(f"{pool}/kvm")


def wait_console(path, text, explain, timeout=BOOT_WAIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if text in path.read_text(errors="replace"):
                return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"no {text!r} in {path} after {timeout} s\n{explain()}")
