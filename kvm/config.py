"""set.conf <-> a typed, validated VmConfig.

set.conf is sh. `read_values` gives exactly what `/bin/sh` gives after `. ./set.conf`:
a fast pure-Python reader handles plain assignments (quotes, `$VAR`/`${VAR}`,
comments, backslashes); a file using anything else (commands, conditionals,
functions, `${VAR:-x}`...) is evaluated by `/bin/sh` with `set -u`, its own output
discarded, and the variables read back NUL-separated from `env -0`.

One deliberate difference from sh: a reference to a variable that was never set is
an error (sh silently gives ""), because in set.conf it is always a typo.
"""

import os
import re

from .errors import ConfigError

CONF = "set.conf"
KNOWN = {
    "VMrom": "loader: uefi, grub, or an absolute path",
    "Boot": "grub-bhyve root device",
    "Cores": "vCPUs", "Mem": "memory with unit", "VMoptions": "bhyve one-letter flags",
    "Disk": "main disk", "DiskDriver": "main disk emulation", "Devices": "extra devices",
    "VNC": "1 or wait", "wVNC": "VNC width", "hVNC": "VNC height", "Tablet": "0 drops the tablet",
    "COM": "1 = serial console", "ISO": "ISO image",
    # ours (documented in the README)
    "VNCaddr": "VNC listen address", "VNCpassword": "VNC password",
    "RestartOnFault": "1 = restart after a fault", "RestartMax": "restarts allowed in the window",
    "RestartWindow": "seconds of the restart window", "StopTimeout": "seconds for a graceful stop",
}
BHYVE_FLAGS = set("AaCDeHPSuWwxY")  # -h only prints help
DISK_DRIVERS = {"nvme", "virtio-blk", "ahci-hd", "ahci-cd", "ahci"}
EMULATIONS = {"hostbridge", "amd_hostbridge", "lpc", "ahci", "ahci-hd", "ahci-cd", "virtio-blk", "nvme",
              "virtio-net", "e1000", "virtio-rnd", "virtio-console", "virtio-9p", "virtio-scsi", "fbuf",
              "xhci", "hda", "uart", "passthru"}
NEEDS_SOURCE = {"ahci", "ahci-hd", "ahci-cd", "virtio-blk", "nvme", "virtio-net", "e1000",
                "virtio-9p", "virtio-scsi", "passthru", "virtio-console", "xhci"}
RESERVED_SLOTS = {0: "hostbridge", 1: "the main disk", 2: "the ISO", 29: "the VNC tablet",
                  30: "VNC (fbuf)", 31: "lpc"}
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MEM_RE = re.compile(r"^([0-9]+)([KkMmGgTt]?)\Z")
MIN_MEM = 32 * 1024 * 1024


class NeedsShell(Exception):
    """The file uses sh beyond plain assignments."""


# ------------------------------------------------------------------------ the fast reader

class Assignment:
    """One `NAME=value` statement: its value and where it stands in the text."""

    __slots__ = ("name", "value", "start", "end", "line", "alone")

    def __init__(self, name, value, start, end, line, alone=False):
        self.name, self.value, self.start, self.end, self.line = name, value, start, end, line
        self.alone = alone  # the only statement on its line(s)


class _Reader:
    SPECIAL = set(" \t\n;&|<>()`'\"\\$")

    def __init__(self, text):
        self.text, self.pos, self.values, self.assignments = text, 0, {}, []

    def line(self, pos=None):
        return self.text.count("\n", 0, self.pos if pos is None else pos) + 1

    def fail(self, message, pos=None):
        raise ConfigError(f"{CONF} line {self.line(pos)}: {message}")

    def peek(self, k=0):
        i = self.pos + k
        return self.text[i] if i < len(self.text) else ""

    def run(self):
        line_has = 0
        while self.pos < len(self.text):
            c = self.peek()
            if c in " \t":
                self.pos += 1
            elif c == "\\" and self.peek(1) == "\n":
                self.pos += 2
            elif c == "\n":
                self._close_line(line_has)
                line_has = 0
                self.pos += 1
            elif c == ";":
                self.pos += 1
            elif c == "#":
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.pos += 1
            else:
                self.assignment()
                line_has += 1
        self._close_line(line_has)
        return self.values

    def _close_line(self, count):
        if count == 1 and self.assignments:
            self.assignments[-1].alone = True

    def assignment(self):
        start = self.pos
        m = NAME_RE.match(self.text, self.pos)
        if not m or self.text[m.end():m.end() + 1] != "=":
            raise NeedsShell()
        name = m.group(0)
        self.pos = m.end() + 1
        if self.peek() == "~":
            raise NeedsShell()
        value = self.word()
        if self.peek() not in ("", " ", "\t", "\n", ";", "#"):
            raise NeedsShell()
        self.values[name] = value
        self.assignments.append(Assignment(name, value, start, self.pos, self.line(start)))

    def word(self):
        out = []
        while self.pos < len(self.text):
            c = self.peek()
            if c in " \t\n;":
                break
            if c in "&|<>()`":
                raise NeedsShell()
            if c == "'":
                out.append(self.single())
            elif c == '"':
                out.append(self.double())
            elif c == "\\":
                nxt = self.peek(1)
                if nxt == "":
                    self.pos += 1
                    out.append("\\")
                elif nxt == "\n":
                    self.pos += 2
                else:
                    out.append(nxt)
                    self.pos += 2
            elif c == "$":
                out.append(self.dollar())
            else:
                out.append(c)
                self.pos += 1
        return "".join(out)

    def single(self):
        start = self.pos
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            self.fail("unterminated single quote", start)
        self.pos = end + 1
        return self.text[start + 1:end]

    def double(self):
        start = self.pos
        self.pos += 1
        out = []
        while True:
            c = self.peek()
            if c == "":
                self.fail("unterminated double quote", start)
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "`":
                raise NeedsShell()
            if c == "\\":
                nxt = self.peek(1)
                if nxt in ('"', "\\", "$", "`"):
                    out.append(nxt)
                    self.pos += 2
                elif nxt == "\n":
                    self.pos += 2
                else:
                    out.append("\\")
                    self.pos += 1
            elif c == "$":
                out.append(self.dollar())
            else:
                out.append(c)
                self.pos += 1

    def dollar(self):
        start = self.pos
        nxt = self.peek(1)
        if nxt == "{":
            m = NAME_RE.match(self.text, self.pos + 2)
            if not m or self.text[m.end():m.end() + 1] != "}":
                raise NeedsShell()
            self.pos = m.end() + 1
            return self.lookup(m.group(0), start)
        m = NAME_RE.match(self.text, self.pos + 1)
        if m:
            self.pos = m.end()
            return self.lookup(m.group(0), start)
        if nxt in ("", " ", "\t", "\n", '"', ";"):
            self.pos += 1
            return "$"  # a lone dollar is literal in sh
        raise NeedsShell()

    def lookup(self, name, pos):
        if name not in self.values:
            self.fail(f"${name} is used but not defined before", pos)
        return self.values[name]


def parse_text(text):
    """Values of a plain set.conf; raises NeedsShell when sh is needed, ConfigError when broken."""
    return _Reader(text).run()


def assignments(text):
    """The plain assignments of a text, with positions (for editing)."""
    reader = _Reader(text)
    reader.run()
    return reader.assignments


def evaluate_with_sh(path, sh="/bin/sh"):
    """Values after sourcing `path` with sh (`set -u`); the file's own output is discarded."""
    from . import host
    script = 'set -a -u; . "$1" </dev/null >/dev/null || exit 97; exec env -0'
    env = {"PATH": "/bin:/usr/bin:/sbin:/usr/sbin"}
    before = _sh_baseline(sh, env)
    res = host.run([sh, "-c", script, "sh", str(path)], mutating=False, check=False, env=env)
    if res.status != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"sh exited {res.status}"
        raise ConfigError(f"{CONF}: {why.replace(str(path), CONF)}")
    values = {}
    for item in res.stdout.split("\0"):
        name, sep, value = item.partition("=")
        if sep and NAME_RE.fullmatch(name) and name not in before:
            values[name] = value
    return values


_baseline = {}


def _sh_baseline(sh, env):
    """Names sh itself puts in the environment (PWD, SHLVL...), to leave out of the values."""
    if sh not in _baseline:
        from . import host
        res = host.run([sh, "-c", "exec env -0"], mutating=False, check=False, env=env)
        _baseline[sh] = {item.partition("=")[0] for item in res.stdout.split("\0") if item} | {"_", "OLDPWD"}
    return _baseline[sh] - {"PATH"} | {"PATH"}


def read_values(path):
    """Values of a set.conf file as /bin/sh would give them."""
    try:
        text = open(path, encoding="utf-8", errors="surrogateescape").read()
    except FileNotFoundError:
        raise ConfigError(f"{CONF} not found ({path})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if "\0" in text:
        raise ConfigError(f"{CONF} holds a NUL byte: not a text file")
    try:
        return parse_text(text)
    except NeedsShell:
        return evaluate_with_sh(path)


# --------------------------------------------------------------------------- validation

class Device:
    """One Devices item: `slot,emulation[,conf]`."""

    __slots__ = ("slot", "emulation", "conf")

    def __init__(self, slot, emulation, conf):
        self.slot, self.emulation, self.conf = slot, emulation, conf

    def __eq__(self, other):
        return isinstance(other, Device) and self.arg() == other.arg()

    def __repr__(self):
        return f"Device({self.arg()!r})"

    def arg(self):
        """The text after bhyve's -s."""
        return ",".join(x for x in (self.slot, self.emulation, self.conf) if x)

    @property
    def source(self):
        """First conf field: the backend (tap, file, B/S/F...)."""
        return self.conf.split(",")[0] if self.conf else ""


class VmConfig:
    """A VM's validated settings (built only by validate()).

    name, vmdir; vmrom and loader ("uefi", "grub", or "" when VMrom is unset); boot;
    cores (int); mem (text) and mem_bytes; options; disk and iso (absolute paths or "");
    disk_driver; devices (tuple of Device); vnc ("", "on", "wait"); vnc_size ((w, h) or ());
    tablet, com (bool); vnc_addr, vnc_password; restart_on_fault, restart_max,
    restart_window, stop_timeout; variables (every set.conf value); warnings.
    """

    def __init__(self, **fields):
        fields.setdefault("variables", {})
        fields.setdefault("warnings", ())
        self.__dict__.update(fields)

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


def host_memory():
    """Physical memory of the host in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class _Checker:
    def __init__(self, name, values):
        self.name, self.values, self.warnings = name, values, []

    def get(self, key, default=""):
        return self.values.get(key, default)

    def bad(self, key, why):
        raise ConfigError(f"{CONF}: {key}={self.get(key)!r} {why}", vm=self.name)

    def integer(self, key, default, low, high):
        text = self.get(key) or str(default)
        if not text.isdigit():
            self.bad(key, "is not a whole number")
        value = int(text)
        if not low <= value <= high:
            self.bad(key, f"is out of range ({low}..{high})")
        return value

    def flag(self, key, allowed=("", "0", "1")):
        value = self.get(key)
        if value not in allowed:
            self.bad(key, "must be " + " or ".join(repr(a) for a in allowed if a))
        return value == "1"


def _path(vmdir, value):
    return value if value.startswith("/") else os.path.join(vmdir, value)


def validate(name, vmdir, values, cpus=None):
    """Build a VmConfig from set.conf values; raise ConfigError naming the VM and the value."""
    c = _Checker(name, values)
    for key in values:
        if key not in KNOWN:
            import difflib
            close = difflib.get_close_matches(key.lower(), [k.lower() for k in KNOWN], n=1, cutoff=0.8)
            if close:
                real = next(k for k in KNOWN if k.lower() == close[0])
                c.warnings.append(f"{CONF}: '{key}' is not a kvm setting; did you mean '{real}'?")
    vmrom = c.get("VMrom")
    kind = loader_kind(vmrom) if vmrom else ""
    if vmrom and not kind:
        c.bad("VMrom", "is not uefi, grub, or a path whose name contains uefi or grub")
    if vmrom and "/" in vmrom and not vmrom.startswith("/"):
        c.bad("VMrom", "must be uefi, grub or an absolute path")
    boot = c.get("Boot")
    if boot and not re.fullmatch(r"[A-Za-z0-9,()]+", boot):
        c.bad("Boot", "is not a grub device (like cd0 or hd0,msdos1)")
    if kind == "grub" and not boot:
        raise ConfigError(f"{CONF}: Boot is required with the grub loader (e.g. Boot=\"cd0\")", vm=name)
    cores = c.integer("Cores", 1, 1, 255)
    cpus = cpus or os.cpu_count() or 1
    if cores > cpus:
        c.warnings.append(f"Cores={cores} is more than the host's {cpus} CPUs")
    mem = c.get("Mem") or "1G"
    size = mem_bytes(mem)
    if size is None:
        c.bad("Mem", "is not a size (a number with K, M, G or T, e.g. 2G)")
    if size < MIN_MEM:
        c.bad("Mem", f"is too small (at least {MIN_MEM >> 20}M)")
    phys = host_memory()
    if phys and size > phys:
        c.warnings.append(f"Mem={mem} is more than the host's memory")
    options = c.get("VMoptions").lstrip("-")
    unknown = sorted(set(options) - BHYVE_FLAGS)
    if unknown:
        c.bad("VMoptions", f"has letters bhyve does not take as flags: {''.join(unknown)!r}")
    disk = c.get("Disk")
    driver = c.get("DiskDriver") or "nvme"
    if driver not in DISK_DRIVERS:
        c.bad("DiskDriver", f"is not a disk emulation ({', '.join(sorted(DISK_DRIVERS))})")
    for key in ("Disk", "ISO"):
        if "," in c.get(key):
            c.bad(key, "holds a comma, which bhyve would read as an option separator")
        if kind == "grub" and " " in c.get(key):
            c.bad(key, "holds a space, which grub-bhyve's device.map cannot take")
    vnc = c.get("VNC")
    if vnc not in ("", "0", "1", "wait"):
        c.bad("VNC", "must be 1, wait or 0")
    vnc = {"1": "on", "wait": "wait"}.get(vnc, "")
    if vnc and kind == "grub":
        c.bad("VNC", "cannot be used with the grub loader (grub uses the serial console)")
    vnc_size = _vnc_size(c)
    com = c.flag("COM")
    if kind == "grub":
        com = True
    addr = c.get("VNCaddr") or "127.0.0.1"
    if addr != "127.0.0.1":
        import ipaddress
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            c.bad("VNCaddr", "is not an IP address")
    password = c.get("VNCpassword")
    if "," in password:
        c.bad("VNCpassword", "cannot hold a comma")
    devices = parse_devices(name, c.get("Devices"), options)
    return VmConfig(
        name=name, vmdir=str(vmdir), vmrom=vmrom, loader=kind, boot=boot, cores=cores, mem=mem,
        mem_bytes=size, options=options, disk=_path(vmdir, disk) if disk else "", disk_driver=driver,
        devices=devices, vnc=vnc, vnc_size=vnc_size, tablet=c.get("Tablet") != "0", com=com,
        iso=_path(vmdir, c.get("ISO")) if c.get("ISO") else "", vnc_addr=addr, vnc_password=password,
        restart_on_fault=c.flag("RestartOnFault"), restart_max=c.integer("RestartMax", 3, 1, 1000),
        restart_window=c.integer("RestartWindow", 600, 1, 86400 * 7),
        stop_timeout=c.integer("StopTimeout", 60, 1, 3600),
        variables=dict(values), warnings=tuple(c.warnings))


def _vnc_size(c):
    w, h = c.get("wVNC"), c.get("hVNC")
    if not (w and h):
        return ()
    width = c.integer("wVNC", 1024, 640, 3840)
    height = c.integer("hVNC", 768, 480, 2160)
    return (width, height)


_SLOT_RE = re.compile(r"^([0-9]{1,2})(?::([0-7]))?\Z")


def parse_devices(name, text, options=""):
    """Devices="slot,emulation,conf ..." -> tuple of Device, refusing what bhyve would refuse."""
    devices, used = [], {}
    for item in text.split():
        parts = item.split(",", 2)
        if len(parts) < 2 or not parts[1]:
            raise ConfigError(f"{CONF}: Devices item '{item}' is not slot,emulation[,source]", vm=name)
        slot, emulation = parts[0], parts[1]
        conf = parts[2] if len(parts) > 2 else ""
        m = _SLOT_RE.match(slot)
        if not m:
            raise ConfigError(f"{CONF}: Devices item '{item}': slot '{slot}' is not a number (3-28)", vm=name)
        number = int(m.group(1))
        if number in RESERVED_SLOTS:
            raise ConfigError(f"{CONF}: Devices item '{item}': slot {number} is kept for "
                              f"{RESERVED_SLOTS[number]} (use 3-28)", vm=name)
        if not 3 <= number <= 28:
            raise ConfigError(f"{CONF}: Devices item '{item}': slot {number} is out of range (3-28)", vm=name)
        key = (number, int(m.group(2) or 0))
        if key in used:
            raise ConfigError(f"{CONF}: Devices items '{used[key]}' and '{item}' use the same slot", vm=name)
        used[key] = item
        if emulation not in EMULATIONS or emulation in ("hostbridge", "amd_hostbridge", "lpc", "fbuf"):
            import difflib
            near = difflib.get_close_matches(emulation, sorted(EMULATIONS), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{CONF}: Devices item '{item}': unknown device '{emulation}'{hint}", vm=name)
        if emulation in NEEDS_SOURCE and not conf:
            raise ConfigError(f"{CONF}: Devices item '{item}': {emulation} needs a source", vm=name)
        if emulation == "passthru":
            if not re.fullmatch(r"[0-9]+/[0-9]+/[0-9]+", conf.split(",")[0]):
                raise ConfigError(f"{CONF}: Devices item '{item}': passthru wants bus/slot/function "
                                  f"like 3/0/0", vm=name)
            if "S" not in options:
                raise ConfigError(f"{CONF}: Devices item '{item}': passthru needs S in VMoptions "
                                  f"(wired memory)", vm=name)
        devices.append(Device(slot, emulation, conf))
    return tuple(devices)


def load(name, vmdir, cpus=None):
    """Read and validate VMDIR/set.conf."""
    path = os.path.join(vmdir, CONF)
    try:
        values = read_values(path)
    except ConfigError as exc:
        exc.vm = name
        raise
    return validate(name, vmdir, values, cpus)


# ------------------------------------------------------------------------------ editing

def sh_quote(value):
    """A double-quoted sh word for value."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", value) + '"'


def _plain(text, name):
    try:
        found = [a for a in assignments(text) if a.name == name]
    except NeedsShell:
        found = None
    if found is None or any(not a.alone for a in found):
        # Fall back to whole lines `NAME=...` that are plain on their own.
        found = []
        offset = 0
        for number, line in enumerate(text.splitlines(keepends=True), 1):
            if re.match(rf"^\s*{name}=", line):
                try:
                    got = assignments(line)
                except NeedsShell:
                    raise ConfigError(f"{CONF} line {number}: cannot edit {name}: not a plain assignment")
                if len(got) != 1:
                    raise ConfigError(f"{CONF} line {number}: cannot edit {name}: not alone on its line")
                found.append(Assignment(name, got[0].value, offset + got[0].start, offset + got[0].end,
                                        number, True))
            offset += len(line)
    return found


def set_value(text, name, value):
    """Text with NAME set to value: the last plain assignment rewritten, or one appended."""
    found = _plain(text, name)
    new = f"{name}={sh_quote(value)}"
    if found:
        last = found[-1]
        return text[:last.start] + new + text[last.end:]
    if text and not text.endswith("\n"):
        text += "\n"
    return text + new + "\n"


def remove_value(text, name):
    """Text without any plain assignment of NAME (whole lines removed)."""
    found = _plain(text, name)
    for a in reversed(found):
        line_start = text.rfind("\n", 0, a.start) + 1
        line_end = text.find("\n", a.end)
        line_end = len(text) if line_end < 0 else line_end + 1
        rest = (text[line_start:a.start] + text[a.end:line_end]).strip()
        if rest and not rest.startswith("#"):
            text = text[:a.start] + text[a.end:]
        else:
            text = text[:line_start] + text[line_end:]
    return text
