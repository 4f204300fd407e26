"""The qemu backend through the CLI without booting a guest: kvminst pins OVMF, vmcreate gives
the VM its own OVMF vars, start --dry-run shows the qemu plan, and the one-line errors."""

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import cmd, kvm, run_folder

OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")


@pytest.fixture(autouse=True)
def need_ovmf():
    if not OVMF.exists() or not shutil.which("qemu-system-x86_64"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and qemu/OVMF are missing")
        pytest.skip("qemu or OVMF missing (apt-get install qemu-system-x86 ovmf)")


def test_kvminst_pins_ovmf_and_verify_checks_it(install, env, pool):
    fw = install / "firmware"
    assert (fw / "OVMF_CODE_4M.fd").read_bytes() == OVMF.read_bytes()
    assert "OVMF_VARS_4M.fd" in (fw / "SHA256SUMS").read_text()
    assert not (fw / "BHYVE_UEFI.fd").exists()
    res = kvm(env, "kvminst", "--verify", "-p", pool)
    assert res.returncode == 0 and "OVMF_CODE_4M.fd" in res.stdout, res.stdout + res.stderr
    (fw / "OVMF_CODE_4M.fd").write_bytes(b"tampered")
    res = kvm(env, "kvminst", "--verify", "-p", pool)
    assert res.returncode != 0 and "OVMF_CODE_4M.fd" in res.stdout + res.stderr


def test_vmcreate_copies_ovmf_vars_and_dry_run_shows_the_qemu_plan(install, env):
    res = cmd(install, env, "vmcreate", "q1", "-y", "--loader", "uefi", "--com", "yes", "--no-network",
              "--disk-size", "16M", "--vnc", "yes")
    assert res.returncode == 0, res.stderr
    vmdir = install / "vm" / "q1"
    assert (vmdir / "OVMF_VARS.fd").read_bytes() == (install / "firmware" / "OVMF_VARS_4M.fd").read_bytes()
    res = cmd(install, env, "start", "--dry-run", "q1")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    argv = next(line for line in lines if line.startswith("qemu-system-x86_64 "))
    assert "-name q1,process=qemu:q1" in argv and "-accel tcg" in argv and "-action reboot=shutdown" in argv
    assert f"file={install}/firmware/OVMF_CODE_4M.fd" in argv and "-vnc 127.0.0.1:0" in argv
    assert f"logfile={vmdir}/console.log" in argv
    assert lines[-1] == "# hypervisor qemu, accelerator tcg"
    assert not (run_folder(env, install, "q1") / "state").exists()
    info = cmd(install, env, "vminfo", "q1").stdout.splitlines()  # the text shows it too, as kvm(8) says
    assert info[4] == "hypervisor: qemu, accelerator tcg", info

    (vmdir / "OVMF_VARS.fd").unlink()
    res = cmd(install, env, "start", "q1")
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].startswith(
        f"start: q1: UEFI vars file {vmdir}/OVMF_VARS.fd not found"), res.stderr
    assert f"cp {install}/firmware/OVMF_VARS_4M.fd {vmdir}/OVMF_VARS.fd" in res.stderr


@pytest.mark.parametrize("var,value,error", [
    ("KVM_HYPERVISOR", "xen", "KVM_HYPERVISOR=xen: unknown hypervisor (known: bhyve, qemu)"),
    ("KVM_ACCEL", "hvf", "KVM_ACCEL='hvf': unknown accelerator (known: kvm, tcg)")])
def test_a_bad_choice_of_hypervisor_or_accelerator_is_a_one_line_error(install, env, var, value, error):
    assert cmd(install, env, "vmcreate", "q2", "-y", "--loader", "uefi", "--no-network").returncode == 0
    res = cmd(install, {**env, var: value}, "start", "--dry-run", "q2")
    assert res.returncode != 0 and error in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_kvminst_without_ovmf_says_what_to_install(pool, env, tmp_path):
    from tests.conftest import destroy_dataset
    destroy_dataset(f"{pool}/kvm")
    try:
        res = kvm({**env, "KVM_OVMF_DIR": str(tmp_path)}, "kvminst", "-p", pool, "-y")
        assert res.returncode == 0, res.stderr
        assert "apt-get install qemu-system-x86 ovmf" in res.stderr + res.stdout
        assert not (Path(f"/{pool}/kvm/firmware") / "OVMF_CODE_4M.fd").exists()
    finally:
        destroy_dataset(f"{pool}/kvm")


def test_start_refuses_a_passthru_device_not_bound_to_vfio_and_start_n_shows_it(install, env, tmp_path):
    """The host device is checked in sysfs (a fake tree through KVM_SYSFS) by the launch, in one
    line naming the item and the fix; start -n still shows the plan."""
    sysfs = tmp_path / "sys"
    node = sysfs / "bus/pci/devices/0000:03:00.0"
    (sysfs / "bus/pci/drivers/e1000e").mkdir(parents=True)
    (sysfs / "kernel/iommu_groups/7").mkdir(parents=True)
    node.mkdir(parents=True)
    os.symlink(sysfs / "kernel/iommu_groups/7", node / "iommu_group")
    os.symlink(sysfs / "bus/pci/drivers/e1000e", node / "driver")
    env = {**env, "KVM_SYSFS": str(sysfs)}
    assert cmd(install, env, "vmcreate", "q4", "-y", "--loader", "uefi", "--no-network").returncode == 0
    res = cmd(install, env, "vmset", "q4", "VMoptions=S", "Devices=5,passthru,3/0/0")
    assert res.returncode == 0, res.stderr
    res = cmd(install, env, "start", "--dry-run", "q4")
    assert res.returncode == 0 and "-device vfio-pci,host=0000:03:00.0,bus=pcie.0,addr=0x5" in res.stdout, res.stderr
    res = cmd(install, env, "start", "q4")
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        "start: q4: set.conf: Devices item '5,passthru,3/0/0': host device 0000:03:00.0 is bound to e1000e, not "
        "vfio-pci (bind it: driverctl set-override 0000:03:00.0 vfio-pci)"], (res.returncode, res.stdout, res.stderr)
    assert not (run_folder(env, install, "q4") / "qmp").exists()  # qemu never ran
