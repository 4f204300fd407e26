"""Linux: systemd units, cron, iproute2 helpers; ports, interfaces and PCI devices read from /proc and
/sys, so that no FreeBSD tool (sockstat, ifconfig, pciconf) and no net-tools is needed."""

import os
from pathlib import Path

from kvm.host import paths
from kvm.platform.base import Platform

PROC_NET = Path("/proc/net")
TCP_LISTEN = "0A"  # the st column of /proc/net/tcp for a listening socket


class Linux(Platform):
    name = "linux"
    native_service = "systemd"
    scheduler = "cron"
    helpers = "iproute2"
    # Debian 12 refuses `pip install` into its python3 (PEP 668): a virtualenv is the way there
    moved_python_hint = ("keep it in place, and after a move run its kvminst again (Debian's python3 takes no "
                         "pip install (PEP 668): a lasting virtualenv is the way, python3 -m venv /opt/kvm && "
                         "/opt/kvm/bin/pip install . && /opt/kvm/bin/kvminst -p POOL, or pipx install .)")

    @staticmethod
    def link_up(ifname):
        return f"IfUp {ifname}"

    @staticmethod
    def bridge_add(bridge, ifname):
        return f"BridgeAdd {bridge} {ifname}"

    def listening_ports(self):
        """TCP ports something listens on, IPv4 and IPv6, from /proc/net/tcp{,6} (any process's)."""
        ports = set()
        for table in ("tcp", "tcp6"):
            try:
                lines = (PROC_NET / table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 3 and fields[3] == TCP_LISTEN:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports

    def interface_info(self, ifname):
        """{exists, mac, bridge} of a host interface (a tap), from /sys/class/net (KVM_SYSFS)."""
        sys_net = paths.current().sysfs / "class/net"
        folder = sys_net / ifname
        if not ifname or "/" in ifname or not folder.exists():
            return {"exists": False}
        mac = _read(folder / "address")
        master = folder / "master"
        bridge = os.path.basename(os.readlink(master)) if master.is_symlink() else None
        if bridge and not (sys_net / bridge / "bridge").is_dir():
            bridge = None  # a bond's or a VRF's member, not a bridge's
        return {"exists": True, "mac": mac, "bridge": bridge}

    def pci_info(self, bsf):
        """A passthru device B/S/F as /sys/bus/pci sees it: vendor and device ids, class, driver."""
        bus, slot, function = (int(x) for x in bsf.split("/"))
        selector = f"0000:{bus:02x}:{slot:02x}.{function:x}"
        folder = paths.current().sysfs / "bus/pci/devices" / selector
        if not folder.is_dir():
            return {"selector": selector, "found": False}
        driver = folder / "driver"
        return {"selector": selector, "found": True,
                "driver": os.path.basename(os.readlink(driver)) if driver.is_symlink() else None,
                "vendor": _read(folder / "vendor"), "device": _read(folder / "device"),
                "class": _read(folder / "class")}

    def mounted(self):
        """Mounted filesystems from /proc/self/mountinfo: their device numbers (a block device under
        any of its names) and sources."""
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or "-" not in fields:
                continue
            where = f"mounted at {_unescape(fields[4])}"
            major, _, minor = fields[2].partition(":")
            if major.isdigit() and minor.isdigit() and int(major):
                out.append((os.makedev(int(major), int(minor)), where))
            source = _unescape(fields[fields.index("-") + 2])
            if source.startswith("/"):
                out.append((source, where))
        return out

    def swaps(self):
        """Swap devices and files from /proc/swaps."""
        try:
            lines = Path("/proc/swaps").read_text().splitlines()[1:]
        except OSError:
            return []
        return [(_unescape(line.split()[0]), "swap") for line in lines if line.split()]

    def partition_of(self, used_rdev, disk_path, disk_st, used_path=None):
        """sysfs (KVM_SYSFS) tells a partition's disk: /sys/dev/block/MAJ:MIN/partition, beside the disk's dev."""
        folder = paths.current().sysfs / "dev/block" / f"{os.major(used_rdev)}:{os.minor(used_rdev)}"
        try:
            real = Path(os.path.realpath(folder))
            if not (real / "partition").exists():
                return None
            major, _, minor = (real.parent / "dev").read_text().strip().partition(":")
        except OSError:
            return None
        if os.makedev(int(major), int(minor)) == disk_st.st_rdev:
            return f"/dev/{real.name}"
        return None

    @staticmethod
    def network():
        """The switch code of this platform (kvm switch, a VM's NICs on switches)."""
        from kvm.platform.linux_net import NET
        return NET

    @staticmethod
    def apply_limits(name, key, pid, limits):
        """Limits on the hypervisor's pid: a cgroup per VM (kvm/platform/cgroups.py); log lines."""
        from kvm.platform import cgroups
        return cgroups.apply(name, key, pid, limits)

    @staticmethod
    def remove_limits(name, key, pid, limits):
        from kvm.platform import cgroups
        cgroups.remove(key, limits)

    def online_cpus(self):
        """The host CPUs a vCPU may be pinned to: SYSFS/devices/system/cpu/online (0-3,6); None
        when it cannot be read."""
        from kvm.conf.guestconf import parse_cpu_list
        text = _read(paths.current().sysfs / "devices" / "system" / "cpu" / "online")
        try:
            return parse_cpu_list(text) if text else None
        except ValueError:
            return None

    @staticmethod
    def install_command(packages):
        """The command that installs `packages` (Debian package names)."""
        return f"apt-get install {' '.join(packages)}"


def _unescape(text):
    """A mountinfo or swaps field: spaces and the like are octal escapes (\\040)."""
    import re
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _read(path):
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


PLATFORM = Linux()
