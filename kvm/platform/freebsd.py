"""FreeBSD: rc.d scripts and rc.conf (sysrc), periodic(8), ifconfig, sockstat, pciconf, pkg."""

import os
import re

from kvm import host
from kvm.errors import ConfigError
from kvm.platform.base import Platform


# Limits' names -> rctl's resource and action (deny for pcpu and vmemoryuse, throttle for the
# disk rates, the only actions the kernel takes for them)
RCTL = {"pcpu": "pcpu:deny", "rbps": "readbps:throttle", "wbps": "writebps:throttle",
        "riops": "readiops:throttle", "wiops": "writeiops:throttle", "vmem": "vmemoryuse:deny"}


def rctl_rules(pid, limits):
    """The rctl rules of Limits on process `pid`, in the order written."""
    return [f"process:{pid}:{RCTL[name]}={number}" for name, number in limits]


class FreeBSD(Platform):
    name = "freebsd"
    native_service = "rc.d"
    scheduler = "periodic"
    helpers = "ifconfig"

    @staticmethod
    def apply_limits(name, key, pid, limits):
        """Limits on the hypervisor's exact pid: rctl(8) rules (process:PID:...), added in one call;
        the kernel drops them when the process exits. Log lines."""
        rules = rctl_rules(pid, limits)
        if not rules:
            return []
        res = host.run(["rctl", "-a", *rules], check=False)
        if res.status != 0:
            why = (res.stderr.strip().splitlines() or [f"exit {res.status}"])[-1]
            host.run(["rctl", "-r", f"process:{pid}"], check=False)   # what was added before the failure
            if "kern.racct.enable" in why or "not present in kernel" in why:
                raise ConfigError(f"Limits need RACCT/RCTL, which is off: add kern.racct.enable=1 to "
                                  f"/boot/loader.conf and reboot ({why})", vm=name)
            raise ConfigError(f"Limits: {why}", vm=name)
        return [f"rctl {' '.join(rules)}"]

    @staticmethod
    def remove_limits(name, key, pid, limits):
        """Nothing: rctl's rules on a process go with it."""

    @staticmethod
    def online_cpus():
        """The host CPUs a vCPU may be pinned to: 0 .. hw.ncpu - 1 (a CPU disabled at boot is not
        counted in hw.ncpu; os.cpu_count asks exactly that sysctl)."""
        count = os.cpu_count()
        return frozenset(range(count)) if count else None

    @staticmethod
    def link_up(ifname):
        return f"ifconfig {ifname} up"

    @staticmethod
    def bridge_add(bridge, ifname):
        return f"ifconfig {bridge} addm {ifname}"

    def listening_ports(self):
        """TCP ports something listens on (sockstat -4l and -6l), matched exactly."""
        ports = set()
        for fam in ("-4l", "-6l"):
            res = host.run(["sockstat", fam], mutating=False, check=False)
            for line in res.stdout.splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 6:
                    m = re.search(r":(\d+)$", fields[5])
                    if m:
                        ports.add(int(m.group(1)))
        return ports

    def interface_info(self, ifname):
        """{exists, mac, bridge} of a host interface (a tap), from ifconfig."""
        res = host.run(["ifconfig", ifname], mutating=False, check=False)
        if res.status != 0:
            return {"exists": False}
        mac = re.search(r"\bether\s+([0-9a-f:]{17})", res.stdout)
        out = {"exists": True, "mac": mac.group(1) if mac else None, "bridge": None}
        bridges = host.run(["ifconfig", "-g", "bridge"], mutating=False, check=False).stdout.split()
        for bridge in bridges:
            text = host.run(["ifconfig", bridge], mutating=False, check=False).stdout
            if re.search(rf"\bmember: {re.escape(ifname)}\b", text):
                out["bridge"] = bridge
                break
        return out

    def pci_info(self, bsf):
        """pciconf's vendor and device description of a passthru device B/S/F."""
        selector = "pci0:" + bsf.replace("/", ":")
        res = host.run(["pciconf", "-l", "-v", selector], mutating=False, check=False)
        if res.status != 0:
            return {"selector": selector, "found": False}
        fields = dict(re.findall(r"^\s+(vendor|device|class)\s+=\s+'?(.*?)'?$", res.stdout, re.M))
        driver = res.stdout.split("@", 1)[0].strip() if "@" in res.stdout else None
        return {"selector": selector, "found": True, "driver": driver, **fields}


    def mounted(self):
        """Mounted filesystems' sources (mount -p: fstab lines)."""
        res = host.run(["mount", "-p"], mutating=False, check=False)
        return [(f[0], f"mounted at {f[1]}") for f in (ln.split() for ln in res.stdout.splitlines())
                if len(f) >= 2 and f[0].startswith("/")]

    def swaps(self):
        """Swap devices (swapctl -l)."""
        res = host.run(["swapctl", "-l"], mutating=False, check=False)
        rows = (line.split() for line in res.stdout.splitlines()[1:])
        return [(f[0], "swap") for f in rows if f and f[0].startswith("/")]

    def partition_of(self, used_rdev, disk_path, disk_st, used_path=None):
        """GEOM's names: ada0p2 and ada0s1a lie on ada0 (labels under /dev/gpt are not followed)."""
        if not used_path:
            return None
        disk = os.path.realpath(disk_path)
        used = os.path.realpath(used_path)
        return used if re.fullmatch(re.escape(disk) + r"[ps][0-9]+[a-h]?", used) else None

    @staticmethod
    def network():
        """The switch code of this platform (kvm switch, a VM's NICs on switches)."""
        from kvm.platform.freebsd_net import NET
        return NET

    @staticmethod
    def install_command(packages):
        """The command that installs `packages` (FreeBSD package names)."""
        return f"pkg install {' '.join(packages)}"


PLATFORM = FreeBSD()
