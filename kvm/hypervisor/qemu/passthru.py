"""Host-side checks for a qemu plan (they read the host, so they stay out of the pure builder)."""

import os
from pathlib import Path

from kvm.errors import ConfigError
from kvm.hypervisor.qemu.argv import host_pci_address

VFIO_DRIVER = "vfio-pci"


def check_passthru(cfg, sysfs="/sys"):
    """Every passthru device exists and is bound to vfio-pci; else a ConfigError naming the item."""
    for dev in cfg.devices:
        if dev.emulation != "passthru":
            continue
        address = host_pci_address(dev)
        node = Path(sysfs) / "bus/pci/devices" / address
        if not node.exists():
            raise ConfigError(f"set.conf: Devices item '{dev.arg()}': no host PCI device {address}", vm=cfg.name)
        driver = os.path.basename(os.readlink(node / "driver")) if (node / "driver").is_symlink() else ""
        if driver != VFIO_DRIVER:
            bound = f"bound to {driver}" if driver else "bound to no driver"
            raise ConfigError(f"set.conf: Devices item '{dev.arg()}': host device {address} is {bound}, "
                              f"not {VFIO_DRIVER} (bind it: driverctl set-override {address} {VFIO_DRIVER})",
                              vm=cfg.name)

