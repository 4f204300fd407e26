"""A real guest's life through the CLI: boot from the inserted ISO through OVMF, console, VNC,
ACPI stop; reboot with hooks per boot; a guest ignoring ACPI; an orphan; snap rollback."""

import re
import signal
import os
import time

import pytest

from tests.e2e.conftest import Terminal, rfb_banner
from tests.guest import guestdisk

pytestmark = pytest.mark.guest


def test_boot_from_iso_console_vnc_and_acpi_stop(make_vm):
    vm = make_vm("g1", "", "--vnc", "yes")
    t0 = time.monotonic()
    out = vm.run("start", "-b", "g1").stdout
    assert re.search(r"g1: started, bhyve pid \d+", out), out
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
