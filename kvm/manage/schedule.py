"""The snapshot schedule kvminst installs: `snap auto --all` from periodic(8) on FreeBSD (a daily
script, off until `daily_kvm_snap_enable=YES` in /etc/periodic.conf) and from cron on Linux
(`/etc/cron.d/kvm-snap`, its line commented out). Both are off by default: snapshots cost pool
space, and an admin chooses the keep counts first.

The periodic script is ours (its settings live in periodic.conf), so an upgrade rewrites it; the
cron file is enabled by editing it, so once there it is the admin's and never rewritten.

One schedule per install root: each file names its root on its first line (MARK). The first root
of a host takes the plain names; a root that finds them taken by another root's file gets files of
its own, named with its id (runfiles.root_id): `150.kvm-snap-ID` with the periodic.conf variables
`daily_kvm_snap_ID_*`, or `/etc/cron.d/kvm-snap-ID`. Another root's file is never touched.
"""

import re
from pathlib import Path

from kvm import __version__, host
from kvm.conf.templating import render
from kvm.host import paths
from kvm.host.runfiles import root_id
from kvm.storage.snapauto import DEFAULT_KEEP

PERIODIC_NAME = "150.kvm-snap"  # daily, after the 1xx clean-ups, before the 2xx backups
CRON_NAME = "kvm-snap"          # no dot: Debian's cron skips cron.d files with one (a root id has none)
MARK = "# kvm-snap: scheduled snapshots of the kvm VMs of "
MARKED = re.compile(re.escape(MARK) + r"(.+) \(snap auto --all\)\.$", re.M)
VAR = "daily_kvm_snap"          # the periodic.conf variables' prefix: VAR_enable, VAR_keep_daily...
# a daily run: hours mean little there, so the hourly count is 0 (one snapshot a day would
# otherwise count as an hour of its own: see snapauto's rule)
PERIODIC_KEEP = dict(DEFAULT_KEEP, hourly=0)
CRON_KEEP = DEFAULT_KEEP  # hourly runs


def enable_line(var=VAR):
    """What enables a periodic script whose variables begin with `var`."""
    return f"sysrc -f /etc/periodic.conf {var}_enable=YES"


def owner(path):
    """The root a schedule file was written for (the path its first lines name), or None: no such
    file, or one without our mark (the admin's own, or ours edited)."""
    try:
        head = Path(path).read_text(errors="replace")[:2000]
    except OSError:
        return None
    found = MARKED.search(head)
    return found.group(1) if found else None


def own_name(plain, root):
    """A root's own schedule file beside the plain one: NAME-ID."""
    return plain.with_name(f"{plain.name}-{root_id(root)}")


def target(host_os, root):
    """(file to write, template, keep counts, mode, periodic.conf prefix, the plain file when
    another root's holds that name, that root) for this root: periodic on FreeBSD, cron on Linux."""
    p = paths.current()
    if host_os.scheduler == "periodic":
        plain, template, keep, mode = p.periodic_dir / PERIODIC_NAME, "periodic-snap.j2", PERIODIC_KEEP, 0o755
    else:
        plain, template, keep, mode = p.cron_dir / CRON_NAME, "cron-snap.j2", CRON_KEEP, 0o644
    own, there = own_name(plain, root), owner(plain)
    if there == str(root):
        return plain, template, keep, mode, VAR, None, None
    if there is not None or owner(own) == str(root):
        return own, template, keep, mode, f"{VAR}_{root_id(root)}", plain if there else None, there
    return plain, template, keep, mode, VAR, None, None


def install(root, host_os):
    """Write the schedule file for `root`; a line for kvminst to print."""
    path, template, keep, mode, var, taken, other = target(host_os, root)
    because = f"; {taken} is the schedule of {other}" if taken else ""
    if host_os.scheduler != "periodic":
        if not path.parent.is_dir():
            return f"no {path.parent} (is cron installed?): no snapshot schedule written"
        if path.exists():
            return f"snapshot schedule {path} kept as it is (yours once written: delete it for a fresh one)"
    else:
        host.make_dirs(path.parent)
    text = render(template, None, root=str(root), version=__version__, keep=keep)
    if var != VAR:
        text = text.replace(f"{VAR}_", f"{var}_")  # this root's own periodic.conf variables
    host.write_file(path, text, mode=mode)
    how = f"enable: {enable_line(var)}" if host_os.scheduler == "periodic" else "enable: remove the # of its last line"
    return f"snapshot schedule {path} written, off ({how}){because}"


def ours(path, root):
    """True when `path` is a schedule file kvminst wrote for this root."""
    return owner(path) == str(root)


def owned(root):
    """The schedule files written for this root (never another root's, nor the admin's own)."""
    p = paths.current()
    plains = (p.periodic_dir / PERIODIC_NAME, p.cron_dir / CRON_NAME)
    return [path for plain in plains for path in (plain, own_name(plain, root)) if ours(path, root)]


def remove(root):
    """kvminst --uninstall: remove the schedule files written for this root."""
    for path in owned(root):
        host.remove_file(path)
