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
    vm = make_vm("g1", "", "--vnc", "wait")
    with open(vm.dir / "set.conf", "a") as conf:
        conf.write('VNCpassword="s3cret"\n')
    t0 = time.monotonic()
    out = vm.run("start", "-b", "g1").stdout
    assert re.search(r"g1: started, qemu pid \d+", out), out
    info = vm.info()
    assert (info["hypervisor"], info["accelerator"]) == ("qemu", "tcg")
    assert info["state"] == "running" and info["boots"] == 1 and info["iso"] == vm.iso
    assert "s3cret" not in vm.supervisor_log() and "s3cret" not in open(f"/proc/{info['pid']}/cmdline").read()
    time.sleep(3)
    assert vm.console_log() == "", vm.explain("VNC=wait: the guest ran before a VNC client came")
    banner, security = rfb_banner(info["vnc"]["port"])
    assert banner.startswith(b"RFB 003.0") and security == 2  # the password (VNC authentication) is asked
    up = vm.wait_console("KVMGUEST up boot=1")
    rss = supervisor_rss_mib(vm.state()["supervisor"])
    assert rss <= 20, f"supervisor RSS {rss:.1f} MiB with QMP connected"

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
    print(f"timing: start -b to banner {up:.1f} s; stop (ACPI) {stop_took:.1f} s; supervisor RSS {rss:.1f} MiB; "
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


def supervisor_rss_mib(pid):
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


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
    status = vm.run("status", "g3")
    assert status.stdout.strip() == str(qemu_pid), status.stdout
    t = time.monotonic()
    res = vm.run("stop", "-t", "3", "g3", timeout=60)
    took = time.monotonic() - t
    assert gone(qemu_pid), vm.explain(res.stdout + res.stderr)
    assert 3 <= took < 15, took
    assert "KVMGUEST poweroff" not in vm.console_log()
    assert vm.info()["state"] == "stopped"
    print(f"timing: orphan stop -t 3 (ACPI ignored, then QMP quit) {took:.1f} s; stop said {res.stdout.strip()!r}")


def test_a_guest_panic_is_a_fault_for_the_hooks_and_the_exit_table(make_vm):
    vm = make_vm("g4", "panic=1")
    (vm.dir / "run").write_text(HOOKS)
    vm.run("start", "-b", "g4")
    vm.wait_console("KVMGUEST panic")
    end = time.monotonic() + 60
    while "ended" not in vm.state() and time.monotonic() < end:
        time.sleep(0.2)
    assert vm.state()["last_exit"] == "fault", vm.explain(str(vm.state()))
    assert hooks(vm) == ["pre boot", "post 0 fault"], vm.explain(f"hooks {hooks(vm)}")
    assert "crashed: guest panic (SHUTDOWN guest-panic, exit 0)" in vm.supervisor_log()
    assert vm.run("vmlist", "-H", "-o", "name,state").stdout == "g4\tcrashed\n"  # as the log says
    assert vm.info()["state"] == "crashed" and vm.info()["crashed"] == "fault"


def test_a_guest_reads_its_cloud_init_seed(make_vm, tmp_path):
    # The test guest's kernel has no AHCI driver, so the seed goes in as a read-only virtio-blk
    # disk (CloudInit="virtio-blk"); its /init mounts the cidata device and prints what it read.
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKvmtestkey kvm@test\n")
    vm = make_vm("ci1", "")
    vm.run("cloudinit", "ci1", "--hostname", "seeded-host", "--ssh-key", str(key))
    text = (vm.dir / "set.conf").read_text().replace('CloudInit="1"', 'CloudInit="virtio-blk"')
    (vm.dir / "set.conf").write_text(text)
    assert "virtio-blk-pci,drive=dev28" in vm.run("start", "-n", "ci1").stdout
    vm.run("start", "-b", "ci1")
    vm.wait_console("KVMGUEST up boot=1")
    log = vm.console_log()
    # meta-data is JSON, user-data YAML: the guest prints their lines naming the hostname and keys
    assert re.search(r'KVMGUEST cidata .*"local-hostname": "seeded-host"', log), vm.explain("no hostname")
    assert re.search(r"KVMGUEST cidata key \W*ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKvmtestkey", log), vm.explain("no key")
    assert vm.info()["cloud_init"] is True
    vm.run("stop", "ci1", timeout=90)
