"""What vmlist shows: one row per VM, from its folder, set.conf, the run dir and rc.conf.

Everything is read in one pass with no process per VM (vmlist must stay near the bare
interpreter at 500 VMs): the run and vmm folders are listed once (kvm/vm/__init__.py), rc.conf is read
once, and a set.conf is read only when a stat says it changed since the last vmlist
(kvm/manage/listcache.py), with a quick reader for plain `KEY="value"` files, the common case, falling
back to the full sh reader (kvm/conf/shconf.py, which never runs anything) for anything else. The
only zfs call is one `zfs get volsize` when some disk is a zvol.
"""

import os
import re
import stat
import time

from kvm import vm as vmmod
from kvm import zfs
from kvm.conf import shconf
from kvm.errors import KvmError, UsageError
from kvm.host import paths
from kvm.platform import rcd, systemd
from kvm.vm.addresses import addresses

# every column, in the order `-o` documents them; the default set is what `vmlist` prints
COLUMNS = ("name", "state", "pid", "cpu", "memory", "loader", "disk", "vnc", "auto", "uptime", "started",
           "tpm", "limits", "pin", "agent", "switch", "vlan")
DEFAULT = ("name", "state", "cpu", "memory", "loader", "disk", "vnc", "auto", "uptime")
NUMERIC = frozenset({"pid", "cpu", "memory", "disk", "vnc", "uptime", "started"})
STATE_ORDER = {"running": 0, "orphaned": 1, "starting": 2, "allocated": 3, "crashed": 4, "stopped": 5}
ZVOL_PREFIX = "/dev/zvol/"

# A plain set.conf line: KEY="..." / KEY='...' / KEY=word, an optional comment after a blank.
# Anything else (a $, a backslash, a command, two words) sends the file to the full reader,
# so this one never has to know more of sh than these three forms. The whole text is checked
# by one match and the values taken by one findall: both run in re's C code, where a loop
# over the lines in Python would cost more than reading the file.
_VALUE = (r'{o}[A-Za-z_][A-Za-z0-9_]*)=(?:"{o}[^"$`\\\n]*)"|\'{o}[^\'\n]*)\''
          r'|{o}[^\s"\'$`\\;&|<>(){{}}#*?\[\]~]*))(?:[ \t]+#[^\n]*|[ \t]*)')  # {o}: a group
_LINE = rf'[ \t]*(?:#[^\n]*|{_VALUE.format(o="(?:")})?'
_PLAIN_FILE = re.compile(rf"(?:{_LINE}\n)*(?:{_LINE})?")
_ASSIGNMENTS = re.compile(rf"^[ \t]*{_VALUE.format(o='(')}$", re.M)


class Row:
    """One VM as listed; numbers are exact (bytes, seconds, epoch), None when unknown or none."""

    def __init__(self, name, state):
        self.name, self.state = name, state
        self.pid = self.supervisor = self.vnc = self.uptime = self.started = None
        self.cpu = self.memory = self.loader = self.disk = None
        self.auto = False
        self.tpm = self.limits = self.pin = None   # TPM, Limits, CPUPin as set.conf writes them
        self.agent = False
        self.switch = self.vlan = None   # the NICs' switches and VLANs, as config.switch_facts gives them
        self.answer = None       # the guest agent's last answer, recorded by the supervisor
        self.addresses = []      # from the leases and the agent (kvm/vm/addresses.py); --json only

    def value(self, column):
        return getattr(self, column)


def plain_values(text):
    """The values of a set.conf made only of plain assignments and comments, else None."""
    if "\r" in text or "\0" in text or text.startswith("\ufeff"):
        return None  # the full reader refuses these with its own message
    if _PLAIN_FILE.fullmatch(text) is None:
        return None
    # exactly one of the three value groups took part; the others are ''
    return {key: dq or sq or bare for key, dq, sq, bare in _ASSIGNMENTS.findall(text)}


def read_values(path, text=None):
    """(values, names not evaluated) of an sh file (or of its text), never running it;
    ConfigError when broken."""
    text = shconf.read_text(path) if text is None else text
    values = plain_values(text)
    if values is not None:
        return values, ()
    reading = shconf.read_plain(text)
    return reading.values, tuple(reading.unevaluated)


def conf_facts(folder):
    """[cores, memory bytes, loader kind, disk path, problems, guest facts, [[switch, MAC]] of the NICs,
    [switch, vlan] columns] from FOLDER/set.conf, as VmConfig's checkers read them (config.list_facts).
    Plain lists, as the cache keeps them; paths are strings (at 500 VMs, pathlib's objects cost more
    than reading the files)."""
    from kvm.conf import config
    try:
        values, unevaluated = read_values(f"{folder}/{shconf.CONF}")
    except KvmError as exc:
        return [None, None, None, "", [str(exc)], [None, None, None, False], [], [None, None]]
    cores, memory, loader, disk, problems = config.list_facts(values, unevaluated)
    return [cores, memory, loader, os.path.join(folder, disk) if disk else "", problems,
            config.guest_facts(values, unevaluated),
            config.switch_macs(os.path.basename(folder), values, unevaluated),
            config.switch_facts(values, unevaluated)]


def disk_sizes(disks):
    """{path: size in bytes} of the disks: a file's size; a zvol's volsize, all of them asked
    of zfs at once (a device's st_size says nothing); missing ones are left out."""
    sizes, zvols = {}, {}
    for path in disks:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[path] = st.st_size
        elif path.startswith(ZVOL_PREFIX):
            zvols[path[len(ZVOL_PREFIX):]] = path
    if zvols:
        for name, size in zfs.volume_sizes(sorted(zvols)).items():
            if name in zvols:
                sizes[zvols[name]] = size
    return sizes


# ------------------------------------------------------------------------ AUTO: rc.conf

def _yes(value):
    """rc.subr's checkyesno: YES, TRUE, ON or 1, in any case."""
    return (value or "").lower() in ("yes", "true", "on", "1")


def read_rcconf():
    """rc.conf's values (the file dorc edits, KVM_RCCONF), read once; {} when there is none.
    Opened plainly: shconf.read_text waits for a file zfs-fuse may show missing for a moment,
    which rc.conf never is, and a host without one is common (a Linux host)."""
    path = paths.current().rcconf
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KvmError(f"{path}: {exc.strerror}") from None
    return read_values(path, text)[0]


class Autostart:
    """Which VMs of a root the host starts at boot: a per-VM rc.d script of ours (dorc) whose
    NAME_enable is on (on a systemd host: our unit with its wants link), or the host-wide rc.d/kvm with kvm_enable on and the VM in kvm_list."""

    def __init__(self, root, rcconf):
        self.root, self.rcconf, self.rcdir = root, rcconf, paths.current().rcdir
        self.listed = set(rcconf.get("kvm_list", "").split()) if self._host_wide() else set()

    def _host_wide(self):
        """rc.d/kvm is installed, enabled, and starts this root's VMs (kvm_root or its default)."""
        if not _yes(self.rcconf.get("kvm_enable")):
            return False
        try:
            text = (self.rcdir / "kvm").read_text(errors="replace")
        except OSError:
            return False
        default = re.search(r'^: \$\{kvm_root:="([^"]*)"\}', text, re.M)
        where = self.rcconf.get("kvm_root") or (default.group(1) if default else "")
        return rcd.MARKER + "(host-wide)" in text and where.rstrip("/") == str(self.root.path)

    def enabled(self, name):
        """True when the host starts VM `name` at boot. Only an enabled VM's script is read."""
        if name in self.listed:
            return True
        if systemd.in_use():  # a unit of ours, enabled by its wants link (no rc.conf on Linux)
            unit = rcd.our_script(name)
            return bool(unit and systemd.is_enabled(unit.path)
                        and str(self.root.path) in unit.path.read_text(errors="replace"))
        if not _yes(self.rcconf.get(f"{rcd.rc_name(name)}_enable")):
            return False
        script = rcd.our_script(name)
        if script is None:
            return False
        return script.shell_toolkit or str(self.root.path) in script.path.read_text(errors="replace")


# ------------------------------------------------------------------------ the rows

def scan(base):
    """[(name, folder, set.conf's stat)] of the VM folders under `base` (a folder holding the
    files set.conf and run, as vm.list_vms decides), by name; the stat is kept for the cache."""
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if not (entry.is_dir() and vmmod.NAME_RE.match(entry.name)):
            continue
        folder = f"{base}/{entry.name}"
        try:
            st = os.stat(f"{folder}/{shconf.CONF}")
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.path.isfile(f"{folder}/{vmmod.RUN_FILE}"):
            out.append((entry.name, folder, st))
    return out


def rows(root, now=None):
    """(rows, warnings) for every VM of the root, running ones first then by name; warnings are
    (VM name or None, text) for the CLI to show."""
    from kvm.manage import listcache
    now = time.time() if now is None else now
    warnings, disks, base = [], {}, str(root.vm_dir)
    try:
        auto = Autostart(root, read_rcconf())
    except KvmError as exc:
        warnings.append((None, f"rc.conf cannot be read, AUTO shows no: {exc}"))
        auto = Autostart(root, {})
    found, cache, fresh, leases = scan(base), listcache.load(), {}, {}
    out = [_row(rt, now) for rt in vmmod.runtimes([vmmod.Vm(root, name) for name, _, _ in found])]
    for row, (name, folder, st) in zip(out, found):
        conf, identity = f"{folder}/{shconf.CONF}", listcache.identity(st)
        entry = cache.get(conf)
        facts = entry[1] if entry and entry[0] == identity else conf_facts(folder)
        if listcache.cacheable(st, now):
            fresh[conf] = [identity, facts]
        row.cpu, row.memory, row.loader, disks[name], problems, guest, macs, (row.switch, row.vlan) = facts
        row.tpm, row.limits, row.pin, row.agent = guest
        row.addresses = addresses(macs, row.answer if row.agent else None, now, leases)
        row.auto = auto.enabled(name)
        if problems:
            warnings.append((name, f"{problems[0]} (shown as '-')"))
    listcache.save(cache, fresh, base + "/")
    sizes = disk_sizes([d for d in disks.values() if d])
    for row in out:
        row.disk = sizes.get(disks[row.name])
    out.sort(key=lambda r: (STATE_ORDER[r.state], r.name))
    return out, warnings


def _row(rt, now):
    """A row's run-time columns: pid and uptime while the hypervisor runs, VNC port too."""
    row = Row(rt.name, rt.state)
    row.answer = rt.agent   # the guest agent's last answer the supervisor recorded
    row.supervisor = rt.supervisor or None
    row.started = int(rt.started) or None
    if rt.bhyve:
        row.pid, row.vnc = rt.bhyve, rt.vnc_port or None
        row.uptime = max(0, int(now - rt.started)) if rt.started else None
    return row


# ------------------------------------------------------------------------ columns and cells

def columns(text, option="-o"):
    """The columns a `-o a,b` (or `-s a`) names, lower-cased; UsageError naming an unknown one."""
    names = [c.strip().lower() for c in text.split(",")]
    for name in names:
        if name not in COLUMNS:
            raise UsageError(f"{option}: unknown column '{name}' (columns: {','.join(COLUMNS)})")
    return names


def sort_rows(found, keys):
    """Sort by [(column, descending)], stably, the last key first so the first one wins. Numbers
    sort as numbers, states running first, and a row without the value comes last either way."""
    for column, descending in reversed(keys):
        have = [r for r in found if r.value(column) is not None]
        have.sort(key=lambda r: _sort_key(r, column), reverse=descending)
        found = have + [r for r in found if r.value(column) is None]
    return found


def _sort_key(row, column):
    value = row.value(column)
    if column == "state":
        return STATE_ORDER[value]
    return value if column in NUMERIC or column in ("auto", "agent") else str(value)


def cell(row, column, parsable=False):
    """The text of one cell: `-` for nothing; with parsable, numbers exact (bytes, seconds)."""
    value = row.value(column)
    if column in ("auto", "agent"):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if parsable or column not in ("memory", "disk", "uptime", "started"):
        return str(value)
    if column in ("memory", "disk"):
        return human_size(value)
    if column == "uptime":
        return uptime_text(value)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))  # started


def uptime_text(seconds):
    """As ps and vm-bhyve's list show it: 02:13:05 under a day, 3d04h from a day on."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def human_size(n):
    """Bytes as `zfs list` shows them: 512B, 128K, 1.50K, 12.5K, 136K (at most 5 characters
    when a fraction is needed; exact multiples of a unit print whole)."""
    if n is None:
        return "-"
    n = int(n)
    index = 0
    while index < 6 and n >= 1024 ** (index + 1):
        index += 1
    unit = "BKMGTPE"[index]
    if index == 0 or n % (1024 ** index) == 0:
        return f"{n // 1024 ** index}{unit}"
    value = n / 1024 ** index
    for places in (2, 1, 0):
        text = f"{value:.{places}f}{unit}"
        if len(text) <= 5:
            break
    return text


def as_json(row):
    """Every column of a row, numbers exact, and the supervisor's pid; pid and supervisor stay
    0 when none, as vmlist --json always gave them (scripts compare them to status's pid)."""
    out = {column: row.value(column) for column in COLUMNS}
    out.update(pid=row.pid or 0, supervisor=row.supervisor or 0, addresses=row.addresses)
    return out
