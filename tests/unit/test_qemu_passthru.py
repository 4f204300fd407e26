"""A qemu launch checks its passthru devices on the host first (kvm.hypervisor.qemu.passthru): each
one present in sysfs, in an IOMMU group and bound to vfio-pci, else one line naming the VM, the
item and the fix. Dry runs and vminfo (a plan that is not strict) do not look. sysfs is a fake
tree in tmp_path, through KVM_SYSFS."""

import os

import pytest

from kvm.conf import config
from kvm.errors import ConfigError
from kvm.host import runfiles
from kvm.hypervisor.base import Context
from kvm.hypervisor.qemu.backend import Qemu
from kvm.hypervisor.qemu.passthru import check_passthru

ADDR = "0000:03:00.0"
CONF = 'VMrom="grub"\nBoot="hd0"\nVMoptions="S"\nDevices="5,passthru,3/0/0"\n'


def cfg(name="pt", text=CONF):
    return config.validate(name, f"/tank/kvm/vm/{name}", config.parse_text(text), cpus=8)


def fake_sysfs(root, driver="vfio-pci", group=True, address=ADDR):
    """ROOT/bus/pci/devices/ADDRESS as Linux has it: driver and iommu_group symlinks."""
    node = root / "bus/pci/devices" / address
    node.mkdir(parents=True)
    if driver:
        (root / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        os.symlink(root / "bus/pci/drivers" / driver, node / "driver")
    if group:
        (root / "kernel/iommu_groups/12").mkdir(parents=True, exist_ok=True)
        os.symlink(root / "kernel/iommu_groups/12", node / "iommu_group")
    return root


@pytest.fixture
def sysfs(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_SYSFS", str(tmp_path / "sys"))
    monkeypatch.setenv("KVM_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("KVM_ACCEL", "tcg")
    return tmp_path / "sys"


BOUND_ELSEWHERE = (f"pt: set.conf: Devices item '5,passthru,3/0/0': host device {ADDR} is bound to e1000e, "
                   f"not vfio-pci (bind it: driverctl set-override {ADDR} vfio-pci)")
UNBOUND = (f"pt: set.conf: Devices item '5,passthru,3/0/0': host device {ADDR} is bound to no driver, "
           f"not vfio-pci (bind it: driverctl set-override {ADDR} vfio-pci)")
NO_GROUP = (f"pt: set.conf: Devices item '5,passthru,3/0/0': host device {ADDR} is in no IOMMU group (turn "
            f"the IOMMU on: VT-d or AMD-Vi in the firmware, intel_iommu=on or amd_iommu=on on the kernel "
            f"command line)")
MISSING = "pt: set.conf: Devices item '5,passthru,3/0/0': no host PCI device 0000:03:00.0"


@pytest.mark.parametrize("driver, group, line", [
    ("e1000e", True, BOUND_ELSEWHERE), ("", True, UNBOUND), ("vfio-pci", False, NO_GROUP), ("", False, NO_GROUP)],
    ids=["bound-to-e1000e", "unbound", "no-iommu-group", "neither"])
def test_a_device_not_ready_for_vfio_is_refused_in_one_line(sysfs, driver, group, line):
    fake_sysfs(sysfs, driver, group)
    with pytest.raises(ConfigError) as err:
        check_passthru(cfg())
    assert err.value.line("start") == f"start: {line}"


def test_a_device_bound_to_vfio_pci_in_a_group_is_accepted(sysfs):
    fake_sysfs(sysfs)
    check_passthru(cfg())
    check_passthru(cfg("plain", 'VMrom="grub"\nBoot="hd0"\n'))  # no passthru item: nothing to look at


def test_a_missing_device_is_refused(sysfs):
    fake_sysfs(sysfs, address="0000:04:00.0")
    with pytest.raises(ConfigError) as err:
        check_passthru(cfg())
    assert err.value.line("start") == f"start: {MISSING}"


def test_every_passthru_item_is_checked(sysfs):
    fake_sysfs(sysfs)
    fake_sysfs(sysfs, driver="", address="0000:04:00.0")
    two = CONF.replace('"5,passthru,3/0/0"', '"5,passthru,3/0/0 6,passthru,4/0/0"')
    with pytest.raises(ConfigError, match="Devices item '6,passthru,4/0/0': host device 0000:04:00.0 is bound "
                                          "to no driver"):
        check_passthru(cfg(text=two))


def test_a_launch_plan_checks_passthru_and_a_dry_run_does_not(sysfs):
    """strict (the supervisor's launch) refuses an unbound device; vminfo and start -n still show
    the plan, vfio-pci device included."""
    fake_sysfs(sysfs, driver="")
    with pytest.raises(ConfigError) as err:
        Qemu().plan(cfg(), Context(root="/tank/kvm", run=runfiles.of("/tank/kvm", "web"), strict=True))
    assert err.value.line("start") == f"start: {UNBOUND}"
    shown = Qemu().plan(cfg(), Context(root="/tank/kvm", run=runfiles.of("/tank/kvm", "web"), strict=False))
    assert f"vfio-pci,host={ADDR},bus=pcie.0,addr=0x5" in shown.argv


def test_a_launch_plan_of_a_ready_device(sysfs):
    fake_sysfs(sysfs)
    p = Qemu().plan(cfg(), Context(root="/tank/kvm", run=runfiles.of("/tank/kvm", "web"), strict=True))
    assert f"vfio-pci,host={ADDR},bus=pcie.0,addr=0x5" in p.argv


def test_vminfo_on_linux_reads_the_same_sysfs(sysfs):
    from kvm.platform.linux import Linux
    fake_sysfs(sysfs)
    (sysfs / "bus/pci/devices" / ADDR / "vendor").write_text("0x8086\n")
    net = sysfs / "class/net"
    (net / "br0/bridge").mkdir(parents=True)
    (net / "tap3").mkdir(parents=True)
    (net / "tap3/address").write_text("58:9c:fc:00:00:01\n")
    os.symlink(net / "br0", net / "tap3/master")
    info = Linux().pci_info("3/0/0")
    assert (info["found"], info["driver"], info["vendor"]) == (True, "vfio-pci", "0x8086")
    assert Linux().interface_info("tap3") == {"exists": True, "mac": "58:9c:fc:00:00:01", "bridge": "br0"}
    assert Linux().pci_info("4/0/0") == {"selector": "0000:04:00.0", "found": False}
