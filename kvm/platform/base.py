"""What both platforms share: the choice of service manager (KVM_INIT overrides the platform's)."""

import os
import stat

from kvm.errors import UsageError

SERVICE_MANAGERS = ("rc.d", "systemd")
# what a VM's service file is called in what commands print, by service manager
SERVICE_NOUNS = {"rc.d": "rc.d script", "systemd": "systemd unit"}


class Platform:
    """The interface; freebsd.py and linux.py fill it in."""

    name = ""
    native_service = ""     # "rc.d" or "systemd"
    scheduler = ""          # "periodic" or "cron"
    helpers = ""            # the network helpers of `functions` vmcreate writes: "ifconfig" or "iproute2"
    # kvminst's advice when the commands' interpreter is a virtualenv or a checkout that may move
    moved_python_hint = "kvminst --python PATH names another (e.g. the system's python3 with kvm installed)"

    @property
    def service(self):
        """The service manager dorc writes for: KVM_INIT=rc.d|systemd, else the platform's own."""
        chosen = os.environ.get("KVM_INIT")
        if not chosen:
            return self.native_service
        if chosen not in SERVICE_MANAGERS:
            raise UsageError(f"KVM_INIT={chosen}: unknown service manager (known: {', '.join(SERVICE_MANAGERS)})")
        return chosen

    @property
    def service_noun(self):
        """What dorc writes for a VM, as commands name it: "rc.d script" or "systemd unit"."""
        return SERVICE_NOUNS[self.service]

    def boot_hint(self, root):
        """kvminst's line on starting VMs at boot with the service manager in use: rc.d's host-wide
        rc.d/kvm, or systemd's unit per VM (dorc --enable)."""
        if self.service == "rc.d":
            return (f"Host-wide service (optional): cp {root}/rc.d/kvm /usr/local/etc/rc.d/kvm && "
                    f"sysrc kvm_enable=YES kvm_list=\"vm1 vm2\"")
        return (f"VMs at boot (optional): {root}/dorc NAME --enable (a systemd unit each, started in the "
                f"order --require gives)")

    def network_hooks(self, bridge, tap, uplink):
        """(preRun lines, postRun lines) that put `tap` on `bridge` (with `uplink` as a member)."""
        up, addm = self.link_up, self.bridge_add
        pre = [f"CreateIF bridge {bridge}", f"CreateIF tap {tap}", up(tap), addm(bridge, tap)]
        if uplink:
            pre.append(f"{addm(bridge, uplink)} 2>/dev/null  # already a member is fine")
        pre.append(up(bridge))
        return pre, [f"DestroyIF {tap}"]

    # ------------------------------------------------------------ what the host itself uses

    def apply_limits(self, name, key, pid, limits):
        """Limits on the hypervisor's pid, before its guest runs (key: the VM's run-folder name,
        unique on the host); the lines to log. ConfigError (one line, with the fix) when they
        cannot be applied."""
        raise NotImplementedError

    def remove_limits(self, name, key, pid, limits):
        """Undo apply_limits once the hypervisor ended."""
        raise NotImplementedError

    def online_cpus(self):
        """The host CPUs online (a frozenset of numbers), or None when unknown."""
        return None

    def host_use(self, path):
        """Why the host itself uses the file or device `path` (mounted, swap, a ZFS pool's vdev,
        or a disk one of whose partitions is), or None: such a path is never a VM's disk."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        from kvm import zfs
        users = self.mounted() + self.swaps() + [(p, f"a vdev of ZFS pool {pool}") for pool, p in zfs.pool_devices()]
        for used, why in users:
            if isinstance(used, int):  # a device number (Linux's mountinfo gives them)
                found = stat.S_ISBLK(st.st_mode) and used == st.st_rdev
                part = stat.S_ISBLK(st.st_mode) and not found and self.partition_of(used, path, st)
            else:
                try:
                    ust = os.stat(used)
                except OSError:
                    continue
                found = _same(st, ust)
                part = not found and _is_device(st) and _is_device(ust) and self.partition_of(ust.st_rdev, path, st,
                                                                                             used)
            if found:
                return why
            if part:
                return f"its partition {part} is {why}" if isinstance(part, str) else f"a partition of it is {why}"
        return None

    def mounted(self):
        """[(device path or number, 'mounted at DIR')] of the mounted filesystems."""
        return []

    def swaps(self):
        """[(path, 'swap')] of the swap devices and files in use."""
        return []

    def partition_of(self, used_rdev, disk_path, disk_st, used_path=None):
        """The name of the partition `used_rdev` (or used_path) when it lies on the disk `disk_path`, else None."""
        return None


def _is_device(st):
    return stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)


def _same(a, b):
    """The same file, or the same device (under two names)."""
    if _is_device(a) and _is_device(b):
        return a.st_rdev == b.st_rdev and stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
