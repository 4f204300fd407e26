"""systemd units for VMs on Linux: what dorc writes there instead of an rc.d script.

Which one: the platform's service manager (rc.d scripts on FreeBSD, systemd units on Linux:
KVM_PLATFORM, else the host's), KVM_INIT=rc.d|systemd overriding it (base.Platform.service). The unit `RCNAME.service` (the same sh-identifier name as the rc.d script, so
`service RCNAME start` means the same on both hosts) goes in KVM_UNITDIR (/etc/systemd/system).

The unit runs the supervisor in the foreground (`start NAME`): systemd then watches the process
that owns the VM, and the supervisor's exit status is the unit's (a guest that faulted leaves it
failed). `stop -t TIMEOUT NAME` stops it; KillMode=mixed sends systemd's own SIGTERM to the
supervisor only (which presses the power button), never straight to the hypervisor.

Enabling is done with files, as `systemctl enable` does for WantedBy=multi-user.target: a
symlink in multi-user.target.wants. No systemctl is needed to write or enable a unit; when
systemd runs and the unit folder is the one it reads, `systemctl daemon-reload` is run after a
change so that it sees it.
"""

import os
import shutil
from pathlib import Path

from kvm import host, platform
from kvm.host import paths

MARKER = "# kvm-systemd-unit: "
WANTED_BY = "multi-user.target"
SYSTEM_UNITDIR = Path("/etc/systemd/system")
STOP_GRACE = 30  # TimeoutStopSec beyond the stop timeout: the forced power-off and postRun (as rc.j2)
# rc.d's placeholder names in REQUIRE/BEFORE and the systemd targets that stand for them; any other
# word is a service: another VM's rc name or a host service (sshd -> sshd.service)
TARGETS = {"NETWORKING": "network-online.target", "NETWORK": "network.target",
           "FILESYSTEMS": "local-fs.target", "DAEMON": "basic.target", "SERVERS": "basic.target"}


# the units that mount ZFS datasets at boot (OpenZFS's, zfs-fuse's): a VM starts after them
ZFS_UNITS = ("zfs-mount.service", "zfs-fuse.service")


def running():
    """True when systemd is this host's init (sd_booted(3): /run/systemd/system, KVM_SYSTEMD_RUN)."""
    return paths.current().systemd_run.is_dir()


def zfs_units(at=None):
    """The ZFS mounting units this host has (in its unit folders or the admin's), in ZFS_UNITS' order."""
    where = at or paths.current()
    folders = (*where.base_unitdirs, where.unitdir)
    return [u for u in ZFS_UNITS if any((folder / u).exists() for folder in folders)]


def in_use():
    """True when dorc writes systemd units here rather than rc.d scripts."""
    return platform.current().service == "systemd"


def unit_name(rcname):
    return f"{rcname}.service"


def units(words):
    """rc.d REQUIRE/BEFORE words as systemd unit names, in order."""
    return " ".join(TARGETS.get(w, unit_name(w)) for w in words.split())


def quote(value):
    """An ExecStart= word: % doubled (systemd's specifiers), quoted when it holds blanks."""
    value = str(value).replace("%", "%%")
    if any(c.isspace() or c in '"\\' for c in value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


SWITCHES_UNIT = "kvm-switches.service"
SWITCHES_MARKER = "# kvm-switches-unit: "


def switches_unit(root_path):
    """The unit that brings every kvm switch of the root up at boot, before the VMs that use them
    (their units have Wants= and After= it): after the network and nftables.service (whose `flush
    ruleset` would wipe kvm's table), and again whenever nftables.service restarts (PartOf=)."""
    root = quote(root_path)
    zfs = " ".join(zfs_units())
    return (f"{SWITCHES_MARKER}{root_path}\n"
            f"# written by dorc for the VMs whose NICs are on kvm switches; `switch up --all` is idempotent\n"
            f"[Unit]\nDescription=kvm switches of {root_path}\n"
            f"Wants=network-online.target\n"
            f"After=network-online.target nftables.service{' ' + zfs if zfs else ''}\n"
            f"PartOf=nftables.service\nRequiresMountsFor={root}\n\n"
            f"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={root}/switch up --all\n\n"
            f"[Install]\nWantedBy={WANTED_BY}\n")


def render(vm_name, rcname, root_path, require, before, keyword, timeout, version, switches=False):
    """The unit text for a VM: after the mounts of its folder (RequiresMountsFor=) and after the
    host's ZFS mounting units, so that it never starts before its pool is mounted."""
    from kvm.conf.templating import render as render_template
    folder = Path(root_path) / "vm" / vm_name
    return render_template("unit.j2", root_path, vm=vm_name, rcname=rcname, root=quote(root_path),
                           vmarg=quote(vm_name), require=require, before=before, keyword=keyword,
                           after_units=units(require), before_units=units(before), timeout=timeout,
                           stop_timeout=timeout + STOP_GRACE, wanted_by=WANTED_BY, version=version,
                           folder=quote(folder), zfs_units=" ".join(zfs_units()), switches=switches)


def wants_link(path):
    """The symlink that enables the unit at `path`."""
    return Path(path).parent / f"{WANTED_BY}.wants" / Path(path).name


def is_enabled(path):
    return os.path.islink(wants_link(path))


def enable(path):
    """What `systemctl enable` does for our unit: the wants symlink (absolute, as systemctl makes it)."""
    link = wants_link(path)
    if host.dry_run():
        host.plan(f"ln -sf {path} {link}")
        return
    link.parent.mkdir(mode=0o755, exist_ok=True)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(path, link)


def disable(path):
    """Remove the wants symlink, when there is one."""
    link = wants_link(path)
    if os.path.islink(link):
        host.remove_file(link)


def base_unit(rcname, at=None):
    """The host's own unit of that name (/lib/systemd/system/ssh.service), or None."""
    for folder in (at or paths.current()).base_unitdirs:
        if (folder / unit_name(rcname)).exists():
            return folder / unit_name(rcname)
    return None


def reload(folder):
    """systemctl daemon-reload when systemd runs and reads `folder` (a test's folder it never reads)."""
    if Path(folder) == SYSTEM_UNITDIR and running() and shutil.which("systemctl"):
        host.run(["systemctl", "daemon-reload"], check=False)
