"""The simulator is strict: it rejects what the real tools reject, with their exit codes."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest


def run(env, *argv, wait=True):
    if not wait:
        return subprocess.Popen(list(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture
def files(tmp_path):
    disk = tmp_path / "disk"
    disk.write_bytes(b"")
    rom = tmp_path / "rom.fd"
    rom.write_bytes(b"rom")
    return disk, rom


def script(env, name, *lines):
    d = Path(env["KVM_SIM_DIR"]) / "script"
    d.mkdir(exist_ok=True)
    (d / name).write_text("".join(line + "\n" for line in lines))


BASE = ["bhyve", "-c", "1", "-m", "256M", "-s", "0,hostbridge", "-s", "31,lpc"]


@pytest.mark.parametrize("argv, code, message", [
    (["bhyve", "-Z", "vm"], 1, "illegal option -- Z"),
    (["bhyve", "-c", "1"], 1, "Usage: bhyve"),
    (BASE + ["-s", "40,virtio-rnd", "vm"], 4, "Invalid PCI slot info field"),
    (BASE + ["-s", "3:9,virtio-rnd", "vm"], 4, "Invalid PCI slot info field"),
    (BASE + ["-s", "3,virtio-foo", "vm"], 4, "unknown device"),
    (BASE + ["-s", "3,virtio-rnd", "-s", "3,virtio-rnd", "vm"], 4, "already occupied"),
    (BASE + ["-s", "3,passthru,3/0/0", "vm"], 4, "passthru requires guest memory to be wired"),
    (BASE + ["-s", "3,nvme,/nonexistent/disk", "vm"], 4, "Could not open backing file"),
    (BASE + ["-s", "3,virtio-net,tapNOPE", "vm"], 4, "open of tap device"),
    (BASE + ["-s", "3,virtio-net,tap0,mac=01:00:00:00:00:01", "vm"], 4, "Invalid MAC address"),
    (BASE + ["-s", "30,fbuf,tcp=127.0.0.1:5900,w=100,h=100", "vm"], 4, "invalid resolution"),
    (BASE + ["-l", "com1,/dev/nmdmvmA", "vm"], 4, "Unable to initialize backend"),
    (BASE + ["-l", "com9,stdio", "vm"], 64, "Invalid LPC device"),
    (["bhyve", "-m", "lots", "vm"], 64, "invalid memsize"),
    (["bhyve", "-m", "99999999999999999999G", "vm"], 64, "invalid memsize"),
    (["bhyve", "-c", "cpus=4,sockets=1,cores=2", "vm"], 4, "Invalid CPU topology"),
    (BASE + ["a" * 32], 4, "File name too long"),
])
def test_bhyve_rejects_like_the_real_one(env, argv, code, message):
    res = run(env, *argv)
    assert res.returncode == code, res.stderr
    assert message in res.stderr
    assert not list(Path(env["KVM_VMM_DIR"]).iterdir()), "a rejected bhyve must not allocate the VM"


def test_bhyve_h_exits_0(env):
    assert run(env, "bhyve", "-h").returncode == 0


def test_bootrom_without_lpc_cannot_boot(env, files):
    _, rom = files
    res = run(env, "bhyve", "-s", "0,hostbridge", "-l", f"bootrom,{rom}", "vm")
    assert res.returncode == 4 and "no lpc device" in res.stderr


def test_exit_codes_follow_the_script_and_vm_stays_allocated(env, files):
    script(env, "vm", "reboot after=0", "poweroff after=0", "halt after=0", "triple after=0", "error after=0")
    codes = [run(env, *BASE, "vm").returncode for _ in range(5)]
    assert codes == [0, 1, 2, 3, 4]
    assert (Path(env["KVM_VMM_DIR"]) / "vm").exists()


def test_k_reads_a_config_file_as_bhyve_does(env, tmp_path):
    """-k FILE: `path=value` lines, '#' and empty lines skipped; processed in argv order, so a file
    making pci.0.30.0 before `-s 30,...` leaves that slot "already occupied" (pci_parse_slot)."""
    conf = tmp_path / "secret.conf"
    conf.write_text("# the fbuf's password\n\npci.0.30.0.password=s3cret\n")
    fbuf = ["-s", "30,fbuf,tcp=127.0.0.1:5900"]
    res = run(env, *BASE, "-k", str(conf), *fbuf, "vm")
    assert res.returncode == 4 and "pci slot 0:30:0 already occupied!" in res.stderr
    res = run(env, *BASE, "-k", str(tmp_path / "none"), "vm")
    assert res.returncode == 4 and "Failed to open configuration file" in res.stderr
    (tmp_path / "bad.conf").write_text("pci.0.30.0.password\n")
    res = run(env, *BASE, *fbuf, "-k", str(tmp_path / "bad.conf"), "vm")
    assert res.returncode == 4 and "line 1: invalid config option 'pci.0.30.0.password'" in res.stderr
    assert not list(Path(env["KVM_VMM_DIR"]).iterdir())
    script(env, "vm", "poweroff after=0")
    assert run(env, *BASE, *fbuf, "-k", str(conf), "vm").returncode == 1
    assert json.loads((Path(env["KVM_VMM_DIR"]) / "vm").read_text())["vnc_password"] == "s3cret"


def test_poweroff_with_D_destroys_the_vm(env):
    script(env, "vm", "poweroff after=0")
    assert run(env, "bhyve", "-D", *BASE[1:], "vm").returncode == 1
    assert not (Path(env["KVM_VMM_DIR"]) / "vm").exists()


def test_rerun_with_other_memory_fails_until_destroyed(env):
    script(env, "vm", "poweroff after=0", "poweroff after=0")
    assert run(env, *BASE, "vm").returncode == 1
    res = run(env, "bhyve", "-c", "1", "-m", "512M", "-s", "0,hostbridge", "-s", "31,lpc", "vm")
    assert res.returncode == 4 and "Unable to setup memory" in res.stderr
    assert run(env, "bhyvectl", "--vm=vm", "--destroy").returncode == 0
    assert run(env, "bhyve", "-c", "1", "-m", "512M", "-s", "0,hostbridge", "-s", "31,lpc", "vm").returncode == 1


def wait_running(env, name):
    """Wait until bhyve runs NAME and its guest is up: the simulator records
    "bhyve-guest" only after the guest's signal handlers ("ACPI") are in place."""
    log = Path(env["KVM_SIM_DIR"]) / "calls.log"
    for _ in range(1000):
        try:
            st = json.loads((Path(env["KVM_VMM_DIR"]) / name).read_text())
            guests = [c for c in map(json.loads, log.read_text().splitlines())
                      if c["tool"] == "bhyve-guest" and c["argv"][0] == name]
            if st.get("pid") and guests:
                return st
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError("bhyve did not start")


@pytest.mark.parametrize("acpi, outcome", [("yes", 1), ("no", -signal.SIGTERM)])
def test_sigterm_is_the_power_button_only_with_acpi(env, acpi, outcome):
    script(env, "vm", f"run acpi={acpi}")
    proc = run(env, *BASE, "vm", wait=False)
    wait_running(env, "vm")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == outcome
    assert (Path(env["KVM_VMM_DIR"]) / "vm").exists()


def wait_recorded(env, tool, argv):
    """Wait for the simulator's record of `tool` called with `argv`."""
    log = Path(env["KVM_SIM_DIR"]) / "calls.log"
    for _ in range(1000):
        if {"tool": tool, "argv": argv} in [{k: c[k] for k in ("tool", "argv")}
                                            for c in map(json.loads, log.read_text().splitlines())]:
            return
        time.sleep(0.02)
    raise AssertionError(f"{tool} {argv} was never recorded")


def test_running_bhyve_shows_its_title_as_bhyve_does(env):
    script(env, "vm", "run")
    proc = run(env, *BASE, "vm", wait=False)
    wait_running(env, "vm")
    try:
        ps = subprocess.run(["ps", "-o", "args=", "-p", str(proc.pid)], capture_output=True, text=True)
        assert ps.stdout.strip() == "bhyve: vm"
        assert Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0] == b"bhyve: vm"
    finally:
        proc.kill()
        proc.wait()


def test_ignored_acpi_then_force_poweroff(env):
    script(env, "vm", "run acpi=ignore")
    proc = run(env, *BASE, "vm", wait=False)
    wait_running(env, "vm")
    proc.send_signal(signal.SIGTERM)
    wait_recorded(env, "bhyve-acpi", ["vm", "ignore"])
    assert proc.poll() is None, "the guest ignored the button"
    assert run(env, "bhyvectl", "--vm=vm", "--force-poweroff").returncode == 0
    assert proc.wait(10) == 1


def test_bhyvectl_on_a_missing_vm_fails(env):
    res = run(env, "bhyvectl", "--vm=ghost", "--destroy")
    assert res.returncode == 1 and "could not be opened" in res.stderr


def test_second_bhyve_for_a_running_vm_fails_and_busy_vnc_port(env):
    script(env, "vm", "run")
    proc = run(env, *BASE, "-s", "30,fbuf,tcp=127.0.0.1:5900", "vm", wait=False)
    wait_running(env, "vm")
    res = run(env, *BASE, "vm")
    assert res.returncode == 4
    res = run(env, *BASE, "-s", "30,fbuf,tcp=127.0.0.1:5900", "other")
    assert res.returncode == 4 and "Address already in use" in res.stderr
    assert ":5900" in run(env, "sockstat", "-4l").stdout
    run(env, "bhyvectl", "--vm=vm", "--force-poweroff")
    proc.wait(10)


def test_ifconfig_create_destroy_and_bridge_members(env):
    assert run(env, "ifconfig", "tap", "create", "name", "tapWEB").returncode == 0
    res = run(env, "ifconfig", "tap", "create", "name", "tapWEB")
    assert res.returncode == 1 and "File exists" in res.stderr
    assert run(env, "ifconfig", "bridge0", "create").returncode == 0
    assert run(env, "ifconfig", "bridge0", "addm", "tapWEB", "addm", "em0", "up").returncode == 0
    assert run(env, "ifconfig", "bridge0", "addm", "tapWEB").returncode == 1
    assert "member: tapWEB" in run(env, "ifconfig", "bridge0").stdout
    assert run(env, "ifconfig", "tap", "create", "name", "a" * 16).returncode == 1
    assert run(env, "ifconfig", "tapWEB", "destroy").returncode == 0
    assert run(env, "ifconfig", "tapWEB", "destroy").returncode == 1


def test_kld_and_grub(env, files):
    disk, _ = files
    assert run(env, "kldstat", "-qm", "nmdm").returncode == 1
    assert run(env, "kldload", "nmdm").returncode == 0
    assert run(env, "kldload", "nmdm").returncode == 1
    assert run(env, "kldstat", "-qm", "nmdm").returncode == 0
    dmap = disk.parent / "device.map"
    dmap.write_text(f"(hd0) {disk}\n")
    assert run(env, "grub-bhyve", "-m", str(dmap), "-M", "1G", "-r", "hd0,msdos1").returncode == 1
    assert run(env, "grub-bhyve", "-m", str(dmap), "-M", "1G", "-r", "hd0,msdos1", "vm").returncode == 0
    dmap.write_text("(hd0) /no/such/disk\n")
    assert run(env, "grub-bhyve", "-m", str(dmap), "-M", "1G", "vm2").returncode == 1


def test_sysrc_set_read_delete(env, sysroot):
    rc = str(sysroot / "rc.conf")
    assert run(env, "sysrc", "-f", rc, "web_enable=YES").returncode == 0
    assert run(env, "sysrc", "-f", rc, "-n", "web_enable").stdout == "YES\n"
    assert run(env, "sysrc", "-f", rc, "-x", "nope_enable").returncode == 1
    assert run(env, "sysrc", "-f", rc, "-i", "-x", "nope_enable").returncode == 0
    assert run(env, "sysrc", "-f", rc, "-x", "web_enable").returncode == 0
    assert "web_enable" not in (sysroot / "rc.conf").read_text()


def test_every_call_is_recorded(env):
    run(env, "kldstat", "-qm", "vmm")
    log = (Path(env["KVM_SIM_DIR"]) / "calls.log").read_text().splitlines()
    assert json.loads(log[-1])["argv"] == ["-qm", "vmm"]
