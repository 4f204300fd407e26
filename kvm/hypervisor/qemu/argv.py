"""Pure: a VmConfig -> the qemu-system-x86_64 argv (q35), and a QMP SHUTDOWN reason -> exit reason.

The guest sees the same PCI layout as under bhyve: bhyve's slot N is qemu's `addr=N` on
q35's root bus pcie.0, where any PCI device may sit as an integrated endpoint. Slot 0 is
q35's host bridge and slot 31 its ICH9 LPC/SATA/SMBus functions, exactly where bhyve puts
hostbridge and lpc, so bhyve's 1-30 map one to one with no PCI bridge (a bridge would move
every device to bus 1 and change the guest's device names). Integrated endpoints cannot be
hot-plugged, which bhyve cannot do either. Slot `N:F` is `addr=N.F`; qemu, like bhyve,
needs function 0 of a multi-function slot.

The run files are the VM's run folder's `qmp` (QMP) and `console` (the COM1 socket): RUN_DIR/
ROOT_ID/NAME/ (kvm/host/runfiles.py).
`-action reboot=shutdown` makes a guest reset end the process (the supervisor runs postRun
and launches again, as with bhyve); the SHUTDOWN event's reason says why it ended, since
qemu exits 0 for a reset and a power off alike.
"""

from pathlib import Path

from kvm.conf.devices import default_mac
from kvm.errors import ConfigError
from kvm.host.record import record
from kvm.host.runfiles import AGENT, CONSOLE, CONTROL, QMP, TPM_SOCKET
from kvm.hypervisor.qemu import qmp

BINARY = "qemu-system-x86_64"
VARS_FILE = "OVMF_VARS.fd"   # the VM's own copy of OVMF's vars (bhyve's UEFI_VARS.fd has another size)
MIB = 1 << 20

# bhyve VMoptions letters without a qemu meaning: ignored, each said in the notes.
IGNORED_OPTIONS = {
    "A": "ACPI tables (qemu always provides them)", "a": "xAPIC mode", "C": "guest memory in core dumps",
    "D": "destroy on power off (qemu always ends)", "e": "exit on unhandled I/O", "H": "yield on HLT",
    "P": "exit on PAUSE", "W": "force MSI", "w": "ignore unimplemented MSRs", "x": "x2APIC mode",
    "Y": "no MPTable"}

# QMP SHUTDOWN reason -> our exit reason (the supervisor's exit table).
SHUTDOWN_REASONS = {
    qmp.GUEST_RESET: "reboot", qmp.HOST_RESET: "reboot", qmp.GUEST_SHUTDOWN: "poweroff",
    qmp.HOST_QUIT: "poweroff", qmp.HOST_SIGNAL: "poweroff", qmp.HOST_UI: "poweroff",
    qmp.GUEST_PANIC: "fault", qmp.HOST_ERROR: "error"}


# The run files of a VM, in its run folder (runfiles' kinds): its QMP socket (the supervisor's
# session), its COM1 socket, `ctl`, a second QMP socket for commands while the supervisor holds
# the first (vmdisk: hot-plug, block_resize; qemu serves one client per monitor), swtpm's and the
# guest agent's sockets.
SOCKETS = {"qmp": QMP, "console": CONSOLE, "control": CONTROL, "tpm": TPM_SOCKET, "agent": AGENT}
SOCKET_MAX = 107  # bytes of a unix socket's path (sun_path, less its NUL)
HOTPLUG_PORT = "hotplug{}"   # id of hot-plug port N (Hotplug=): a pcie-root-port at slot 27, function N
COM_ID = "com1"  # the chardev COM1 is on
AGENT_NAME = "org.qemu.guest_agent.0"   # the virtio-serial port name qemu-guest-agent looks for
AGENT_SLOT = 27   # config.AGENT_SLOT: the virtio-serial controller of the agent's port

# What one qemu launch runs and what the supervisor must do around it: argv; qmp, the QMP socket
# path; console, the COM1 socket path, when COM is on; vnc_password, to set through QMP
# (change-vnc-password) before `cont`; paused, started with -S (`cont` once the password is set /
# a VNC client came); wait_vnc, VNC=wait (`cont` on the VNC_CONNECTED event); notes, settings
# ignored on qemu, one line each; name, the VM's; log, the console.log qemu appends COM1's output
# to, or None. (A record: see kvm/host/record.py.)
@record(frozen=True)
class Plan:
    argv: list
    qmp: object
    console: object = None
    vnc_password: object = None
    paused: bool = False
    wait_vnc: bool = False
    notes: tuple = ()
    name: object = None
    log: object = None
    tpm: object = None       # the swtpm control socket qemu connects to (TPM=swtpm), else None
    agent: object = None     # the guest agent's socket (Agent=yes), else None
    cpu_pin: tuple = ()      # ((vcpu, host cpu), ...): pinned while paused, before `cont`
    limits: tuple = ()       # ((name, number), ...): the host applies them while paused


def run_files(run_folder):
    """(qmp socket, console socket, control socket) in a VM's run folder."""
    return tuple(str(Path(run_folder) / SOCKETS[what]) for what in ("qmp", "console", "control"))


def guest_files(run_folder):
    """(swtpm socket, agent socket) in a VM's run folder."""
    return str(Path(run_folder) / SOCKETS["tpm"]), str(Path(run_folder) / SOCKETS["agent"])


def process_name(name):
    """qemu's -name: the VM's name, and `qemu:NAME` as its process title (how a qemu of ours is
    told apart from any other, see backend.is_qemu_of)."""
    return f"{name},process=qemu:{name}"


def plan(cfg, *, sockets, code=None, accel="tcg", vnc_port=None, binary=BINARY, console_log=None, guest=None):
    """The launch plan of a validated config; sockets: (QMP socket, COM1 socket[, control socket])
    paths, in the
    VM's run folder (run_files); `code` is the OVMF code file (VMrom=uefi); console_log: where
    qemu appends all the guest prints on COM1 (also with nobody attached); guest: (swtpm
    socket, agent socket) paths (guest_files), needed with TPM=swtpm or Agent=yes."""
    if not cfg.loader:
        raise ConfigError("VMrom is not set in set.conf (uefi, grub or a loader path)", vm=cfg.name)
    qmp_socket, console, *control = map(str, sockets)
    notes = []
    argv = [binary, "-name", process_name(cfg.name), "-no-user-config", "-nodefaults",
            "-machine", "q35", "-accel", accel] + (["-cpu", "host"] if accel == "kvm" else [])
    argv += ["-smp", str(cfg.cores), "-m", mem_arg(cfg)] + option_args(cfg, notes)
    argv += ["-action", "reboot=shutdown", "-action", "panic=shutdown", "-device", "pvpanic"]
    argv += firmware_args(cfg, code) + disk_args(cfg) + iso_args(cfg) + com_args(cfg, console, console_log)
    tpm_socket, agent_socket = map(str, guest) if guest else (None, None)
    argv += vnc_args(cfg, vnc_port) + device_args(cfg) + hotplug_args(cfg) + tpm_args(cfg, tpm_socket) + \
        agent_args(cfg, agent_socket)
    argv += ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
    argv += ["-qmp", f"unix:{control[0]},server=on,wait=off"] if control else []
    # paused until `cont`: the VNC password set, a VNC client come, vCPUs pinned, limits applied
    paused = cfg.vnc == "wait" or bool(cfg.vnc and cfg.vnc_password) or bool(cfg.cpu_pin or cfg.limits)
    if paused:
        argv.append("-S")
    return Plan(argv=argv, qmp=qmp_socket, console=console if cfg.com else None,
                vnc_password=(cfg.vnc_password or None) if cfg.vnc else None, paused=paused,
                wait_vnc=cfg.vnc == "wait", notes=tuple(notes), name=cfg.name,
                log=str(console_log) if cfg.com and console_log else None,
                tpm=tpm_socket if cfg.tpm and cfg.tpm.kind == "swtpm" else None,
                agent=agent_socket if cfg.agent else None, cpu_pin=cfg.cpu_pin, limits=cfg.limits)


def tpm_args(cfg, socket):
    """TPM 2.0 on q35's CRB interface: swtpm's control socket (qemu's `emulator` backend), or the
    host's device (`passthrough`)."""
    if not cfg.tpm:
        return []
    if cfg.tpm.kind == "passthru":
        backend = f"passthrough,id=tpm0,path={_qemu_path(cfg.tpm.path)}"
        return ["-tpmdev", backend, "-device", "tpm-crb,tpmdev=tpm0"]
    if not socket:
        raise ConfigError("TPM=swtpm but no socket was given for swtpm", vm=cfg.name)
    return ["-chardev", f"socket,id=chrtpm,path={socket}", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-crb,tpmdev=tpm0"]


def agent_args(cfg, socket):
    """The guest agent's port: a virtio-serial controller at slot 27, its port named
    org.qemu.guest_agent.0 on a unix socket the host side (kvm) connects to."""
    if not cfg.agent:
        return []
    if not socket:
        raise ConfigError("Agent=yes but no socket was given for the guest agent", vm=cfg.name)
    return ["-chardev", f"socket,id=qga0,path={socket},server=on,wait=off",
            "-device", f"virtio-serial-pci,id=vser0,{pci(AGENT_SLOT)}",
            "-device", f"virtserialport,bus=vser0.0,chardev=qga0,name={AGENT_NAME}"]


def mem_arg(cfg):
    """-m in MiB when whole (the usual case), else in bytes (qemu rounds up to its page size)."""
    size = cfg.mem_bytes
    return f"{size // MIB}M" if size % MIB == 0 else f"{size}B"


def option_args(cfg, notes):
    """VMoptions: S -> locked memory, u -> UTC clock (else local time, as bhyve); others noted."""
    out = ["-overcommit", "mem-lock=on"] if "S" in cfg.options else []
    out += ["-rtc", "base=utc" if "u" in cfg.options else "base=localtime"]
    for letter in cfg.options:
        if letter in IGNORED_OPTIONS:
            notes.append(f"VMoptions letter {letter} ({IGNORED_OPTIONS[letter]}) means nothing on qemu: ignored")
    return out


def firmware_args(cfg, code):
    """uefi: OVMF code read-only (pflash 0) + the VM's vars copy (pflash 1); grub: the BIOS."""
    if cfg.loader == "grub":
        return []
    if not code:
        raise ConfigError("VMrom=uefi but no OVMF code file was found (apt-get install ovmf)", vm=cfg.name)
    vars_path = Path(cfg.vmdir) / VARS_FILE
    return ["-drive", f"if=pflash,unit=0,format=raw,readonly=on,file={code}",
            "-drive", f"if=pflash,unit=1,format=raw,file={vars_path}"]


def boot_first(cfg):
    """With the BIOS (VMrom=grub), which device boots: "cd" for Boot=cd..., else "hd"."""
    if cfg.loader != "grub":
        return None
    return "cd" if cfg.boot.startswith("cd") else "hd"


def _bootindex(cfg, kind):
    return ",bootindex=1" if boot_first(cfg) == kind else ""


def pci(slot):
    """bhyve's "N" or "N:F" -> qemu's bus/addr on pcie.0."""
    number, _, function = str(slot).partition(":")
    return f"bus=pcie.0,addr={int(number):#x}" + (f".{int(function)}" if function else "")


# Limits' disk names -> qemu's drive throttling (per disk: qemu throttles each drive itself, on any
# filesystem; a cgroup's io.max needs a block device, which a disk file on ZFS has not)
THROTTLE = {"rbps": "bps-read", "wbps": "bps-write", "riops": "iops-read", "wiops": "iops-write"}


def throttling(limits):
    """,throttling.X=N for Limits' rbps/wbps/riops/wiops."""
    return "".join(f",throttling.{THROTTLE[name]}={number}" for name, number in limits if name in THROTTLE)


def _drive(ident, path, *, cdrom=False, readonly=False, direct=False, limits=()):
    spec = f"if=none,id={ident},format=raw,file={path}"
    if cdrom:
        spec += ",media=cdrom,readonly=on"
    elif readonly:
        spec += ",readonly=on"
    if direct:
        spec += ",cache.direct=on"
    if not cdrom:
        spec += throttling(limits)
    return ["-drive", spec]


def _qemu_path(value):
    """A file name for qemu's key=value lists: a comma would be read as a separator."""
    return value.replace(",", ",,")


def disk_device(cfg, slot, kind, path, ident, *, readonly=False, direct=False, extra=""):
    """One disk of kind nvme / virtio-blk / ahci-hd / ahci-cd at a slot."""
    path = _qemu_path(path)
    where = pci(slot)
    if kind == "nvme":
        return _drive(ident, path, readonly=readonly, direct=direct, limits=cfg.limits) + [
            "-device", f"nvme,drive={ident},serial={ident},{where}{extra}"]
    if kind == "virtio-blk":
        return _drive(ident, path, readonly=readonly, direct=direct, limits=cfg.limits) + [
            "-device", f"virtio-blk-pci,drive={ident},{where}{extra}"]
    if kind in ("ahci-hd", "ahci-cd"):
        controller = f"ahci{str(slot).replace(':', '_')}"
        cd = kind == "ahci-cd"
        return ["-device", f"ahci,id={controller},{where}"] + _drive(
            ident, path, cdrom=cd, readonly=readonly, direct=direct, limits=cfg.limits) + [
            "-device", f"{'ide-cd' if cd else 'ide-hd'},drive={ident},bus={controller}.0{extra}"]
    raise ConfigError(f"DiskDriver={kind!r} cannot be mapped on qemu (use nvme, virtio-blk or ahci-hd)",
                      vm=cfg.name)


MAIN_DISK_ID = "disk0"


def drive_id(slot):
    """The id of the drive (and of its device) at a bhyve slot: disk0 for the main disk (slot 1),
    devN (devN_F for N:F) for a Devices item: what QMP's block_resize and device_add name."""
    slot = str(slot)
    return MAIN_DISK_ID if slot == "1" else "dev" + slot.replace(":", "_")


def disk_args(cfg):
    if not cfg.disk:
        return []
    return disk_device(cfg, 1, cfg.disk_driver, cfg.disk, MAIN_DISK_ID, extra=_bootindex(cfg, "hd"))


def iso_args(cfg):
    if not cfg.iso:
        return []
    return disk_device(cfg, 2, "ahci-cd", cfg.iso, "cd0", extra=_bootindex(cfg, "cd"))


def com_args(cfg, console, console_log=None):
    """COM1 on a unix socket; qemu serves it and keeps running when nobody is attached. With a
    log, qemu itself appends the guest's output to it (O_APPEND, so a truncation by the
    supervisor's rotation is seen at once): no relay process or thread has to stay up."""
    if not cfg.com:
        return []
    log = f",logfile={_qemu_path(str(console_log))},logappend=on" if console_log else ""
    return ["-chardev", f"socket,id={COM_ID},path={console},server=on,wait=off{log}", "-serial", f"chardev:{COM_ID}"]


def vnc_args(cfg, port):
    """VNC on VNCaddr:port (reserved as for bhyve), a VGA at slot 30 and the tablet at 29."""
    if not cfg.vnc:
        return ["-display", "none"]
    if port is None or port < 5900:
        raise ConfigError(f"VNC is on but no port >= 5900 was chosen (got {port})", vm=cfg.name)
    host = f"[{cfg.vnc_addr}]" if ":" in cfg.vnc_addr else cfg.vnc_addr
    vnc = f"{host}:{port - 5900}" + (",password=on" if cfg.vnc_password else "")
    vga = f"VGA,{pci(30)}"
    if cfg.vnc_size:
        vga += f",xres={cfg.vnc_size[0]},yres={cfg.vnc_size[1]}"
    out = ["-display", "none", "-vnc", vnc, "-device", vga]
    if cfg.tablet:
        out += ["-device", f"qemu-xhci,id=xhci,{pci(29)}", "-device", "usb-tablet,bus=xhci.0"]
    return out


def hotplug_args(cfg):
    """Hotplug=N: N PCIe root ports at slot 27, functions 0..N-1 (q35's root bus pcie.0 takes
    no hot-plug: a disk vmdisk adds while the VM runs goes behind a free port; at the next
    boot it sits at its own Devices slot like any other)."""
    from kvm.conf.config import HOTPLUG_SLOT
    out = []
    for n in range(cfg.hotplug):
        multi = ",multifunction=on" if n == 0 and cfg.hotplug > 1 else ""
        out += ["-device", f"pcie-root-port,id={HOTPLUG_PORT.format(n)},chassis={n + 1},"
                           f"{pci(f'{HOTPLUG_SLOT}:{n}')}{multi}"]
    return out


def hotplug_ports(count):
    """The ids of the hot-plug ports of a VM with Hotplug=count, in the order they are filled."""
    return [HOTPLUG_PORT.format(n) for n in range(count)]


def device_args(cfg):
    out = []
    for dev in cfg.devices:
        out += device(cfg, dev)
    return out


def device(cfg, dev):
    """One Devices item -> qemu arguments, or a ConfigError naming the item."""
    ident = drive_id(dev.slot)
    if dev.emulation in ("virtio-net", "e1000"):
        return nic_args(cfg, dev, ident)
    if dev.emulation == "virtio-rnd":
        return ["-object", f"rng-random,id={ident},filename=/dev/urandom",
                "-device", f"virtio-rng-pci,rng={ident},{pci(dev.slot)}"]
    if dev.emulation in ("ahci-hd", "ahci-cd", "virtio-blk", "nvme"):
        path, readonly, direct = _disk_conf(cfg, dev)
        return disk_device(cfg, dev.slot, dev.emulation, path, ident, readonly=readonly, direct=direct)
    if dev.emulation == "passthru":
        return ["-device", f"vfio-pci,host={host_pci_address(dev)},{pci(dev.slot)}"]
    raise _bad_item(cfg, dev, f"{dev.emulation} cannot be mapped on qemu")


def _bad_item(cfg, dev, why):
    return ConfigError(f"set.conf: Devices item '{dev.arg()}': {why}", vm=cfg.name)


def _disk_conf(cfg, dev):
    """bhyve's block options: path[,ro][,nocache]; any other option has no qemu mapping here."""
    path, *opts = dev.conf.split(",")
    unknown = [o for o in opts if o not in ("ro", "nocache")]
    if unknown:
        raise _bad_item(cfg, dev, f"option {unknown[0]!r} cannot be mapped on qemu")
    if not path.startswith("/"):
        path = str(Path(cfg.vmdir) / path)
    return path, "ro" in opts, "nocache" in opts


def bhyve_mac(name, slot):
    """The MAC bhyve gives a NIC without mac= (conf/devices.py default_mac). Without it every qemu
    NIC gets 52:54:00:12:34:56, so two VMs on one bridge collide."""
    return default_mac(name, slot)


def nic_args(cfg, dev, ident):
    """virtio-net / e1000 on a tap interface, with its mac= when given, else bhyve's."""
    tap, *opts = dev.conf.split(",")
    if not tap.startswith("tap"):
        raise _bad_item(cfg, dev, f"only tap interfaces can be mapped on qemu, not {tap!r}")
    model = "virtio-net-pci" if dev.emulation == "virtio-net" else "e1000"
    nic = f"{model},netdev={ident},{pci(dev.slot)}"
    for opt in opts:
        key, _, value = opt.partition("=")
        if key != "mac" or not value:
            raise _bad_item(cfg, dev, f"option {opt!r} cannot be mapped on qemu (only mac=)")
        nic += f",mac={value}"
    if ",mac=" not in nic:
        nic += f",mac={bhyve_mac(cfg.name, dev.slot)}"
    return ["-netdev", f"tap,id={ident},ifname={tap},script=no,downscript=no", "-device", nic]


def host_pci_address(dev):
    """bhyve's decimal bus/slot/function -> Linux's 0000:BB:SS.F."""
    bus, slot, function = (int(x) for x in dev.source.split("/"))
    return f"0000:{bus:02x}:{slot:02x}.{function:x}"


def classify(reason, returncode):
    """qemu's exit status and the SHUTDOWN event's reason -> reboot, poweroff, fault, error, signal, unknown.

    qemu exits 0 both for a guest reset (with -action reboot=shutdown) and a power off, so
    the reason decides; a non-zero status is qemu's own failure (bad argv, a file it cannot
    open), a negative one a signal it did not catch.
    """
    if returncode is not None and returncode < 0:
        return "signal"
    if returncode:
        return "error"
    return SHUTDOWN_REASONS.get(reason, "unknown")
