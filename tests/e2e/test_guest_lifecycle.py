"""A real guest's life through the CLI: boot from the inserted ISO through OVMF, console, VNC,
ACPI stop; reboot with hooks per boot; a guest ignoring ACPI; an orphan; snap rollback."""

import json
import os
import re
import signal
import time

import pytest

from tests.e2e.conftest import Terminal, rfb_banner
from tests.guest import guestdisk

pytestmark = pytest.mark.guest


def test_boot_from_iso_console_vnc_and_acpi_stop(make_vm):
    vm = make_vm("g1", "", "--vnc", "yes")
    t0 = time.monotonic()
    out = vm.run("start", "-b", "g1").stdout
    assert re.search(r"g1: started, qemu pid \d+", out), out
    up = vm.wait_console("KVMGUEST up boot=1")
    info = vm.info()
    assert (info["hypervisor"], info["accelerator"]) == ("qemu", "tcg")
    assert info["state"] == "running" and info["boots"] == 1
    assert info["iso"] == vm.iso
    assert rfb_banner(info["vnc"]["port"]).startswith(b"RFB 003.0")

    term = Terminal(["./console", "g1"], vm.root, vm.env)
    term.read_until("quit with ~.")
    term.type("echo answer-$((6*7))\r")
    term.read_until("answer-42")
    term.type("\r~.")
    assert term.wait() == 0
    vm.wait_console("answer-42", timeout=10)
    assert "answer-42" in vm.run("console", "--log", "g1").stdout

    t1 = time.monotonic()
    res = vm.run("stop", "g1", timeout=90)
    stop_took = time.monotonic() - t1
    assert "KVMGUEST poweroff (ACPI power button)" in vm.console_log(), vm.explain("no ACPI poweroff")
    assert vm.state()["last_exit"] == "poweroff" and vm.state()["last_code"] == 0, vm.explain(res.stdout)
    assert vm.info()["state"] == "stopped"
    print(f"timing: start -b to banner {up:.1f} s; stop (ACPI) {stop_took:.1f} s; "
          f"test {time.monotonic() - t0:.1f} s")


HOOKS = """
preRun()
{
	echo "pre boot" >> "$VMdir/hooks.log"
}

postRun()
{
	echo "post $VMexit $VMreason" >> "$VMdir/hooks.log"
}
"""


def gone(pid):
    """The process ended (a zombie left for init to reap counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def hooks(vm):
    path = vm.dir / "hooks.log"
    return path.read_text().splitlines() if path.exists() else []


def test_guest_reboot_runs_the_hooks_per_boot_and_rollback_restores_the_disk(make_vm):
    vm = make_vm("g2", "reboot=2")
    (vm.dir / "run").write_text(HOOKS)
    vm.run("snap", "create", "g2", "fresh")
    vm.run("start", "-b", "g2")
    vm.wait_console("KVMGUEST up boot=2")
    assert vm.info()["boots"] == 2
    assert hooks(vm) == ["pre boot", "post 0 reboot", "pre boot"], vm.explain("hooks")
    vm.run("stop", "g2", timeout=90)
    assert hooks(vm)[3:] == ["post 0 poweroff"], vm.explain(f"hooks {hooks(vm)}")
    assert guestdisk.boots(vm.disk) == 2

    vm.run("snap", "rollback", "g2", "fresh", "-y")
    assert guestdisk.boots(vm.disk) == 0  # the guest's own counter, on the rolled-back disk
    vm.run("start", "-b", "g2")
    vm.wait_console("KVMGUEST up boot=1")
    vm.run("stop", "-f", "g2", timeout=60)


def test_guest_ignoring_acpi_is_forced_and_an_orphan_is_found_and_stopped(make_vm):
    vm = make_vm("g3", "acpi=ignore")
    vm.run("start", "-b", "g3")
    vm.wait_console("KVMGUEST up boot=1")
    state = vm.state()
    qemu_pid = state["bhyve"]
    os.kill(state["supervisor"], signal.SIGKILL)
    time.sleep(0.5)
    listed = {r["name"]: r for r in json.loads(vm.run("vmlist", "--json").stdout)}
    assert (listed["g3"]["state"], listed["g3"]["pid"]) == ("orphaned", qemu_pid)
    assert "without its supervisor" in vm.run("vmlist").stderr
    t = time.monotonic()
    res = vm.run("stop", "-t", "3", "g3", timeout=60)
    took = time.monotonic() - t
    assert gone(qemu_pid), vm.explain(res.stdout + res.stderr)
    assert 3 <= took < 15, took
    assert "KVMGUEST poweroff" not in vm.console_log()
    assert vm.info()["state"] == "stopped"
    print(f"timing: orphan stop -t 3 (ACPI ignored, then QMP quit) {took:.1f} s; stop said {res.stdout.strip()!r}")
