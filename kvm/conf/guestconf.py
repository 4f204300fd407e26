"""The set.conf keys of issue 22, each read into a typed value or refused (Invalid, the caller
names the key and the value): TPM, Limits, CPUPin, Agent. Pure: which host CPUs are online is
the launch's question (the platform's), asked by kvm/run/launch.py.

    TPM="swtpm"                    a software TPM 2.0 (swtpm) per VM, its state in VM_FOLDER/tpm
    TPM="passthru:/dev/tpm0"       the host's TPM given to the guest
    Limits="pcpu=50 rbps=100M wbps=100M riops=1000 wiops=1000 vmem=4G"   (vm-bhyve's names)
    CPUPin="0:2 1:3"               vCPU 0 on host CPU 2, vCPU 1 on host CPU 3
    Agent="yes"                    a guest-agent channel (org.qemu.guest_agent.0)
"""

import re

from kvm.host.record import record

TPM_DEVICE_RE = re.compile(r"/dev/tpm(rm)?[0-9]+\Z")
SIZE_RE = re.compile(r"([0-9]+)([KMGT]?)\Z", re.I)
SHIFTS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
# limit name -> (what it is, kind, lowest, highest): kind "size" takes K/M/G/T, "count" a whole number
LIMITS = {
    "pcpu": ("percent of one host CPU", "percent", 1, None),     # highest: 100 x the host's CPUs
    "rbps": ("disk bytes read per second", "size", 4 << 10, 1 << 40),
    "wbps": ("disk bytes written per second", "size", 4 << 10, 1 << 40),
    "riops": ("disk reads per second", "count", 10, 10_000_000),
    "wiops": ("disk writes per second", "count", 10, 10_000_000),
    "vmem": ("memory of the hypervisor process (bytes)", "size", 32 << 20, (1 << 64) - 1),
}
MAX_HOST_CPU = 1023   # bhyve's CPU_SETSIZE - 1 (sched_setaffinity takes as many on Linux)
TPM_DIR = "tpm"       # VM_FOLDER/tpm: swtpm's state, in the VM's dataset (snapshots, clones, vmsend carry it)
TPM_DIR_MODE = 0o700
AGENT_WORDS = {"yes": True, "1": True, "no": False, "0": False, "": False}


class Invalid(ValueError):
    """Why a value is wrong (the same class as config.Invalid: it subclasses this one)."""


@record(frozen=True)
class Tpm:
    """TPM: kind "swtpm" or "passthru" (path: the host's device)."""

    kind: str
    path: str = ""

    def text(self):
        return "swtpm" if self.kind == "swtpm" else f"passthru:{self.path}"


def tpm(text):
    """TPM's value: None (no TPM), or a Tpm."""
    if text in ("", "0", "no", "none"):
        return None
    if text == "swtpm":
        return Tpm("swtpm")
    kind, sep, path = text.partition(":")
    if kind == "passthru" and sep:
        if not TPM_DEVICE_RE.match(path):
            raise Invalid(f"names {path!r}, which is not a TPM device (like /dev/tpm0)")
        return Tpm("passthru", path)
    raise Invalid("is not swtpm or passthru:/dev/tpmN")


def size_value(text):
    """A size as rctl takes it: a whole number, then K, M, G or T (or none: bytes)."""
    m = SIZE_RE.match(text)
    if not m:
        return None
    return int(m.group(1)) << SHIFTS[m.group(2).upper()]


def limits(text, host_cpus, mem_bytes=None):
    """Limits' value: a tuple of (name, number) in the order written, each name once; sizes in
    bytes, pcpu in percent (at most 100 x host_cpus), vmem at least the guest's memory."""
    out, seen = [], set()
    for word in text.split():
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise Invalid(f"holds {word!r}, which is not NAME=VALUE")
        if name not in LIMITS:
            raise Invalid(f"holds the unknown limit {name!r} (limits: {', '.join(LIMITS)})")
        if name in seen:
            raise Invalid(f"sets {name} twice")
        seen.add(name)
        out.append((name, limit_value(name, value, host_cpus, mem_bytes)))
    return tuple(out)


def limit_value(name, value, host_cpus, mem_bytes):
    what, kind, low, high = LIMITS[name]
    if kind == "size":
        number = size_value(value)
        example = "a number with K, M, G or T"
    else:
        number = int(value) if re.fullmatch(r"[0-9]+", value) else None
        example = "a whole number"
    if number is None:
        raise Invalid(f"holds {name}={value!r}, which is not {example} ({what})")
    if kind == "percent":
        high = 100 * max(1, host_cpus)
    if not low <= number <= high:
        raise Invalid(f"holds {name}={value}, out of range ({shown(kind, low)}..{shown(kind, high)}: {what})")
    if name == "vmem" and mem_bytes and number < mem_bytes:
        raise Invalid(f"holds vmem={value}, below the guest's own memory (Mem): the VM could not start")
    return number


def shown(kind, number):
    """A limit's number as set.conf would write it: sizes with the largest whole unit."""
    if kind != "size" or number == 0:
        return str(number)
    for letter, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if number % (1 << shift) == 0:
            return f"{number >> shift}{letter}"
    return str(number)


def limits_text(pairs):
    """Limits as set.conf writes them (vminfo, vmlist)."""
    return " ".join(f"{name}={shown(LIMITS[name][1], number)}" for name, number in pairs)


def cpu_pin(text, cores):
    """CPUPin's value: a tuple of (vcpu, host cpu) in the order written; each vCPU below Cores and
    pinned once (bhyve ORs a second pin of a vCPU into a set; kvm keeps one host CPU per vCPU)."""
    out, seen = [], set()
    for word in text.split():
        m = re.fullmatch(r"([0-9]+):([0-9]+)", word)
        if not m:
            raise Invalid(f"holds {word!r}, which is not VCPU:HOSTCPU (like 0:2)")
        vcpu, host = int(m.group(1)), int(m.group(2))
        if vcpu >= cores:
            raise Invalid(f"pins vCPU {vcpu}, but the VM has {cores} (Cores): vCPUs are 0..{cores - 1}")
        if vcpu in seen:
            raise Invalid(f"pins vCPU {vcpu} twice")
        if host > MAX_HOST_CPU:
            raise Invalid(f"pins vCPU {vcpu} to host CPU {host}, past the highest a host may have ({MAX_HOST_CPU})")
        seen.add(vcpu)
        out.append((vcpu, host))
    return tuple(out)


def cpu_pin_text(pairs):
    return " ".join(f"{v}:{h}" for v, h in pairs)


def agent(text):
    """Agent's value: yes/1 or no/0 (or unset)."""
    if text not in AGENT_WORDS:
        raise Invalid("must be yes or no")
    return AGENT_WORDS[text]


def parse_cpu_list(text):
    """A Linux CPU list (/sys/devices/system/cpu/online: 0-3,5,7-8) -> a frozenset of numbers."""
    out = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return frozenset(out)


def offline_pins(pairs, online):
    """The line refusing a pin to a host CPU not in `online` (a set), or None."""
    for vcpu, host in pairs:
        if host not in online:
            have = ",".join(str(c) for c in sorted(online)) or "none"
            return (f"CPUPin pins vCPU {vcpu} to host CPU {host}, which does not exist or is offline "
                    f"(online: {have})")
    return None
