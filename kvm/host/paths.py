"""Every system path in one place, each overridable by an environment variable.

| variable          | default                 | what                                   |
|-------------------|-------------------------|----------------------------------------|
| KVM_ROOT          | (found, see root.py)    | install root folder                    |
| KVM_RCDIR         | /usr/local/etc/rc.d     | where rc.d scripts go                  |
| KVM_BASE_RCDIR    | /etc/rc.d               | the base system's rc.d (names VMs must not take) |
| KVM_RCCONF        | /etc/rc.conf            | the rc.conf that sysrc edits           |
| KVM_VMM_DIR       | /dev/vmm                | bhyve's allocated VMs                  |
| KVM_DEV_DIR       | /dev                    | where nmdm devices appear              |
| KVM_RUN_DIR       | /var/run/kvm            | supervisor locks and state             |
| KVM_FIRMWARE_DIRS | edk2-bhyve, uefi-firmware folders (colon list) | firmware to pin |
| KVM_GRUB_BHYVE    | /usr/local/sbin/grub-bhyve | the installed grub-bhyve            |
| KVM_PERIODIC_DIR  | /usr/local/etc/periodic/daily | where kvminst puts the snapshot schedule (FreeBSD) |
| KVM_CRON_DIR      | /etc/cron.d             | where kvminst puts the snapshot schedule (Linux) |
| KVM_UNITDIR       | /etc/systemd/system     | where systemd units go (Linux)         |
| KVM_BASE_UNITDIRS | /lib/systemd/system:/usr/lib/systemd/system | the host's units (names VMs must not take) |
| KVM_SYSFS         | /sys                    | Linux's sysfs (PCI devices, interfaces) |
| KVM_SYSTEMD_RUN   | /run/systemd/system     | there when systemd is the init (sd_booted(3)) |
| KVM_CGROUP_PARENT | kvm.slice               | the cgroup VMs' cgroups are made in (Linux, Limits) |
"""

import os
import sys
from pathlib import Path

from kvm.errors import NotFound

PACKAGE_DIR = Path(__file__).resolve().parent.parent


class Paths:
    """The system paths in force for this process."""

    def __init__(self, **values):
        for key in ("rcdir", "base_rcdir", "rcconf", "vmm_dir", "dev_dir", "run_dir", "firmware_dirs", "grub_bhyve",
                    "periodic_dir", "cron_dir", "unitdir", "base_unitdirs", "sysfs", "systemd_run", "cgroup_parent"):
            setattr(self, key, values[key])

    def share_dirs(self):
        """Folders holding the project's templates/ and rc.d/: the source tree when kvm runs from
        one (a checkout, an editable install), else where pip put the data files: the interpreter's
        prefix (a venv, /usr/local), then the user base (`pip install --user`)."""
        dirs = []
        if (PACKAGE_DIR.parent / "setup.cfg").is_file():
            dirs.append(PACKAGE_DIR.parent)
        dirs.append(Path(sys.prefix) / "share" / "kvm")
        import site  # already imported at start-up: costs nothing
        dirs.append(Path(site.getuserbase()) / "share" / "kvm")
        return dirs

    def share_file(self, relative):
        """The first existing share file `relative` (e.g. 'templates/set.conf.j2')."""
        for base in self.share_dirs():
            candidate = base / relative
            if candidate.exists():
                return candidate
        raise NotFound(f"kvm's data file {relative} is in none of {', '.join(map(str, self.share_dirs()))}"
                       "; kvm is installed incompletely: install it again")


def _env_path(name, default):
    return Path(os.environ.get(name) or default)


def current():
    """Paths from the environment (read each call: cheap, and tests change it)."""
    fw = os.environ.get("KVM_FIRMWARE_DIRS") or "/usr/local/share/edk2-bhyve:/usr/local/share/uefi-firmware"
    return Paths(
        rcdir=_env_path("KVM_RCDIR", "/usr/local/etc/rc.d"),
        base_rcdir=_env_path("KVM_BASE_RCDIR", "/etc/rc.d"),
        rcconf=_env_path("KVM_RCCONF", "/etc/rc.conf"),
        vmm_dir=_env_path("KVM_VMM_DIR", "/dev/vmm"),
        dev_dir=_env_path("KVM_DEV_DIR", "/dev"),
        run_dir=_env_path("KVM_RUN_DIR", "/var/run/kvm"),
        firmware_dirs=tuple(Path(p) for p in fw.split(":") if p),
        grub_bhyve=_env_path("KVM_GRUB_BHYVE", "/usr/local/sbin/grub-bhyve"),
        periodic_dir=_env_path("KVM_PERIODIC_DIR", "/usr/local/etc/periodic/daily"),
        cron_dir=_env_path("KVM_CRON_DIR", "/etc/cron.d"),
        unitdir=_env_path("KVM_UNITDIR", "/etc/systemd/system"),
        base_unitdirs=tuple(Path(p) for p in (os.environ.get("KVM_BASE_UNITDIRS")
                                              or "/lib/systemd/system:/usr/lib/systemd/system").split(":") if p),
        sysfs=_env_path("KVM_SYSFS", "/sys"),
        systemd_run=_env_path("KVM_SYSTEMD_RUN", "/run/systemd/system"),
        cgroup_parent=os.environ.get("KVM_CGROUP_PARENT") or "kvm.slice",
    )
