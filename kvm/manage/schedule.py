"""The snapshot schedule kvminst installs: `snap auto --all` from periodic(8) on FreeBSD (a daily
script, off until `daily_kvm_snap_enable=YES` in /etc/periodic.conf) and from cron on Linux
(`/etc/cron.d/kvm-snap`, its line commented out). Both are off by default: snapshots cost pool
space, and an admin chooses the keep counts first.

The periodic script is ours (its settings live in periodic.conf), so an upgrade rewrites it; the
cron file is enabled by editing it, so once there it is the admin's and never rewritten.
"""

from pathlib import Path

from kvm import __version__, host
from kvm.conf.templating import render
from kvm.host import paths
from kvm.storage.snapauto import DEFAULT_KEEP

PERIODIC_NAME = "150.kvm-snap"  # daily, after the 1xx clean-ups, before the 2xx backups
CRON_NAME = "kvm-snap"          # no dot: Debian's cron skips cron.d files with one
MARK = "# kvm-snap: scheduled snapshots of the kvm VMs of "
ENABLE = "sysrc -f /etc/periodic.conf daily_kvm_snap_enable=YES"
# a daily run: hours mean little there, so the hourly count is 0 (one snapshot a day would
# otherwise count as an hour of its own: see snapauto's rule)
PERIODIC_KEEP = dict(DEFAULT_KEEP, hourly=0)
CRON_KEEP = DEFAULT_KEEP  # hourly runs


def target(host_os):
    """(file to write, template, keep counts, mode) for this platform: periodic on FreeBSD, cron on
    Linux."""
    p = paths.current()
    if host_os.scheduler == "periodic":
        return p.periodic_dir / PERIODIC_NAME, "periodic-snap.j2", PERIODIC_KEEP, 0o755
    return p.cron_dir / CRON_NAME, "cron-snap.j2", CRON_KEEP, 0o644


def install(root, host_os):
    """Write the schedule file for `root`; a line for kvminst to print."""
    path, template, keep, mode = target(host_os)
    if path.name == CRON_NAME:
        if not path.parent.is_dir():
            return f"no {path.parent} (is cron installed?): no snapshot schedule written"
        if path.exists():
            return f"snapshot schedule {path} kept as it is (yours once written: delete it for a fresh one)"
    else:
        host.make_dirs(path.parent)
    text = render(template, None, root=str(root), version=__version__, keep=keep)
    host.write_file(path, text, mode=mode)
    how = f"enable: {ENABLE}" if path.name == PERIODIC_NAME else "enable: remove the # of its last line"
    return f"snapshot schedule {path} written, off ({how})"


def ours(path, root):
    """True when `path` is a schedule file kvminst wrote for this root."""
    try:
        head = Path(path).read_text(errors="replace")[:2000]
    except OSError:
        return False
    return f"{MARK}{root} (" in head


def owned(root):
    """The schedule files written for this root (never another root's, nor the admin's own)."""
    p = paths.current()
    return [path for path in (p.periodic_dir / PERIODIC_NAME, p.cron_dir / CRON_NAME) if ours(path, root)]


def remove(root):
    """kvminst --uninstall: remove the schedule files written for this root."""
    for path in owned(root):
        host.remove_file(path)
