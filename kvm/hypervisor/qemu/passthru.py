"""Host-side checks for a qemu plan (they read the host, so they stay out of the pure builder).

A passthru device goes to qemu as `-device vfio-pci,host=ADDR`, which fails with a bare qemu
error unless the host device is in an IOMMU group and bound to vfio-pci: a launch (a strict plan)
checks both in sysfs (KVM_SYSFS, /sys by default) and says which item and what to do in one line."""

import os

from kvm.errors import ConfigError
from kvm.host import paths
from kvm.hypervisor.qemu.argv import host_pci_address

VFIO_DRIVER = "vfio-pci"
IOMMU_HINT = ("turn the IOMMU on: VT-d or AMD-Vi in the firmware, intel_iommu=on or amd_iommu=on on the kernel "
              "command line")


def check_passthru(cfg):
    """Every passthru device exists, is in an IOMMU group and is bound to vfio-pci; else a ConfigError
    naming the item (sysfs read under paths.current().sysfs: KVM_SYSFS, default /sys)."""
    devices = paths.current().sysfs / "bus/pci/devices"
    for dev in cfg.devices:
        if dev.emulation != "passthru":
            continue
        address = host_pci_address(dev)
        node = devices / address
        item = f"set.conf: Devices item '{dev.arg()}'"
        if not node.exists():
            raise ConfigError(f"{item}: no host PCI device {address}", vm=cfg.name)
        if not (node / "iommu_group").exists():
            raise ConfigError(f"{item}: host device {address} is in no IOMMU group ({IOMMU_HINT})", vm=cfg.name)
        driver = os.path.basename(os.readlink(node / "driver")) if (node / "driver").is_symlink() else ""
        if driver != VFIO_DRIVER:
            bound = f"bound to {driver}" if driver else "bound to no driver"
            raise ConfigError(f"{item}: host device {address} is {bound}, not {VFIO_DRIVER} "
                              f"(bind it: driverctl set-override {address} {VFIO_DRIVER})", vm=cfg.name)

