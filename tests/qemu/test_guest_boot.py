"""The test guest boots from the ISO through OVMF (TCG) with the argv kvm.hypervisor.qemu builds,
and each way it can end is told apart by the QMP SHUTDOWN reason (qemu exits 0 for all)."""

import pytest

from kvm.hypervisor.qemu import argv as qemu
from tests.guest import guestdisk

pytestmark = pytest.mark.guest


def test_guest_reset_ends_qemu_as_a_reboot(guest):
    g = guest("reboot=2")
    up = g.serial.wait_for("KVMGUEST up boot=1")
    g.serial.wait_for("KVMGUEST reboot")
    reason, code, took = g.wait_exit()
    assert (reason, code) == ("guest-reset", 0)
    assert qemu.classify(reason, code) == "reboot"
    assert guestdisk.boots(g.disk) == 1
    print(f"timing: ISO via OVMF to the banner {up:.1f} s; guest reboot message to qemu's exit {took:.2f} s")


def test_power_button_is_a_clean_poweroff(guest):
    g = guest()
    g.serial.wait_for("KVMGUEST up boot=1")
    g.qmp.execute("system_powerdown")
    g.serial.wait_for("KVMGUEST poweroff (ACPI power button)", timeout=10)
    reason, code, took = g.wait_exit(timeout=10)
    assert (reason, code) == ("guest-shutdown", 0)
    assert qemu.classify(reason, code) == "poweroff"
    print(f"timing: system_powerdown to qemu's exit {took:.2f} s")


def test_guest_ignoring_the_button_is_ended_by_quit(guest):
    g = guest("acpi=ignore")
    g.serial.wait_for("KVMGUEST up boot=1")
    g.qmp.execute("system_powerdown")
    with pytest.raises(Exception):
        g.qmp.wait_event("SHUTDOWN", timeout=3)
    assert g.proc.poll() is None
    g.qmp.execute("quit")
    reason, code, _ = g.wait_exit(timeout=10)
    assert (reason, code) == ("host-qmp-quit", 0)


def test_console_answers_a_typed_line(guest):
    g = guest()
    g.serial.wait_for("KVMGUEST up boot=1")
    g.serial.send("echo answer-$((6*7))")
    g.serial.wait_for("answer-42", timeout=10)


def test_guest_panic_is_a_fault(guest):
    g = guest("panic=1")
    g.serial.wait_for("KVMGUEST panic")
    reason, code, _ = g.wait_exit(timeout=30)
    assert (reason, code) == ("guest-panic", 0)
    assert qemu.classify(reason, code) == "fault"


def test_process_title_names_the_vm(guest):
    g = guest()
    comm = open(f"/proc/{g.proc.pid}/comm").read().strip()
    args = open(f"/proc/{g.proc.pid}/cmdline").read().split("\0")
    assert comm == f"qemu:{g.cfg.name}"[:15]
    assert args[args.index("-name") + 1] == f"{g.cfg.name},process=qemu:{g.cfg.name}"
