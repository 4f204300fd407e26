"""Limits on Linux: a cgroup per VM, PARENT/KEY (PARENT: KVM_CGROUP_PARENT, kvm.slice by default;
KEY: the VM's run-folder name, ROOT_ID.NAME), the hypervisor's pid moved in before its guest runs
(qemu is started paused), removed once it ended.

cgroup v2 (SYSFS/fs/cgroup/cgroup.controllers exists): cpu.max, memory.max, the controllers
enabled in the parents' cgroup.subtree_control. cgroup v1 (a hybrid host, as Debian 11 and
this machine): the cpu controller's cpu.cfs_quota_us / cpu.cfs_period_us and the memory
controller's memory.limit_in_bytes, each controller's own tree. pcpu and vmem go here; the disk
limits (rbps, wbps, riops, wiops) are qemu's own drive throttling (hypervisor/qemu/argv.py): a
cgroup's io.max needs a block device, which a disk file on ZFS has not.
"""

import os

from kvm import host
from kvm.errors import ConfigError, KvmError
from kvm.host import paths

PERIOD = 100000   # microseconds of CFS's period: pcpu=P gets P * PERIOD / 100 of it


def root():
    return paths.current().sysfs / "fs" / "cgroup"


def version():
    """2 on a unified hierarchy, 1 where only the v1 controllers are mounted, None without cgroups."""
    if (root() / "cgroup.controllers").is_file():
        return 2
    if (root() / "cpu").is_dir() or (root() / "memory").is_dir():
        return 1
    return None


def files(limits):
    """{controller: [(file, text), ...]} the limits write, for this host's cgroup version."""
    out = {}
    values = dict(limits)
    v2 = version() == 2
    if "pcpu" in values:
        quota = values["pcpu"] * PERIOD // 100
        out["cpu"] = [("cpu.max", f"{quota} {PERIOD}")] if v2 else \
            [("cpu.cfs_period_us", str(PERIOD)), ("cpu.cfs_quota_us", str(quota))]
    if "vmem" in values:
        out["memory"] = [("memory.max" if v2 else "memory.limit_in_bytes", str(values["vmem"]))]
    return out


def folders(key, controllers):
    """The VM's cgroup folders: one on v2, one per controller on v1."""
    parent = paths.current().cgroup_parent
    if version() == 2:
        return [root() / parent / key]
    return [root() / c / parent / key for c in controllers]


def _check_controller(name, controller, where):
    if not where.is_dir() or not os.access(where, os.W_OK):
        raise ConfigError(f"Limits need the cgroup controller '{controller}', and {where} is missing or not "
                          f"writable: mount cgroup2 on {root()} (or the v1 {controller} controller), as root",
                          vm=name)


def apply(name, key, pid, limits):
    """Make the VM's cgroup(s), write the limits, move `pid` in. Returns the lines to log."""
    wanted = files(limits)
    if not wanted:
        return []
    ver = version()
    if ver is None:
        raise ConfigError(f"Limits need cgroups, and none is mounted on {root()}: mount cgroup2 there", vm=name)
    parent = paths.current().cgroup_parent
    try:
        if ver == 2:
            return _apply_v2(name, key, pid, wanted, parent)
        return _apply_v1(name, key, pid, wanted, parent)
    except host.WriteFailed as exc:
        remove(key, limits)
        raise ConfigError(f"Limits: {exc.message}", vm=name) from None


def _apply_v1(name, key, pid, wanted, parent):
    said = []
    for controller, writes in wanted.items():
        _check_controller(name, controller, root() / controller)
        folder = root() / controller / parent / key
        host.make_dirs(folder)
        for filename, text in writes:
            host.write_control(folder / filename, text)
        host.write_control(folder / "cgroup.procs", str(pid))
        said.append(f"cgroup {folder}: " + ", ".join(f"{f}={t}" for f, t in writes))
    return said


def _apply_v2(name, key, pid, wanted, parent):
    enable = " ".join(f"+{c}" for c in wanted)
    _check_controller(name, "cgroup2", root())
    host.write_control(root() / "cgroup.subtree_control", enable)
    host.make_dirs(root() / parent)
    host.write_control(root() / parent / "cgroup.subtree_control", enable)
    folder = root() / parent / key
    host.make_dirs(folder)
    writes = [w for ws in wanted.values() for w in ws]
    for filename, text in writes:
        host.write_control(folder / filename, text)
    host.write_control(folder / "cgroup.procs", str(pid))
    return [f"cgroup {folder}: " + ", ".join(f"{f}={t}" for f, t in writes)]


def remove(key, limits):
    """Remove the VM's cgroup(s) once its hypervisor ended (they are empty then); what cannot be
    removed is left (a later start reuses it)."""
    for folder in folders(key, list(files(limits))):
        try:
            host.remove_folder(folder)
        except (OSError, KvmError):
            pass
