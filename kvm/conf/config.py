"""set.conf -> a typed, validated VmConfig: one small checker per setting.

Reading the sh text is kvm/conf/shconf.py; editing it is kvm/conf/confedit.py (both re-exported
here). `load(..., evaluate=...)` is the one place that decides whether sh may evaluate
the file: only the supervisor's launch asks for it, after the files were found safe.
"""

import os
import re

from kvm.conf.cloudinit import seed_devices
from kvm.conf.confedit import (  # noqa: F401
    SECRET_MODE,
    SECRETS,
    holds_secret,
    mode_for,
    remove_value,
    set_value,
    sh_quote,
)
from kvm.conf import guestconf
from kvm.conf.devices import EMULATIONS, NEEDS_SOURCE, RESERVED_SLOTS, Device, nic_mac, parse_devices  # noqa: F401
from kvm.conf.shconf import (  # noqa: F401
    CONF,
    NAME_RE,
    Assignment,
    NeedsShell,
    Reading,
    assignments,
    check_owner,
    evaluate_text,
    evaluate_with_sh,
    parse_text,
    read_plain,
    read_text,
)
from kvm.conf.guestconf import Invalid
from kvm.conf.switchconf import parse_nics
from kvm.errors import ConfigError, KvmError
from kvm.host.lock import lstat_folder
from kvm.host.record import field, record

KNOWN = {
    "VMrom": "loader: uefi, grub, or an absolute path",
    "Boot": "grub-bhyve root device",
    "Cores": "vCPUs", "Mem": "memory with unit", "VMoptions": "bhyve one-letter flags",
    "Disk": "main disk", "DiskDriver": "main disk emulation", "Devices": "extra devices",
    "VNC": "1 or wait", "wVNC": "VNC width", "hVNC": "VNC height", "Tablet": "0 drops the tablet",
    "COM": "1 = serial console", "ISO": "ISO image", "CloudInit": "1 = attach seed.iso (cloud-init)",
    # ours (documented in the README)
    "VNCaddr": "VNC listen address", "VNCpassword": "VNC password",
    "RestartOnFault": "1 = restart after a fault", "RestartMax": "restarts allowed in the window",
    "RestartWindow": "seconds of the restart window", "StopTimeout": "seconds for a graceful stop",
    "AllowPath": "disks and ISOs allowed outside the VM folder",
    "Switch": "NICs on kvm switches: TAP=SWITCH[:VLAN] ...",
    "TPM": "swtpm or passthru:/dev/tpmN", "Limits": "resource limits (pcpu= rbps= wbps= riops= wiops= vmem=)",
    "CPUPin": "vCPU:hostCPU pins", "Agent": "yes = guest-agent channel",
    "Hotplug": "qemu: disks vmdisk may add while the VM runs (ports at slot 27)",
}
# names set.conf may not assign: the hooks' own variables (`. "$VMdir/run"` follows set.conf) and
# what changes which programs sh and the hooks run
RESERVED = ("PATH", "IFS", "ENV", "CDPATH", "VMname", "VMdir", "VMd", "VMexit", "VMreason")
BHYVE_FLAGS = set("AaCDeHPSuWwxY")  # -h only prints help
DISK_DRIVERS = {"nvme", "virtio-blk", "ahci-hd", "ahci-cd", "ahci"}
MEM_RE = re.compile(r"^([0-9]+)([KkMmGgTt]?)\Z")
MIN_MEM = 32 * 1024 * 1024
MAX_MEM = (1 << 64) - 1   # bhyve reads -m into 64 bits (expand_number(3): ERANGE beyond)
# whole-number settings: (default, lowest, highest)
RANGES = {"Cores": (1, 1, 255), "RestartMax": (3, 1, 1000), "RestartWindow": (600, 1, 86400 * 7),
          "StopTimeout": (60, 1, 3600), "Hotplug": (0, 0, 8), "wVNC": (1024, 640, 3840), "hVNC": (768, 480, 2160)}
SHARED_FOLDERS = ("iso", "images")   # ROOT's folders whose files every VM may use as disks and ISOs
ISO_MAGIC_AT = 32769  # ISO 9660's first volume descriptor (sector 16) names its standard here
ISO_MAGICS = (b"CD001", b"BEA01", b"NSR02", b"NSR03")  # ISO 9660, UDF


# Invalid: why a value is wrong; the caller names the setting and the value (one class for every checker)


@record(frozen=True)
class VmConfig:
    """A VM's validated settings (built only by validate())."""

    name: str
    vmdir: str
    vmrom: str = ""              # as written
    loader: str = ""             # "uefi", "grub", or "" when VMrom is unset
    boot: str = ""
    cores: int = 1
    mem: str = "1G"
    mem_bytes: int = 1 << 30
    options: str = ""
    disk: str = ""               # absolute path or ""
    disk_driver: str = "nvme"
    devices: tuple = ()          # of Device
    vnc: str = ""                # "", "on", "wait"
    vnc_size: tuple = ()         # (w, h) or ()
    tablet: bool = True
    com: bool = False
    iso: str = ""                # absolute path or ""
    vnc_addr: str = "127.0.0.1"
    vnc_password: str = ""
    restart_on_fault: bool = False
    restart_max: int = 3
    restart_window: int = 600
    stop_timeout: int = 60
    allow_paths: tuple = ()      # AllowPath: absolute paths (a trailing / names a folder)
    nics: tuple = ()             # Switch: switchconf.Nic (tap, switch, vlan) of the NICs kvm attaches
    tpm: object = None           # TPM: None, or a guestconf.Tpm (swtpm, passthru:PATH)
    limits: tuple = ()           # Limits: ((name, number), ...) in the order written
    cpu_pin: tuple = ()          # CPUPin: ((vcpu, host cpu), ...)
    agent: bool = False          # Agent=yes: the guest-agent channel
    hotplug: int = 0             # Hotplug: qemu's hot-plug ports for disks, at HOTPLUG_SLOT
    variables: dict = field(default_factory=dict, compare=False)  # every set.conf value
    warnings: tuple = ()
    unevaluated: dict = field(default_factory=dict, compare=False)  # key -> "line N not evaluated: why"
    not_evaluated: tuple = ()    # one line per statement the reader did not run (for vminfo)

    def __repr__(self):
        return f"VmConfig({self.name!r})"


def loader_kind(vmrom):
    """uefi/grub from VMrom's base name, lower-cased, as the shell toolkit decides."""
    base = os.path.basename(vmrom).lower()
    if "uefi" in base:
        return "uefi"
    if "grub" in base:
        return "grub"
    return ""


def mem_bytes(text):
    """bhyve's reading of -m: suffix K/M/G/T; a plain number < 1 MiB means MB, else bytes."""
    m = MEM_RE.match(text)
    if not m:
        return None
    number, unit = int(m.group(1)), m.group(2).upper()
    if unit:
        return number << {"K": 10, "M": 20, "G": 30, "T": 40}[unit]
    return number << 20 if number < (1 << 20) else number


# A size as admins type it (vmcreate --mem and --disk-size, vmset Mem=): a whole or decimal number,
# then K, M, G or T, alone or as KB/KiB ... (any case; binary units, as bhyve and truncate count).
TYPED_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:([KMGT])(?:I?B)?|(B))?\s*\Z", re.I)
UNIT_SHIFTS = (("T", 40), ("G", 30), ("M", 20), ("K", 10))
SIZE_EXAMPLES = "e.g. 2G, 512M, 0.5G, 2GB or 2GiB; a number alone is MiB"


def typed_size(text):
    """(bytes, text to write, how it was read or None) of a size as admins type it: the one rule
    for every command's sizes (Mem, --mem, --disk-size). What is written is what bhyve's -m, the
    shell toolkit and truncate take: a whole number with one unit letter. A text already so
    (2G, 512M, 2048m) is written as typed; any other is converted and says how it was read:
    2GB, 2GiB -> 2G; 0.5G -> 512M; a number alone is MiB as set.conf has always meant (bhyve's
    -m: below 1048576 MiB, from there bytes): 512 -> 512M. Invalid when it is no size."""
    m = MEM_RE.match(text or "")
    if m and m.group(2):
        return mem_bytes(text), text, None
    m = TYPED_SIZE_RE.match(text or "")
    if not m:
        raise Invalid(f"is not a size ({SIZE_EXAMPLES})")
    from fractions import Fraction
    number, unit, byte = Fraction(m.group(1)), (m.group(2) or "").upper(), m.group(3)
    if unit:
        size, why = number * (1 << dict(UNIT_SHIFTS)[unit]), ""
    elif byte or number >= (1 << 20):
        size, why = number, " (bytes)"
    else:
        size, why = number * (1 << 20), " (MiB: a number without a unit)"
    if size.denominator != 1 or size % 1024:
        raise Invalid("is not a whole number of KiB")
    size = int(size)
    written = "0M" if not size else next(f"{size >> shift}{letter}" for letter, shift in UNIT_SHIFTS
                                         if size % (1 << shift) == 0)
    return size, written, f"read as {written}{why}"


def host_memory():
    """Physical memory of the host in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


# --------------------------------------------------------------- value checkers (shared)
# Each takes the text of one setting and returns its typed value or raises Invalid; vmcreate
# uses the same ones for its flags and prompts.

def whole_number(key, text):
    """An ASCII whole number within RANGES[key] (Unicode digits are not numbers to sh)."""
    default, low, high = RANGES[key]
    text = text or str(default)
    if not re.fullmatch(r"[0-9]+", text):
        raise Invalid("is not a whole number")
    value = int(text)
    if not low <= value <= high:
        raise Invalid(f"is out of range ({low}..{high})")
    return value


def memory(text):
    """Mem's size in bytes (bhyve's rules: set.conf is read as bhyve reads -m), at least MIN_MEM."""
    size = mem_bytes(text)
    if size is None:
        try:
            written = typed_size(text)[1]
        except Invalid:
            raise Invalid("is not a size (a number with K, M, G or T, e.g. 2G)") from None
        raise Invalid(f"is not a size bhyve takes: write {written}")
    if size < MIN_MEM:
        raise Invalid(f"is too small (at least {MIN_MEM >> 20}M)")
    if size > MAX_MEM:
        raise Invalid("is more than bhyve can take (a 64-bit count of bytes: below 16384P)")
    return size


def typed_memory(text):
    """(bytes, text to write, how it was read or None) of a memory size as typed (typed_size),
    at least MIN_MEM."""
    size, written, how = typed_size(text)
    memory(written)
    return size, written, how


def typed_value(key, text):
    """(text to write, how it was read or None) of a value given for set.conf key `key` (vmset):
    a size as admins type it becomes what bhyve takes (Mem=2GB -> 2G); other keys as given."""
    if key == "Mem":
        _, written, how = typed_memory(text)
        return written, how
    return text, None


def loader(text):
    """VMrom's kind: uefi, grub, or an absolute path naming one."""
    kind = loader_kind(text)
    if not kind:
        raise Invalid("is not uefi, grub, or a path whose name contains uefi or grub")
    if "/" in text and not text.startswith("/"):
        raise Invalid("must be uefi, grub or an absolute path")
    return kind


def bhyve_options(text):
    """VMoptions without a leading dash; only bhyve's one-letter flags."""
    options = text.lstrip("-")
    unknown = sorted(set(options) - BHYVE_FLAGS)
    if unknown:
        raise Invalid(f"has letters bhyve does not take as flags: {''.join(unknown)!r}")
    return options


def disk_driver(text):
    if text not in DISK_DRIVERS:
        raise Invalid(f"is not a disk emulation ({', '.join(sorted(DISK_DRIVERS))})")
    return text


def one_line(text):
    """A value bhyve takes as one argument: no newline or other control character."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise Invalid("holds a control character (a newline?), which sh keeps but bhyve cannot take")
    return text


# ------------------------------------------------------------------ per-setting checkers

class _Context:
    """The values being checked, what earlier checkers decided, and the warnings."""

    def __init__(self, name, vmdir, values, cpus, startable=False, unevaluated=()):
        self.name, self.vmdir, self.values, self.cpus = name, vmdir, values, cpus
        self.kind, self.options, self.warnings = "", "", []
        self.startable, self.unevaluated = startable, unevaluated

    def get(self, key, default=""):
        return self.values.get(key, default)

    def bad(self, key, why):
        raise ConfigError(f"{CONF}: {key}={self.get(key)!r} {why}", vm=self.name)

    def check(self, key, checker, *args):
        try:
            return checker(*args, self.get(key))
        except Invalid as exc:
            self.bad(key, str(exc))

    def path(self, value):
        return value if value.startswith("/") else os.path.join(self.vmdir, value)


def _vmrom(c):
    vmrom = c.get("VMrom")
    if not vmrom and c.startable and "VMrom" not in c.unevaluated:
        raise ConfigError(f"{CONF}: VMrom is not set (uefi, grub or the absolute path of a loader): "
                          f"without it the VM cannot start", vm=c.name)
    if vmrom:
        c.check("VMrom", one_line)
        c.kind = c.check("VMrom", loader)
    return {"vmrom": vmrom, "loader": c.kind}


def _boot(c):
    boot = c.get("Boot")
    if boot and not re.fullmatch(r"[A-Za-z0-9,()]+", boot):
        c.bad("Boot", "is not a grub device (like cd0 or hd0,msdos1)")
    if c.kind == "grub" and not boot:
        raise ConfigError(f"{CONF}: Boot is required with the grub loader (e.g. Boot=\"cd0\")", vm=c.name)
    return {"boot": boot}


def _cores(c):
    cores = c.check("Cores", whole_number, "Cores")
    cpus = c.cpus or os.cpu_count() or 1
    if cores > cpus:
        c.warnings.append(f"Cores={cores} is more than the host's {cpus} CPUs")
    return {"cores": cores}


def _mem(c):
    mem = c.get("Mem") or "1G"
    size = c.check("Mem", memory) if c.get("Mem") else 1 << 30
    phys = host_memory()
    if phys and size > phys:
        c.warnings.append(f"Mem={mem} is more than the host's memory")
    return {"mem": mem, "mem_bytes": size}


def _options(c):
    c.options = c.check("VMoptions", bhyve_options)
    return {"options": c.options}


def _file(c, key):
    value = c.check(key, one_line)
    if "," in value:
        c.bad(key, "holds a comma, which bhyve would read as an option separator")
    if c.kind == "grub" and " " in value:
        c.bad(key, "holds a space, which grub-bhyve's device.map cannot take")
    return c.path(value) if value else ""


def _disk(c):
    driver = c.check("DiskDriver", disk_driver) if c.get("DiskDriver") else "nvme"
    return {"disk": _file(c, "Disk"), "disk_driver": driver}


def _iso(c):
    return {"iso": _file(c, "ISO")}


def _vnc(c):
    vnc = c.get("VNC")
    if vnc not in ("", "0", "1", "wait"):
        c.bad("VNC", "must be 1, wait or 0")
    vnc = {"1": "on", "wait": "wait"}.get(vnc, "")
    if vnc and c.kind == "grub":  # the shell kvm starts such a VM, without VNC: so do we, and say so
        c.warnings.append(f"VNC={c.get('VNC')} is ignored with the grub loader (its console is the serial one)")
        vnc = ""
    # each is checked when set; the resolution is used only when both are (as the shell kvm does)
    width = c.check("wVNC", whole_number, "wVNC") if c.get("wVNC") else None
    height = c.check("hVNC", whole_number, "hVNC") if c.get("hVNC") else None
    size = (width, height) if width and height else ()
    return {"vnc": vnc, "vnc_size": size, "tablet": c.get("Tablet") != "0"}


def _flag(c, key):
    value = c.get(key)
    if value not in ("", "0", "1"):
        c.bad(key, "must be '0' or '1'")
    return value == "1"


def _com(c):
    return {"com": _flag(c, "COM") or c.kind == "grub"}  # grub's console is the serial one


def _vnc_addr(c):
    addr = c.get("VNCaddr") or "127.0.0.1"
    if addr != "127.0.0.1":
        import ipaddress
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            c.bad("VNCaddr", "is not an IP address")
    return {"vnc_addr": addr}


def _vnc_password(c):
    password = c.check("VNCpassword", one_line)
    if "," in password:
        c.bad("VNCpassword", "cannot hold a comma")
    return {"vnc_password": password}


def _allow_path(c):
    entries = tuple(c.check("AllowPath", one_line).split())
    for entry in entries:
        if not entry.startswith("/"):
            c.bad("AllowPath", f"holds '{entry}', which is not an absolute path")
        if ".." in entry.split("/"):
            c.bad("AllowPath", f"holds '{entry}', whose '..' hides where it leads: name the path itself")
    return {"allow_paths": entries}


def _devices(c):
    devices = seed_devices(c, parse_devices(c.name, c.get("Devices"), c.options))
    return {"devices": devices, **_switch(c, devices)}


def _switch(c, devices):
    """Switch="TAP=SWITCH[:VLAN] ...": each TAP is the source of a NIC in Devices (kvm creates it at
    the start, puts it on the switch, removes it at the end)."""
    try:
        nics = parse_nics(c.get("Switch"))
    except ValueError as exc:
        c.bad("Switch", str(exc))
    taps = {d.source for d in devices if d.kind == "nic"}
    for nic in nics:
        if nic.tap not in taps:
            c.bad("Switch", f"names tap {nic.tap}, which no virtio-net or e1000 item of Devices uses")
    return {"nics": nics}


HOTPLUG_SLOT = "27"   # Hotplug's PCIe root ports (qemu): functions 0..N-1 of this slot


def _hotplug(c, fields):
    """Hotplug=N: N PCIe root ports at slot 27 (qemu hot-plugs disks into them; bhyve has no
    hot-plug and ignores it); a Devices item there is refused, as bhyve refuses a slot twice."""
    count = c.check("Hotplug", whole_number, "Hotplug")
    if count and fields.get("agent"):
        c.bad("Hotplug", f"needs slot {HOTPLUG_SLOT} for its hot-plug ports, which Agent=yes takes for the guest "
                         f"agent's channel: use one of them")
    if count:
        taken = [d for d in fields["devices"] if d.slot.split(":")[0] == HOTPLUG_SLOT]
        if taken:
            c.bad("Hotplug", f"needs slot {HOTPLUG_SLOT} for its hot-plug ports, which Devices item "
                             f"'{taken[0].arg()}' uses")
    return {"hotplug": count}


def _restart(c):
    return {"restart_on_fault": _flag(c, "RestartOnFault"),
            "restart_max": c.check("RestartMax", whole_number, "RestartMax"),
            "restart_window": c.check("RestartWindow", whole_number, "RestartWindow"),
            "stop_timeout": c.check("StopTimeout", whole_number, "StopTimeout")}


def reserved(key):
    """Why set.conf may not assign `key` (see RESERVED; LD_* too), or None."""
    if key in RESERVED or key.startswith("LD_"):
        return (f"{key} is the hooks' own (it would change which files they source or which programs "
                f"they run): set.conf may not assign it")
    return None


def _reserved(c):
    if c.startable:  # what kvm writes, and a launch: refused; readers show the VM as it is
        for key in c.values:
            why = reserved(key)
            if why:
                raise ConfigError(f"{CONF}: {why}", vm=c.name)
    return {}


def _guest(c, cores, mem):
    """TPM, Limits, CPUPin, Agent (kvm/conf/guestconf.py); the agent's channel takes slot AGENT_SLOT."""
    cpus = c.cpus or os.cpu_count() or 1
    return {"tpm": c.check("TPM", guestconf.tpm),
            "limits": c.check("Limits", lambda text: guestconf.limits(text, cpus, mem)),
            "cpu_pin": c.check("CPUPin", lambda text: guestconf.cpu_pin(text, cores)),
            "agent": c.check("Agent", guestconf.agent)}


AGENT_SLOT = "27"   # the guest agent's virtio channel (bhyve virtio-console, qemu virtio-serial)


def _agent_slot(c, fields):
    """Agent=yes takes slot AGENT_SLOT: a Devices item there is refused."""
    if not fields["agent"]:
        return
    taken = [d for d in fields["devices"] if d.slot.split(":")[0] == AGENT_SLOT]
    if taken:
        c.bad("Agent", f"needs slot {AGENT_SLOT} for the guest agent's channel, which Devices item "
                       f"'{taken[0].arg()}' uses")


# In order: later checkers use what earlier ones decided (the loader kind, the options).
CHECKERS = (_reserved, _vmrom, _boot, _cores, _mem, _options, _disk, _iso, _vnc, _com, _vnc_addr, _vnc_password,
            _allow_path, _devices, _restart)


def _near_misses(values):
    import difflib
    out = []
    lower = {k.lower(): k for k in KNOWN}
    for key in values:
        if key not in KNOWN:
            close = difflib.get_close_matches(key.lower(), list(lower), n=1, cutoff=0.8)
            if close:
                out.append(f"{CONF}: '{key}' is not a kvm setting; did you mean '{lower[close[0]]}'?")
    return out


def validate(name, vmdir, values, cpus=None, reading=None, *, startable=False):
    """Build a VmConfig from set.conf values; raise ConfigError naming the VM and the value.

    reading: the plain reader's Reading when some lines were not evaluated; their settings
    are checked at their default (or earlier) value and reported in `unevaluated`/warnings.
    startable: the values must be ones a VM can start from (what every writer of set.conf and a
    launch ask): the settings a start needs (VMrom; Boot with grub, always) must be there.
    Readers (vminfo, vmlist) leave it off, to show what is missing.
    """
    c = _Context(name, str(vmdir), values, cpus, startable, reading.unevaluated if reading else ())
    c.warnings.extend(_near_misses(values))
    fields = {}
    for checker in CHECKERS:
        fields.update(checker(c))
    fields.update(_guest(c, fields["cores"], fields["mem_bytes"]))
    _agent_slot(c, fields)
    fields.update(_hotplug(c, fields))
    unevaluated = dict(reading.unevaluated) if reading else {}
    notes = [f"{CONF}: {key} {note} (shown as kvm reads it without sh)" for key, note in unevaluated.items()]
    notes += [f"{CONF} {note}" for note in (reading.skipped if reading else ())]
    return VmConfig(name=name, vmdir=str(vmdir), **fields, variables=dict(values),
                    warnings=tuple(c.warnings), unevaluated=unevaluated, not_evaluated=tuple(notes))


# ------------------------------------------------------------ where disks and ISOs may lie

def media(cfg):
    """(setting as errors name it, path, 'disk' or 'cdrom') of every disk and ISO the VM opens."""
    out = [("Disk", cfg.disk, "disk")] if cfg.disk else []
    out += [("ISO", cfg.iso, "cdrom")] if cfg.iso else []
    for dev in cfg.devices:
        if dev.kind in ("disk", "cdrom") and dev.path:
            out.append((f"Devices item '{dev.arg()}'", os.path.join(cfg.vmdir, dev.path), dev.kind))
    return out


def under(path, folder):
    """path is folder or lies below it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def allowed(cfg, real):
    """'file' when AllowPath names the file `real` (resolved: an entry that is a link names where it
    leads), 'folder' when it names a folder holding it, else None. Entries are resolved too, so a
    link under an allowed folder leading out of it is not allowed by it."""
    for entry in cfg.allow_paths:
        if entry.endswith("/") or entry == "/":
            if under(real, os.path.realpath(entry)):
                return "folder"
        elif os.path.realpath(entry) == real:
            return "file"
    return None


def is_iso_image(path):
    """True for a regular file holding an ISO 9660 or UDF image, False for any other file, None
    when it cannot be read (vminfo run by a user)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        return None
    except OSError:
        return False
    try:
        import stat
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.pread(fd, 5, ISO_MAGIC_AT) in ISO_MAGICS
    except OSError:
        return False
    finally:
        os.close(fd)


def check_paths(cfg):
    """(refusals, warnings) about where the VM's disks and ISOs lie, one line each naming the
    setting and the path. Anywhere in the VM folder, ROOT/iso and ROOT/images is fine; another
    VM's file only when AllowPath names that very file (shared on purpose); elsewhere only what
    AllowPath names, except what the shell toolkit's own layout put there: an ISO image anywhere
    (its insert took any path) and a zvol as Disk, which are warned about. Paths are resolved:
    a link in the VM folder pointing out of it counts as outside; a path that does not exist is
    left to the launch's "not found". What the host itself uses
    (mounted, swap, a pool's vdev) is the launch's check (run/launch.py), not this one."""
    refused, warned = [], []
    vmdir = os.path.realpath(cfg.vmdir)
    root = os.path.dirname(os.path.dirname(vmdir))
    for key, path, kind in media(cfg):
        real = os.path.realpath(path)
        if path.startswith("/dev/zvol/") and under(path[len("/dev/zvol"):], vmdir):
            continue  # a zvol below the VM's own dataset (vmdisk add --zvol, vmcreate --disk-zvol)
        if under(real, vmdir) or not os.path.exists(real):
            continue  # a missing file is the launch's "not found"
        shown = f"{key}={path!r}" if key in ("Disk", "ISO") else key
        shown += f" (resolving to {real})" if real != os.path.normpath(path) else ""
        named = allowed(cfg, real)
        if under(real, os.path.join(root, "vm")):
            other = os.path.relpath(real, os.path.join(root, "vm")).split(os.sep)[0]
            if named != "file":
                refused.append(f"{shown} is a file of VM {other}: refusing to share it (a file shared on purpose "
                               f"is named in AllowPath)")
            continue
        if named or any(under(real, os.path.join(root, f)) for f in SHARED_FOLDERS):
            continue
        image = is_iso_image(real) if kind == "cdrom" else None
        if image or (kind == "disk" and path.startswith("/dev/zvol/")):
            warned.append(f"{shown} lies outside the VM folder and {root}/{'iso' if image else 'images'}: used as "
                          f"the shell toolkit did; name it in AllowPath to say it is meant")
        elif image is None and kind == "cdrom":
            warned.append(f"{shown} cannot be read by this user to tell whether it is an ISO image")
        else:
            what = "is no ISO 9660 or UDF image and " if kind == "cdrom" else ""
            refused.append(f"{shown} {what}lies outside the VM folder, {root}/iso and {root}/images: refusing it "
                           f"(a disk or ISO elsewhere must be named in AllowPath)")
    return refused, warned


def check_folder(folder):
    """The folder of a file sh will run must be a real folder of root's, writable by root only."""
    check_owner(folder, lstat_folder(folder, folder, "refusing to run its files"))


def read(path, *, evaluate):
    """The Reading of a set.conf file.

    evaluate=False never runs anything: what needs sh is left unevaluated. evaluate=True
    (the launch only) lets sh evaluate such a file, once the folder and the opened file
    are root's and writable by root only; sh reads the very text that was checked.
    """
    if evaluate:
        check_folder(os.path.dirname(os.path.abspath(path)))
    text = read_text(path, trusted=evaluate)
    if not evaluate:
        return read_plain(text)
    try:
        return Reading(parse_text(text))
    except NeedsShell:
        return Reading(evaluate_text(text))


def load(name, vmdir, cpus=None, *, evaluate, startable=None):
    """Read and validate VMDIR/set.conf (see read() for `evaluate`, validate() for `startable`,
    which the launch's read, evaluate, is by default)."""
    try:
        reading = read(os.path.join(vmdir, CONF), evaluate=evaluate)
    except KvmError as exc:
        exc.vm = name
        raise
    return validate(name, vmdir, reading.values, cpus, reading, startable=evaluate if startable is None else startable)


def has_secret(cfg):
    """The VmConfig holds a password (evaluated, or set in a line only sh evaluates)."""
    return bool(cfg.vnc_password) or any(key in cfg.unevaluated for key in SECRETS)


def file_mode(cfg, current=0o644):
    """The mode for a set.conf: as it was, but never readable by others when it holds a password."""
    return current & SECRET_MODE if has_secret(cfg) else current



def list_facts(values, unevaluated=()):
    """(cores, memory bytes, loader kind, Disk as written, problems) for vmlist: each key checked
    by VmConfig's own checker on its own, so that one bad value leaves the others shown; a value
    refused (or not evaluated without sh) is None and named in problems."""
    problems = []

    def checked(key, check, default):
        text = values.get(key) or default
        if key in unevaluated:
            problems.append(f"{key} is not evaluated without sh (vminfo tells more)")
            return None
        try:
            return check(text) if text else None
        except Invalid as exc:
            problems.append(f"{CONF}: {key}={text!r} {exc}")
            return None
    cores = checked("Cores", lambda t: whole_number("Cores", t), "1")
    mem = checked("Mem", memory, "1G")
    kind = checked("VMrom", loader, "")
    disk = "" if "Disk" in unevaluated else values.get("Disk") or ""
    return cores, mem, kind, disk, problems


def nic_macs(name, nics, devices):
    """[[switch, MAC]] of the NICs kvm puts on switches (Switch), the MAC as the guest has it."""
    by_tap = {d.source: d for d in devices if d.kind == "nic"}
    return [[n.switch, nic_mac(name, by_tap[n.tap])] for n in nics if n.tap in by_tap]


def switch_macs(name, values, unevaluated=()):
    """nic_macs from set.conf's values for vmlist ([] when Switch is unset, not evaluated or refused:
    vminfo explains it)."""
    if not values.get("Switch") or {"Switch", "Devices", "VMoptions"} & set(unevaluated):
        return []
    try:
        return nic_macs(name, parse_nics(values["Switch"]),
                        parse_devices(name, values.get("Devices") or "", values.get("VMoptions") or ""))
    except (ValueError, KvmError):
        return []


def guest_facts(values, unevaluated=()):
    """[tpm, limits, pin, agent] for vmlist's columns, as set.conf writes them (None when unset
    or refused: a refusal is vminfo's to explain, and vmlist's warning comes from list_facts)."""
    def checked(key, check):
        text = values.get(key) or ""
        if key in unevaluated or not text:
            return None
        try:
            return check(text)
        except Invalid:
            return None
    tpm = checked("TPM", guestconf.tpm)
    limits = checked("Limits", lambda t: guestconf.limits(t, os.cpu_count() or 1))
    pin = checked("CPUPin", lambda t: guestconf.cpu_pin(t, RANGES["Cores"][2]))
    agent = checked("Agent", guestconf.agent)
    return [tpm.text() if tpm else None, guestconf.limits_text(limits) if limits else None,
            guestconf.cpu_pin_text(pin) if pin else None, bool(agent)]


def switch_facts(values, unevaluated=()):
    """[switch, vlan] for vmlist's columns from the Switch key alone (no switch file is read): the
    switches of the NICs, one a NIC in Switch's order ("lan,dmz"), and their VLANs ("10,-": `-` for a
    NIC without one); None for a VM with no NIC on a switch (or none of them with a VLAN), or a
    Switch value refused (vminfo explains it)."""
    text = values.get("Switch") or ""
    if "Switch" in unevaluated or not text:
        return [None, None]
    try:
        nics = parse_nics(text)
    except ValueError:
        return [None, None]
    vlans = ",".join(str(n.vlan) if n.vlan else "-" for n in nics)
    return [",".join(n.switch for n in nics), vlans if any(n.vlan for n in nics) else None]
