"""Devices="slot,emulation,conf ...": each item checked as bhyve would check it, and a Device that
says what it is (disk, CD, NIC, passthru): every caller asks the Device, none lists emulations."""

import re

from kvm.conf.shconf import CONF
from kvm.errors import ConfigError
from kvm.host.record import record

# what a guest sees as a disk it writes (ahci: `hd:PATH` or `cd:PATH`, see Device.kind)
DISK_EMULATIONS = ("nvme", "virtio-blk", "ahci-hd", "virtio-scsi")
CD_EMULATIONS = ("ahci-cd",)
NIC_EMULATIONS = ("virtio-net", "e1000")

EMULATIONS = {"hostbridge", "amd_hostbridge", "lpc", "ahci", "ahci-hd", "ahci-cd", "virtio-blk", "nvme",
              "virtio-net", "e1000", "virtio-rnd", "virtio-console", "virtio-9p", "virtio-scsi", "fbuf",
              "xhci", "hda", "uart", "passthru"}
OURS = {"hostbridge", "amd_hostbridge", "lpc", "fbuf"}  # kvm places these itself
NEEDS_SOURCE = {"ahci", "ahci-hd", "ahci-cd", "virtio-blk", "nvme", "virtio-net", "e1000",
                "virtio-9p", "virtio-scsi", "passthru", "virtio-console", "xhci"}
RESERVED_SLOTS = {0: "hostbridge", 1: "the main disk", 2: "the ISO", 29: "the VNC tablet",
                  30: "VNC (fbuf)", 31: "lpc"}
_SLOT_RE = re.compile(r"^([0-9]{1,2})(?::([0-7]))?\Z")


@record(frozen=True)
class Device:
    """One Devices item: `slot,emulation[,conf]`."""

    slot: str
    emulation: str
    conf: str = ""

    def arg(self):
        """The text after bhyve's -s."""
        return ",".join(x for x in (self.slot, self.emulation, self.conf) if x)

    @property
    def source(self):
        """First conf field: the backend (tap, file, B/S/F...)."""
        return self.conf.split(",")[0] if self.conf else ""

    @property
    def kind(self):
        """'disk', 'cdrom', 'nic', 'passthru' or 'other'."""
        if self.emulation == "ahci":
            return "cdrom" if self.source.startswith("cd:") else "disk"
        if self.emulation in DISK_EMULATIONS:
            return "disk"
        if self.emulation in CD_EMULATIONS:
            return "cdrom"
        if self.emulation in NIC_EMULATIONS:
            return "nic"
        return "passthru" if self.emulation == "passthru" else "other"

    @property
    def path(self):
        """The file or device a disk or CD reads ('' for other kinds): the source without ahci's
        `hd:`/`cd:`."""
        if self.kind not in ("disk", "cdrom"):
            return ""
        return self.source.split(":", 1)[-1] if self.emulation == "ahci" else self.source


def default_mac(vm_name, slot):
    """The MAC bhyve gives a NIC without mac= (its net_genmac): NetApp's OUI 00:a0:98 and the first
    three bytes of the MD5 of "SLOT-FUNCTION-NAME". kvm's qemu argv gives the same, so that a VM
    keeps its MAC (and its DHCP lease) across hypervisors."""
    import hashlib
    number, _, function = str(slot).partition(":")
    digest = hashlib.md5(f"{int(number)}-{int(function or 0)}-{vm_name}".encode()).digest()
    return "00:a0:98:" + ":".join(f"{b:02x}" for b in digest[:3])


def nic_mac(vm_name, dev):
    """The guest's MAC of a NIC item: its mac= option (lower-cased, as dnsmasq writes MACs), else bhyve's."""
    for opt in dev.conf.split(",")[1:]:
        key, _, value = opt.partition("=")
        if key == "mac" and value:
            return value.lower()
    return default_mac(vm_name, dev.slot)


def _slot(item, slot):
    """(number, function) of a slot text; ConfigError's text when it is not a free slot."""
    m = _SLOT_RE.match(slot)
    if not m:
        raise ValueError(f"slot '{slot}' is not a number (3-28)")
    number = int(m.group(1))
    if number in RESERVED_SLOTS:
        raise ValueError(f"slot {number} is kept for {RESERVED_SLOTS[number]} (use 3-28)")
    if not 3 <= number <= 28:
        raise ValueError(f"slot {number} is out of range (3-28)")
    return number, int(m.group(2) or 0)


def _check_emulation(emulation, conf, options):
    """ValueError's text when bhyve would refuse this emulation with this conf."""
    if emulation not in EMULATIONS or emulation in OURS:
        import difflib
        near = difflib.get_close_matches(emulation, sorted(EMULATIONS), n=1)
        raise ValueError(f"unknown device '{emulation}'" + (f" (did you mean {near[0]}?)" if near else ""))
    if emulation in NEEDS_SOURCE and not conf:
        raise ValueError(f"{emulation} needs a source")
    if emulation == "passthru":
        if not re.fullmatch(r"[0-9]+/[0-9]+/[0-9]+", conf.split(",")[0]):
            raise ValueError("passthru wants bus/slot/function like 3/0/0")
        if "S" not in options:
            raise ValueError("passthru needs S in VMoptions (wired memory)")


def parse_devices(name, text, options=""):
    """Devices="slot,emulation,conf ..." -> tuple of Device, refusing what bhyve would refuse."""
    devices, used = [], {}
    for item in text.split():
        parts = item.split(",", 2)
        if len(parts) < 2 or not parts[1]:
            raise ConfigError(f"{CONF}: Devices item '{item}' is not slot,emulation[,source]", vm=name)
        slot, emulation = parts[0], parts[1]
        conf = parts[2] if len(parts) > 2 else ""
        try:
            key = _slot(item, slot)
            if key in used:
                raise ConfigError(f"{CONF}: Devices items '{used[key]}' and '{item}' use the same slot", vm=name)
            used[key] = item
            _check_emulation(emulation, conf, options)
        except ValueError as exc:
            raise ConfigError(f"{CONF}: Devices item '{item}': {exc}", vm=name) from None
        devices.append(Device(slot, emulation, conf))
    return tuple(devices)
