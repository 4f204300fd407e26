"""Whether anything can reach a VM: a console (COM, or VNC on UEFI) or a network device.

A VM with neither boots, but nobody can log in, install it or even watch it fail: vmcreate,
vminfo and start say so in one warning line (not an error: a VM reached through a passthru
NIC, or one that only computes and writes its disk, is legitimate).
"""

from kvm.conf.devices import NIC_EMULATIONS as NET_EMULATIONS

WARNING = ("has no console and no network: nothing can reach it "
           "(set COM=1 or VNC=1, or add a virtio-net tap to Devices)")


def warning(console, emulations):
    """The warning line when there is no console and none of `emulations` is a NIC, else None."""
    if console or any(e in NET_EMULATIONS for e in emulations):
        return None
    return WARNING


def of_config(cfg):
    """The warning for a validated VmConfig (grub always has its serial console), or None."""
    console = bool(cfg.com or cfg.vnc or cfg.loader == "grub")
    return warning(console, [d.emulation for d in cfg.devices])


def of_info(data):
    """The warning for vminfo's dict (info.collect), or None."""
    return warning(bool(data.get("com") or data.get("vnc")), [d["emulation"] for d in data.get("devices", ())])
