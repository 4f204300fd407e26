"""A strict simulator of the FreeBSD tools kvm calls (../../shared/spec/freebsd.md).

Each executable in bin/ calls main(tool). State lives in $KVM_SIM_DIR (interfaces,
modules, ports, PCI devices, calls.log, per-VM launch scripts) and in $KVM_VMM_DIR
(one JSON file per allocated VM, standing for /dev/vmm/NAME). Every call is appended
to calls.log as a JSON line. Arguments are checked as the real tools check them,
with their messages and exit codes; what a tool rejects, the simulator rejects.

Per-VM behaviour of bhyve: $KVM_SIM_DIR/script/NAME, one line per launch, e.g.
    reboot after=0.1        exit 0 (guest reboot) after 0.1 s
    poweroff | halt | triple | error | abort   exit 1 | 2 | 3 | 4 | SIGABRT
    run acpi=yes|no|ignore  run until a signal (default: run acpi=yes)
With acpi=yes SIGTERM is the power button (exit 1); acpi=ignore: the guest ignores
it; acpi=no: SIGTERM kills bhyve outright and the VM stays allocated.
"""

import fcntl
import json
import os
import re
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

SIM = Path(os.environ.get("KVM_SIM_DIR") or "/tmp/kvm-sim")
VMM = Path(os.environ.get("KVM_VMM_DIR") or SIM / "vmm")
DEFAULT_IFACES = {"lo0": {"type": "lo", "up": True, "members": []},
                  "em0": {"type": "em", "up": True, "members": []}}
# FreeBSD 15.0 by default; a test of 14 writes kern.osreldate=1403000 and drops member_ifaddrs
SYSCTL_DEFAULTS = {"kern.osreldate": "1500068", "net.link.bridge.member_ifaddrs": "0",
                   "net.inet.ip.forwarding": "0"}
DEFAULT_PCI = {"3:0:0": {"driver": "ppt0", "vendor": "Realtek Semiconductor Co., Ltd.",
                         "device": "RTL8111/8168/8211/8411 PCI Express Gigabit Ethernet Controller",
                         "class": "network", "subclass": "ethernet"}}


# ------------------------------------------------------------------------------ state

@contextmanager
def locked():
    SIM.mkdir(parents=True, exist_ok=True)
    with open(SIM / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def load(name, default):
    try:
        return json.loads((SIM / name).read_text())
    except (OSError, ValueError):
        return json.loads(json.dumps(default))


def save(name, data):
    tmp = SIM / f".{name}.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, SIM / name)


def record(tool, argv):
    SIM.mkdir(parents=True, exist_ok=True)
    with open(SIM / "calls.log", "a") as fh:
        fh.write(json.dumps({"tool": tool, "argv": argv, "pid": os.getpid(), "time": time.time()}) + "\n")


def vmm_get(name):
    try:
        return json.loads((VMM / name).read_text())
    except (OSError, ValueError):
        return None


def vmm_put(name, data):
    VMM.mkdir(parents=True, exist_ok=True)
    tmp = VMM / f".{name}.{os.getpid()}"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, VMM / name)


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not a running bhyve
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def die(msg, code):
    print(msg, file=sys.stderr)
    sys.exit(code)


def kld_loaded(mod):
    return mod in load("kld.json", ["vmm"])


# ------------------------------------------------------------------------------ bhyve

BHYVE_FLAGS = set("AaCDeHhPSuWwxY")
BHYVE_ARGS = set("cklmopsUG")
EMUL = {"hostbridge", "amd_hostbridge", "lpc", "ahci", "ahci-hd", "ahci-cd", "virtio-blk", "nvme",
        "virtio-net", "e1000", "virtio-rnd", "virtio-console", "virtio-9p", "virtio-scsi", "fbuf",
        "xhci", "hda", "uart", "passthru"}
BLOCK = {"ahci-hd", "ahci-cd", "virtio-blk", "nvme"}
BLOCK_OPTS = {"nocache", "direct", "ro", "nodelete"}
USAGE = ("Usage: bhyve [-AaCDeHhPSuWwxY]\n       [-c [[cpus=]numcpus][,sockets=n][,cores=n][,threads=n]]\n"
         "       [-k config_file] [-l lpc] [-m mem] [-o var=value]\n"
         "       [-p vcpu:hostcpu] [-s pci] [-U uuid] vmname")


def getopt(argv, flags, witharg, usage_code=1, usage=USAGE):
    opts, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        j = 1
        while j < len(a):
            c = a[j]
            if c in witharg:
                val = a[j + 1:] if j + 1 < len(a) else (argv[i + 1] if i + 1 < len(argv) else None)
                if val is None:
                    die(f"option requires an argument -- {c}\n{usage}", usage_code)
                if j + 1 >= len(a):
                    i += 1
                opts.append((c, val))
                break
            if c in flags:
                opts.append((c, None))
                j += 1
                continue
            die(f"illegal option -- {c}\n{usage}", usage_code)
        i += 1
    return opts, argv[i:]


def parse_mem(text):
    m = re.fullmatch(r"([0-9]+)([kKmMgGtT]?)", text)
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2).upper()
    if unit:
        size = n << {"K": 10, "M": 20, "G": 30, "T": 40}[unit]
        return size if size < (1 << 64) else None   # expand_number(3): ERANGE past 64 bits
    return n << 20 if n < (1 << 20) else min(n, (1 << 64) - 1)   # strtoul: ULONG_MAX on overflow


def parse_cpus(text):
    fields = {}
    for i, part in enumerate(text.split(",")):
        k, sep, v = part.partition("=")
        if not sep:
            if i != 0:
                return None
            k, v = "cpus", k
        if k not in ("cpus", "sockets", "cores", "threads") or not v.isdigit() or int(v) < 1:
            return None
        fields[k] = int(v)
    topo = fields.get("sockets", 1) * fields.get("cores", 1) * fields.get("threads", 1)
    cpus = fields.get("cpus", topo)
    if "cpus" in fields and any(k in fields for k in ("sockets", "cores", "threads")) and cpus != topo:
        die(f"Invalid CPU topology: cpus={cpus} does not match sockets*cores*threads={topo}", 4)
    if "cpus" not in fields:
        cpus = topo
    return cpus


def parse_slot(text):
    parts = text.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        return None
    nums = [int(p) for p in parts]
    if len(nums) == 1:
        bus, slot, func = 0, nums[0], 0
    elif len(nums) == 2:
        bus, slot, func = 0, nums[0], nums[1]
    else:
        bus, slot, func = nums
    if bus > 255 or slot > 31 or func > 7:
        return None
    return bus, slot, func


def check_block(conf, name):
    path, *opts = conf.split(",")
    if not path:
        die(f"{name}: missing backing file", 4)
    if not os.path.exists(path):
        die(f"Could not open backing file: {path}: No such file or directory", 4)
    for o in opts:
        if o in BLOCK_OPTS or re.fullmatch(r"sectorsize=[0-9]+(/[0-9]+)?", o):
            continue
        die(f"Invalid device option \"{o}\"", 4)


def check_net(conf, emul, name, taps_in_use):
    backend, *opts = conf.split(",")
    if not backend:
        die(f"{emul}: missing backend", 4)
    ifaces = load("ifaces.json", DEFAULT_IFACES)
    if backend.startswith("netgraph"):
        pass
    elif backend.startswith(("tap", "vmnet")):
        if backend not in ifaces:
            if re.fullmatch(r"(tap|vmnet)[0-9]+", backend):
                ifaces[backend] = {"type": backend.rstrip("0123456789"), "up": False, "members": []}
                save("ifaces.json", ifaces)  # opening /dev/tapN clones it
            else:
                die(f"open of tap device /dev/{backend} failed", 4)
        if backend in taps_in_use:
            die(f"open of tap device /dev/{backend} failed: Device busy", 4)
    else:
        die(f"unknown net backend: {backend}", 4)
    for o in opts:
        k, _, v = o.partition("=")
        if k == "mac":
            m = re.fullmatch(r"([0-9a-fA-F]{1,2}:){5}[0-9a-fA-F]{1,2}", v)
            octets = [int(x, 16) for x in v.split(":")] if m else None
            if not octets or octets[0] & 1 or not any(octets):
                die(f"Invalid MAC address {v}", 4)
        elif k == "mtu" and emul == "virtio-net" and v.isdigit():
            pass
        else:
            die(f"Invalid {emul} option \"{o}\"", 4)
    return backend


def check_fbuf(conf, running_ports):
    port, w, h = 5900, 1024, 768
    for o in conf.split(",") if conf else []:
        k, _, v = o.partition("=")
        if k == "tcp":
            _, _, p = v.rpartition(":")
            if not p.isdigit():
                die(f"Invalid fbuf option \"{o}\"", 4)
            port = int(p)
        elif k in ("w", "h") and v.isdigit():
            w, h = (int(v), h) if k == "w" else (w, int(v))
        elif k in ("wait",) and not v:
            pass
        elif k in ("password", "vga", "rfb"):
            pass
        else:
            die(f"Invalid fbuf option \"{o}\"", 4)
    if not (640 <= w <= 3840 and 480 <= h <= 2160):
        die(f"fbuf: invalid resolution {w}x{h}", 4)
    if port in running_ports:
        die("bind: Address already in use", 4)
    return port


# What this "binary" has, as FreeBSD's bhyve tells it: `-l help` lists `tpm` from 14.0 on
# (passthrough), and the swtpm emulation (14.2) names itself in the binary. The simulated binary
# is bin/bhyve: its `# features:` line says what it has (a test copies it with fewer to play an
# older bhyve); kvm probes it as it probes the real one, and the simulator obeys the same line.
LPC_HELP = ["bootrom", "com1", "com2", "com3", "com4", "tpm", "pc-testdev"]


def features():
    try:
        text = Path(sys.argv[0]).read_text(errors="replace")
    except OSError:
        return set()
    m = re.search(r"^# features:(.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


def check_tpm(conf, lpcs, value):
    """-l tpm,TYPE,PATH[,opts] (pci_lpc.c lpc_device_parse, tpm_device.c): a missing type or
    path is exit 4 at parse time; an emulation the binary lacks, a device that cannot be opened
    or a swtpm socket nobody listens on fail the TPM's init (exit 4)."""
    if "tpm-passthru" not in features():
        die(f"bhyve: invalid lpc device configuration '{value}'", 64)
    kind, sep, rest = conf.partition(",")
    if not conf:
        die(f'invalid tpm type "{value}"', 4)
    path = rest.split(",")[0]
    if not sep or not path and "," not in rest:
        die(f'invalid tpm path "{value}"', 4)
    if kind not in ("passthru",) + (("swtpm",) if "tpm-swtpm" in features() else ()):
        die(f"tpm_device_create: unknown emulation {kind}\nFailed to init TPM device", 4)
    if kind == "passthru" and not os.path.exists(path):
        die(f"tpm_passthru_init: unable to open {path}\nFailed to init TPM device", 4)
    if kind == "swtpm":
        import socket
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            die(f'tpm_swtpm_init: unable to connect to tpm socket "{path}"\nFailed to init TPM device', 4)
        finally:
            sock.close()
    if "tpm" in lpcs:
        die(f"bhyve: invalid lpc device configuration '{value}'", 64)
    lpcs["tpm"] = conf


def check_pin(value, pins):
    """-p VCPU:HOSTCPU (bhyverun.c pincpu_parse: sscanf "%d:%d", vcpu >= 0, hostcpu below
    CPU_SETSIZE, 1024 on FreeBSD 14); anything else: "invalid vcpu pinning configuration", 64."""
    m = re.match(r"\s*([+-]?[0-9]+):\s*([+-]?[0-9]+)", value)
    if not m:
        print(f"invalid format: {value}", file=sys.stderr)
        die(f"bhyve: invalid vcpu pinning configuration '{value}'", 64)
    vcpu, pcpu = int(m.group(1)), int(m.group(2))
    if vcpu < 0:
        print(f"invalid vcpu '{vcpu}'", file=sys.stderr)
        die(f"bhyve: invalid vcpu pinning configuration '{value}'", 64)
    if not 0 <= pcpu < 1024:
        print(f"hostcpu '{pcpu}' outside valid range from 0 to 1023", file=sys.stderr)
        die(f"bhyve: invalid vcpu pinning configuration '{value}'", 64)
    pins.setdefault(vcpu, []).append(pcpu)


def check_lpc(value, lpcs):
    dev, _, conf = value.partition(",")
    dev_l = dev.lower()
    if value and "help".startswith(value):   # strncmp(optarg, "help", strlen(optarg))
        print("\n".join(LPC_HELP if "tpm-passthru" in features() else [d for d in LPC_HELP if d != "tpm"]))
        sys.exit(0)
    if dev_l == "tpm":
        check_tpm(conf, lpcs, value)
        return
    if re.fullmatch(r"com[1-4]", dev_l):
        if conf == "stdio":
            pass
        elif re.fullmatch(r"/dev/nmdm.+A|.*/nmdm.+A", conf):
            if not kld_loaded("nmdm"):
                die(f"Unable to initialize backend '{conf}' for LPC device {dev}", 4)
        else:
            die(f"Unable to initialize backend '{conf}' for LPC device {dev}", 4)
    elif dev_l == "bootrom":
        rom, _, varfile = conf.partition(",")
        if not rom or not os.path.isfile(rom):
            die(f"bootrom: could not open {rom}", 4)
        if varfile and not os.path.isfile(varfile):
            die(f"bootrom: could not open vars file {varfile}", 4)
        lpcs["bootrom"] = rom
    else:
        die(f"Invalid LPC device \"{dev}\"", 64)
    if dev_l in lpcs and dev_l != "bootrom":
        die(f"LPC device {dev} already configured", 4)
    lpcs[dev_l] = conf


def read_config_file(path, config, nodes):
    """bhyve -k FILE: `path=value` lines into the config tree (bhyve_parse_simple_config_file):
    '#' lines and empty ones skipped; a line without '=' or with an empty value is an error (4);
    a file that cannot be opened too. Each value makes its node (pci.B.S.F for a device's)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().split("\n")
    except OSError as exc:
        die(f"bhyve: Failed to open configuration file {path}: {exc.strerror}", 4)
    for number, line in enumerate(lines[:-1] if lines and lines[-1] == "" else lines, 1):
        if line.startswith("#") or line == "":
            continue
        key, sep, value = line.partition("=")
        if not sep or not value:
            die(f"bhyve: {path} line {number}: invalid config option '{line}'", 4)
        config[key] = value
        m = re.fullmatch(r"pci\.(\d+)\.(\d+)\.(\d+)\.[^.]+", key)
        if m:
            nodes.add(tuple(int(x) for x in m.groups()))


def bhyve(argv):
    opts, rest = getopt(argv, BHYVE_FLAGS, BHYVE_ARGS)
    flags = {c for c, v in opts if v is None}
    if "h" in flags:
        print(USAGE, file=sys.stderr)
        sys.exit(0)
    for c, v in opts:   # `-l help` prints and exits as getopt meets it, before the vmname is wanted
        if c == "l" and v and "help".startswith(v):
            check_lpc(v, {})
    if len(rest) != 1:
        die(USAGE, 1)
    name = rest[0]
    mem, cpus, slots, lpcs, fbuf_port, taps, pins = 256 << 20, 1, {}, {}, None, [], {}
    others = [vmm_get(p.name) for p in VMM.glob("*")] if VMM.is_dir() else []
    running_ports = {o.get("vnc_port") for o in others if o and alive(o.get("pid"))}
    taps_in_use = {t for o in others if o and alive(o.get("pid")) for t in o.get("taps", [])}
    has_passthru = False
    config, nodes = {}, set()   # -k values; the pci.B.S.F nodes they made
    for c, v in opts:
        if c == "k":
            read_config_file(v, config, nodes)
        elif c == "m":
            mem = parse_mem(v)
            if mem is None:
                die(f"invalid memsize '{v}'", 64)
        elif c == "c":
            cpus = parse_cpus(v)
            if cpus is None:
                die(f"invalid cpu topology '{v}'", 64)
        elif c == "l":
            check_lpc(v, lpcs)
        elif c == "p":
            check_pin(v, pins)
        elif c == "s":
            slot_text, _, rest_s = v.partition(",")
            emul, _, conf = rest_s.partition(",")
            bsf = parse_slot(slot_text)
            if bsf is None or not emul:
                die("Invalid PCI slot info field \"%s\"" % v, 4)
            if emul not in EMUL:
                die(f"pci slot {slot_text}: unknown device \"{emul}\"", 4)
            if bsf in slots or bsf in nodes:  # a node -k made first: occupied too (pci_parse_slot)
                die(f"pci slot {bsf[0]}:{bsf[1]}:{bsf[2]} already occupied!", 4)
            slots[bsf] = emul
            if emul in BLOCK:
                check_block(conf, emul)
            elif emul == "ahci":
                for port in conf.split(","):
                    kind, _, p = port.partition(":")
                    if kind not in ("hd", "cd"):
                        die(f"Invalid ahci port \"{port}\"", 4)
                    check_block(p, "ahci")
            elif emul in ("virtio-net", "e1000"):
                taps.append(check_net(conf, emul, name, taps_in_use))
            elif emul == "fbuf":
                if fbuf_port is not None:
                    die("fbuf: only one frame buffer device is allowed", 4)
                fbuf_port = check_fbuf(conf, running_ports)
            elif emul == "lpc":
                if bsf[0] != 0 or "lpc" in slots.values() and list(slots.values()).count("lpc") > 1:
                    die("pci_lpc: LPC bridge can only be on bus 0 and there can be only one", 4)
            elif emul == "passthru":
                has_passthru = True
                sel = conf.split(",")[0]
                key = sel.replace("/", ":")
                if key not in load("pci.json", DEFAULT_PCI):
                    die(f"passthru: device {sel} not found or not attached to ppt", 4)
            elif emul == "xhci" and conf != "tablet":
                die(f"xhci: unknown device \"{conf}\"", 4)
    if has_passthru and "S" not in flags:
        die("passthru requires guest memory to be wired (-S)", 4)
    if "bootrom" in lpcs and "lpc" not in slots.values():
        die("bootrom: no lpc device, the boot ROM cannot be loaded", 4)
    password = config.get("pci.0.30.0.password") if slots.get((0, 30, 0)) == "fbuf" else None
    for vcpu, hosts in pins.items():
        bad = [h for h in hosts if h not in online_cpus()]
        if bad:   # pthread_setaffinity_np of the vCPU's thread fails: bhyverun.c asserts (SIGABRT)
            print("Assertion failed: (error == 0), function fbsdrun_start_thread, file bhyverun.c.",
                  file=sys.stderr, flush=True)
            signal.signal(signal.SIGABRT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGABRT)
    allocate(name, mem, 4, {"pid": os.getpid(), "cpus": cpus, "vnc_port": fbuf_port, "taps": taps,
                            "vnc_password": password, "pins": {str(k): v for k, v in pins.items()},
                            "tpm": lpcs.get("tpm")})
    set_title(name)
    run_guest(name, "D" in flags)


def online_cpus():
    """The simulated host's CPUs (hw.ncpu): $KVM_SIM_DIR/ncpu, by default this machine's count."""
    try:
        return range(int((SIM / "ncpu").read_text()))
    except (OSError, ValueError):
        return range(os.cpu_count() or 1)


def set_title(name):
    """bhyve's setproctitle(3) once the VM exists: ps then shows `bhyve: NAME` and nothing else."""
    try:
        import setproctitle
    except ImportError:
        die("simulator: the setproctitle package is missing (pip install -e '.[test]')", 99)
    setproctitle.setproctitle(f"bhyve: {name}")


def allocate(name, mem, code, fields):
    """Allocate /dev/vmm/NAME as bhyve and grub-bhyve do; fail with `code` as they would."""
    if len(name) > 31:
        die(f"vm_create: {name}: File name too long", code)
    with locked():
        state = vmm_get(name)
        if state and alive(state.get("pid")):
            die(f"vm_create: {name}: File exists (a bhyve already runs this VM)", code)
        if state and state.get("mem") not in (None, mem):
            die("Unable to setup memory (Invalid argument)", code)
        vmm_put(name, {"mem": mem, **fields})


def next_action(name):
    with locked():
        script = SIM / "script" / name
        lines = script.read_text().splitlines() if script.exists() else []
        lines = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
        first = lines[0] if lines else "run acpi=yes"
        if lines:
            script.write_text("".join(ln + "\n" for ln in lines[1:]))
    words = first.split()
    args = dict(w.split("=", 1) for w in words[1:])
    return words[0], args


def finish(name, code, destroy_on_poweroff):
    with locked():
        state = vmm_get(name)
        if state is not None:
            if destroy_on_poweroff and code == 1:
                (VMM / name).unlink(missing_ok=True)
            else:
                state["pid"] = 0
                state["vnc_port"] = None
                state["taps"] = []
                vmm_put(name, state)
    sys.exit(code)


def run_guest(name, destroy_flag):
    action, args = next_action(name)
    after = float(args.get("after", "0.05"))
    acpi = args.get("acpi", "yes")
    codes = {"reboot": 0, "poweroff": 1, "halt": 2, "triple": 3, "error": 4}

    def on_term(signum, frame):
        record("bhyve-acpi", [name, acpi])  # the power button reached the guest
        if acpi == "yes":
            finish(name, 1, destroy_flag)
        # acpi=ignore: the guest ignores the button

    signal.signal(signal.SIGUSR1, lambda s, f: finish(name, 1, destroy_flag))  # force-poweroff, destroy
    signal.signal(signal.SIGUSR2, lambda s, f: finish(name, 0, destroy_flag))  # force-reset
    if acpi == "no":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # before ACPI: SIGTERM kills outright
    else:
        signal.signal(signal.SIGTERM, on_term)
    # Recorded once the guest answers signals, so a test that waits for this record
    # never races the simulator's own start-up (which the supervisor cannot see).
    record("bhyve-guest", [name, action, json.dumps(args)])
    if action in codes:
        time.sleep(after)
        finish(name, codes[action], destroy_flag)
    if action == "abort":
        time.sleep(after)
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGABRT)
    if action != "run":
        die(f"simulator: unknown script action {action}", 99)
    while True:
        signal.pause()


# ---------------------------------------------------------------------------- bhyvectl

def bhyvectl(argv):
    vm, ops = None, []
    for a in argv:
        if a.startswith("--vm="):
            vm = a[5:]
        elif a in ("--create", "--destroy", "--force-reset", "--force-poweroff", "--get-stats"):
            ops.append(a)
        else:
            die(f"bhyvectl: unrecognized option '{a}'\nUsage: bhyvectl --vm=<vmname> [--create] [--destroy] ...", 1)
    if not vm:
        die("bhyvectl: --vm=<vmname> is required", 1)
    with locked():
        state = vmm_get(vm)
        if "--create" in ops:
            if state is not None:
                die(f"vm_create: {vm}: File exists", 1)
            vmm_put(vm, {"mem": None, "pid": 0})
            return
        if state is None:
            die(f"vm_open: {vm} could not be opened: No such file or directory", 1)
        pid = state.get("pid") if alive(state.get("pid")) else 0
        for op in ops:
            if op == "--destroy":
                (VMM / vm).unlink(missing_ok=True)
                if pid:
                    os.kill(pid, signal.SIGUSR1)  # on 14 the running bhyve exits 1
            elif op == "--force-poweroff" and pid:
                os.kill(pid, signal.SIGUSR1)
            elif op == "--force-reset" and pid:
                os.kill(pid, signal.SIGUSR2)
            elif op == "--get-stats":
                print(f"vcpu0 stats for {vm}")


# -------------------------------------------------------------------------- grub-bhyve

def grub_bhyve(argv):
    opts, rest = getopt(argv, set("enSv"), set("rmdgcM"), usage_code=1,
                        usage="Usage: grub-bhyve [-r root] [-m devmap] [-d dir] [-g grub.cfg] [-c cons-dev] "
                              "[-M mem] [-e] [-n] [-S] [-v] vmname")
    if len(rest) != 1:
        die("grub-bhyve: missing vmname", 1)
    name = rest[0]
    o = dict(opts)
    mem = parse_mem(o.get("M", "256M"))
    if mem is None:
        die(f"grub-bhyve: invalid memory size {o.get('M')}", 1)
    if "m" in o:
        try:
            lines = Path(o["m"]).read_text().splitlines()
        except OSError:
            die(f"grub-bhyve: could not open device.map {o['m']}", 1)
        for ln in lines:
            if not ln.strip() or ln.lstrip().startswith("#"):
                continue
            m = re.fullmatch(r"\((hd[0-9]+|cd[0-9]+)\)\s+(\S+)", ln.strip())
            if not m:
                die(f"grub-bhyve: invalid line in device.map: {ln}", 1)
            if not os.path.exists(m.group(2)):
                die(f"grub-bhyve: {m.group(2)}: No such file or directory", 1)
    if "c" in o and "nmdm" in o["c"] and not kld_loaded("nmdm"):
        die(f"grub-bhyve: could not open console {o['c']}", 1)
    allocate(name, mem, 1, {"pid": 0, "grub": True})


# ----------------------------------------------------------------------------- ifconfig

IF_CAPS = ("txcsum", "rxcsum", "tso", "lro", "txcsum6", "rxcsum6", "vlanhwtso", "vlanhwtag", "vlanhwfilter",
           "tso4", "tso6")
CLONERS = ("tap", "bridge", "vmnet", "epair", "lagg", "vlan")
DOT1Q_VID_MIN, DOT1Q_VID_MAX = 1, 4094  # sys/net/ethernet.h; 0 and 4095 are reserved


def if_text(name, i):
    """What `ifconfig NAME` prints (the lines kvm reads: flags, mtu, ether, inet, bridge flags,
    members with their port line; ifbridge.c's bridge_status)."""
    flags = ("UP," if i.get("up") else "") + "BROADCAST,RUNNING,SIMPLEX,MULTICAST"
    lines = [f"{name}: flags=8843<{flags}> metric 0 mtu {i.get('mtu', 1500)}"]
    if i.get("caps") is not None and i["type"] not in ("bridge", "lo"):
        lines.append(f"\toptions=0<{','.join(c.upper() for c in i['caps'])}>")
    lines.append(f"\tether {i.get('mac') or '58:9c:fc:10:%02x:%02x' % (len(name), sum(map(ord, name)) % 256)}")
    for addr in i.get("addrs", []):
        ip, _, prefix = addr.partition("/")
        mask = (0xffffffff << (32 - int(prefix))) & 0xffffffff
        lines.append(f"\tinet {ip} netmask 0x{mask:08x}")
    if i["type"] == "bridge":
        lines.append("\tid 58:9c:fc:10:ff:01 priority 32768 hellotime 2 fwddelay 15")
        lines.append(f"\tbridge flags={1 if i.get('vlanfilter') else 0}<{'VLANFILTER' if i.get('vlanfilter') else ''}>")
        for port, m in enumerate(i.get("members", []), 1):
            o = i.get("member_opts", {}).get(m, {})
            mflags = "LEARNING,DISCOVER,AUTOEDGE,AUTOPTP" + (",PRIVATE" if o.get("private") else "")
            lines.append(f"\tmember: {m} flags=143<{mflags}>")
            port_line = f"\t        port {port} priority 128 path cost 2000000"
            if o.get("untagged"):
                port_line += f" untagged {o['untagged']}"
            if o.get("tagged"):
                port_line += " tagged " + vlan_set_text(o["tagged"])
            lines.append(port_line)
    if i["type"] == "vlan":
        lines.append(f"\tvlan: {i.get('vlan')} vlanproto: 802.1q vlanpcp: 0 parent interface: {i.get('vlandev')}")
    lines.append(f"\tgroups: {i['type']}")
    return "\n".join(lines)


def vlan_set_text(vlans):
    out, vlans = [], sorted(set(vlans))
    k = 0
    while k < len(vlans):
        last = k
        while last + 1 < len(vlans) and vlans[last + 1] == vlans[last] + 1:
            last += 1
        out.append(str(vlans[k]) if last == k else f"{vlans[k]}-{vlans[last]}")
        k = last + 1
    return ",".join(out)


def parse_vlan_set(text):
    """ifbridge.c parse_vlans: none, all (1-4094), or a comma list of N and N-M within 1-4094."""
    if text == "none":
        return []
    if text == "all":
        return list(range(DOT1Q_VID_MIN, DOT1Q_VID_MAX + 1))
    out = []
    for token in text.split(","):
        first, dash, last = token.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            return None
        a, b = int(first), int(last) if dash else int(first)
        if not DOT1Q_VID_MIN <= a <= DOT1Q_VID_MAX or not DOT1Q_VID_MIN <= b <= DOT1Q_VID_MAX or b < a:
            return None
        out += list(range(a, b + 1))
    return out


def vlan_id(text):
    """ifbridge.c get_vlan_id: strtoul base 0, within 1-4094."""
    try:
        value = int(text, 0)
    except ValueError:
        return None
    return value if DOT1Q_VID_MIN <= value <= DOT1Q_VID_MAX else None


def bridge_of(ifs, name):
    for n, i in ifs.items():
        if name in i.get("members", []):
            return n
    return None


def member_ifaddrs():
    """net.link.bridge.member_ifaddrs (absent on 14: members may carry addresses)."""
    value = load("sysctl.json", SYSCTL_DEFAULTS).get("net.link.bridge.member_ifaddrs")
    return 1 if value is None else int(value)


def ifconfig(argv):
    with locked():
        ifs = load("ifaces.json", DEFAULT_IFACES)
        if argv == ["-l"]:
            print(" ".join(ifs))
            return
        if argv == ["-a"]:
            for n, i in ifs.items():
                print(if_text(n, i))
            return
        if len(argv) == 2 and argv[0] == "-g":
            for n, i in ifs.items():
                if i["type"] == argv[1]:
                    print(n)
            return
        if not argv or argv[0].startswith("-"):
            die("usage: ifconfig [-L] [-C] [-g groupname] interface address_family ...", 1)
        name, ops = argv[0], argv[1:]
        if ops[:1] == ["create"]:
            base = name.rstrip("0123456789")
            parent = name.partition(".")[0] if "." in name else None
            if parent is not None:
                # vlan(4)'s cloner takes PARENT.TAG names (if_vlan.c vlan_clone_match_ethervid)
                tag = vlan_id(name.partition(".")[2]) if name.partition(".")[2].isdigit() else None
                if parent not in ifs or tag is None:
                    die(f"ifconfig: SIOCIFCREATE2 ({name}): Invalid argument", 1)
                base = "vlan"
            elif base not in CLONERS:
                die(f"ifconfig: SIOCIFCREATE2 ({name}): Invalid argument", 1)
            if name == base:
                n = 0
                while f"{base}{n}" in ifs:
                    n += 1
                name = f"{base}{n}"
            if name in ifs:
                die(f"ifconfig: SIOCIFCREATE2 ({name}): File exists", 1)
            ifs[name] = {"type": base, "up": False, "members": [], "mtu": 1500, "addrs": []}
            if parent is not None:
                ifs[name].update(vlan=int(name.partition(".")[2]), vlandev=parent)
            ops = ops[1:]
            created = name
        else:
            created = None
            if name not in ifs:
                die(f"ifconfig: interface {name} does not exist", 1)

        def fail(msg):
            save("ifaces.json", ifs)  # what earlier operations of the line did stays done, as ifconfig's
            die(msg, 1)

        def arg(k):
            if k >= len(ops):
                fail(f"ifconfig: {ops[k - 1]}: missing argument")
            return ops[k]

        def bridge_only(op):
            if ifs[name]["type"] != "bridge":
                fail(f"ifconfig: {op}: Invalid argument")

        def member(op, m):
            if m not in ifs[name].get("members", []):
                fail(f"ifconfig: {op} {m}: No such file or directory")
            return ifs[name].setdefault("member_opts", {}).setdefault(m, {})

        def need_vlanfilter(what):
            if not ifs[name].get("vlanfilter"):
                fail(f"ifconfig: {what}: Invalid argument (extended error VLAN filtering not enabled)")

        i = 0
        while i < len(ops):
            op = ops[i]
            me = ifs[name]
            if op == "name":
                new = ops[i + 1] if i + 1 < len(ops) else ""
                if not new or len(new) > 15:
                    fail("ifconfig: ioctl SIOCSIFNAME (set name): Invalid argument")
                if new in ifs:
                    fail("ifconfig: ioctl SIOCSIFNAME (set name): File exists")
                ifs[new] = ifs.pop(name)
                name = created = new
                i += 2
            elif op == "addm":
                bridge_only(op)
                m = arg(i + 1)
                i += 2
                pvid, tagged = 0, None
                while i < len(ops) and ops[i] in ("untagged", "tagged"):
                    if ops[i] == "untagged":
                        pvid = vlan_id(arg(i + 1))
                        if pvid is None:
                            fail(f"ifconfig: invalid VLAN identifier: {ops[i + 1]}")
                    else:
                        tagged = parse_vlan_set(arg(i + 1))
                        if tagged is None:
                            fail(f"ifconfig: invalid vlan set: {ops[i + 1]}")
                    i += 2
                if m not in ifs:
                    fail(f"ifconfig: BRDGADD {m}: No such file or directory")
                if m in me["members"]:
                    fail(f"ifconfig: BRDGADD {m}: File exists")
                if bridge_of(ifs, m) or ifs[m]["type"] == "bridge":
                    fail(f"ifconfig: BRDGADD {m}: Device busy")
                if ifs[m].get("addrs") and member_ifaddrs() == 0:
                    # FreeBSD 15: a member may not carry an IP address (bridge(4), member_ifaddrs)
                    fail(f"ifconfig: BRDGADD {m}: Invalid argument")
                if me["members"]:
                    ifs[m]["mtu"] = me.get("mtu", 1500)  # later members are set to the bridge's MTU
                else:
                    me["mtu"] = ifs[m].get("mtu", 1500)  # the first member's MTU becomes the bridge's
                me["members"].append(m)
                opts = me.setdefault("member_opts", {}).setdefault(m, {})
                if pvid:
                    need_vlanfilter(f"BRDGSIFPVID {m} {pvid}")
                    opts["untagged"] = pvid
                if tagged is not None:
                    need_vlanfilter(f"BRDGSIFVLANSET {m}")
                    opts["tagged"] = tagged
            elif op == "deletem":
                bridge_only(op)
                m = arg(i + 1)
                if m not in ifs:
                    fail(f"ifconfig: BRDGDEL {m}: No such file or directory")
                if m not in me["members"]:
                    fail(f"ifconfig: BRDGDEL {m}: Invalid argument")
                me["members"].remove(m)
                me.get("member_opts", {}).pop(m, None)
                i += 2
            elif op in ("vlanfilter", "-vlanfilter"):
                bridge_only(op)
                me["vlanfilter"] = op == "vlanfilter"
                i += 1
            elif op in ("ifuntagged", "-ifuntagged", "iftagged", "+iftagged", "-iftagged", "private", "-private"):
                bridge_only(op)
                m = arg(i + 1)
                if op in ("-ifuntagged", "private", "-private"):
                    opts = member(op, m)
                    if op == "-ifuntagged":
                        opts["untagged"] = 0
                    else:
                        opts["private"] = op == "private"
                    i += 2
                    continue
                value = arg(i + 2)
                if op == "ifuntagged":
                    pvid = vlan_id(value)
                    if pvid is None:
                        fail(f"ifconfig: invalid VLAN identifier: {value}")
                    opts = member(f"BRDGSIFPVID {value}", m)
                    need_vlanfilter(f"BRDGSIFPVID {value}")
                    opts["untagged"] = pvid
                else:
                    vlans = parse_vlan_set(value)
                    if vlans is None:
                        fail(f"ifconfig: invalid vlan set: {value}")
                    opts = member(f"BRDGSIFVLANSET {value}", m)
                    need_vlanfilter(f"BRDGSIFVLANSET {value}")
                    have = set(opts.get("tagged", []))
                    opts["tagged"] = sorted(vlans if op == "iftagged" else
                                            have | set(vlans) if op == "+iftagged" else have - set(vlans))
                i += 3
            elif op == "mtu":
                value = arg(i + 1)
                if not value.isdigit() or not 72 <= int(value) <= 65535:
                    fail("ifconfig: ioctl SIOCSIFMTU (set mtu): Invalid argument")
                me["mtu"] = int(value)
                if me["type"] == "bridge":
                    for m in me["members"]:
                        ifs[m]["mtu"] = int(value)  # a bridge's MTU is its members' (bridge(4))
                i += 2
            elif op in ("vlan", "vlandev"):
                value = arg(i + 1)
                if me["type"] != "vlan":
                    fail(f"ifconfig: {op}: Invalid argument")
                if op == "vlan" and (vlan_id(value) is None or vlan_id(value) != me.get("vlan", vlan_id(value))):
                    fail(f"ifconfig: SIOCSETVLAN: Invalid argument")
                if op == "vlandev" and (value not in ifs or value != me.get("vlandev", value)):
                    fail(f"ifconfig: SIOCSETVLAN: Invalid argument")
                me[op] = vlan_id(value) if op == "vlan" else value
                i += 2
            elif op.lstrip("-") in IF_CAPS:
                caps = set(me.get("caps", ["txcsum", "rxcsum", "tso", "lro"] if me["type"] not in ("tap", "bridge")
                                  else []))
                (caps.discard if op.startswith("-") else caps.add)(op.lstrip("-"))
                me["caps"] = sorted(caps)
                i += 1
            elif op in ("up", "down"):
                me["up"] = op == "up"
                i += 1
            elif op == "destroy":
                ifs.pop(name)
                for other in ifs.values():
                    if name in other.get("members", []):
                        other["members"].remove(name)
                        other.get("member_opts", {}).pop(name, None)
                i += 1
            elif op in ("inet", "inet6"):
                value = arg(i + 1)
                step = 3 if i + 2 < len(ops) and ops[i + 2] in ("netmask", "prefixlen") else 2
                if op == "inet":
                    if not re.fullmatch(r"\d+\.\d+\.\d+\.\d+/\d+", value):
                        fail(f"ifconfig: {value}: bad value")
                    if bridge_of(ifs, name) and member_ifaddrs() == 0:
                        fail("ifconfig: ioctl (SIOCAIFADDR): Invalid argument")
                    if i + 2 < len(ops) and ops[i + 2] in ("-alias", "delete"):
                        if value not in me.get("addrs", []):
                            fail("ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address")
                        me["addrs"].remove(value)
                        step = 3
                    elif value not in me.setdefault("addrs", []):
                        if not (i + 2 < len(ops) and ops[i + 2] == "alias") and me["addrs"]:
                            me["addrs"][0] = value   # the first address is replaced, as ifconfig does
                        else:
                            me["addrs"].append(value)
                        step = 3 if i + 2 < len(ops) and ops[i + 2] == "alias" else step
                i += step
            else:
                fail(f"ifconfig: {op}: bad value")
        save("ifaces.json", ifs)
        if created and argv[1:2] == ["create"]:
            print(created)
        if not ops and created is None:
            print(if_text(name, ifs[name]))


# ---------------------------------------------------------------- kld, sockstat, pciconf

def kldstat(argv):
    opts, rest = getopt(argv, set("qvhd"), set("mni"), usage="usage: kldstat [-d] [-h] [-q] [-v] [-i id] [-n filename]\n       kldstat [-d] [-q] [-m modname]")
    o = dict(opts)
    if "m" in o:
        if kld_loaded(o["m"]):
            if "q" not in o:
                print(f"Id  Refs Name\n 1 1 {o['m']}")
            return
        if "q" not in o:
            die(f"kldstat: can't find module {o['m']}: No such file or directory", 1)
        sys.exit(1)
    for m in load("kld.json", ["vmm"]):
        print(m)


def kldload(argv):
    if len(argv) != 1 or argv[0].startswith("-"):
        die("usage: kldload [-nqv] file ...", 1)
    with locked():
        mods = load("kld.json", ["vmm"])
        if argv[0] in mods:
            die(f"kldload: can't load {argv[0]}: module already loaded or in kernel", 1)
        mods.append(argv[0])
        save("kld.json", mods)


def sockstat(argv):
    opts, rest = getopt(argv, set("46luncCjqsSwv"), set("pPjfR"), usage="usage: sockstat [-46cLlSsUuvw] [-j jid] [-p ports] [-P protocols]")
    if rest:
        die("usage: sockstat [-46cLlSsUuvw] [-j jid] [-p ports] [-P protocols]", 1)
    flags = {c for c, _ in opts}
    six = "6" in flags and "4" not in flags
    rows = [p for p in load("ports.json", []) if p.get("family", 4) == (6 if six else 4)]
    if VMM.is_dir():
        for f in VMM.iterdir():
            st = vmm_get(f.name)
            if st and alive(st.get("pid")) and st.get("vnc_port") and not six:
                rows.append({"port": st["vnc_port"], "addr": "127.0.0.1", "command": "bhyve", "pid": st["pid"]})
    print("USER     COMMAND    PID   FD  PROTO  LOCAL ADDRESS         FOREIGN ADDRESS")
    for r in rows:
        print(f"root     {r.get('command', 'nc'):<10} {r.get('pid', 1):<5} 3   tcp{6 if six else 4}   "
              f"{r.get('addr', '*')}:{r['port']:<14} *:*")


def pciconf(argv):
    opts, rest = getopt(argv, set("lvbce"), set(""), usage="usage: pciconf -l [-BbcevV] [device]")
    flags = {c for c, _ in opts}
    if "l" not in flags:
        die("usage: pciconf -l [-BbcevV] [device]", 1)
    devs = load("pci.json", DEFAULT_PCI)
    want = None
    if rest:
        m = re.fullmatch(r"pci(?:[0-9]+:)?([0-9]+):([0-9]+):([0-9]+)", rest[0])
        if not m:
            die(f"pciconf: {rest[0]}: No such file or directory", 1)
        want = ":".join(m.groups())
        if want not in devs:
            die(f"pciconf: {rest[0]}: No such file or directory", 1)
    for key, d in devs.items():
        if want and key != want:
            continue
        print(f"{d['driver']}@pci0:{key}:\tclass=0x020000 rev=0x06 hdr=0x00 vendor=0x10ec device=0x8168")
        if "v" in flags:
            print(f"    vendor     = '{d['vendor']}'\n    device     = '{d['device']}'\n"
                  f"    class      = {d['class']}\n    subclass   = {d.get('subclass', '')}")


# ----------------------------------------------------------------- sysrc, cu, logger, daemon

def sysrc(argv):
    opts, rest = getopt(argv, set("inxqvdaAcDeFNR"), set("fj"), usage="usage: sysrc [OPTIONS] name[=value] ...")
    o = {c: v for c, v in opts}
    path = Path(o.get("f", "/etc/rc.conf"))
    if not rest:
        die("usage: sysrc [OPTIONS] name[=value] ...", 1)
    with locked():
        lines = path.read_text().splitlines() if path.exists() else []
        before = list(lines)
        status = 0
        for item in rest:
            name, eq, value = item.partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                die(f"sysrc: {name}: name contains characters not allowed in shell", 1)
            idx = [k for k, ln in enumerate(lines) if re.match(rf"^\s*{name}=", ln)]
            old = re.sub(r'^[^=]*="?(.*?)"?\s*$', r"\1", lines[idx[-1]]) if idx else None
            if "x" in o:
                if not idx:
                    if "i" not in o:
                        print(f"sysrc: unknown variable '{name}'", file=sys.stderr)
                        status = 1
                    continue
                lines = [ln for k, ln in enumerate(lines) if k not in idx]
            elif eq:
                new = f'{name}="{value}"'
                if idx:
                    lines[idx[-1]] = new
                else:
                    lines.append(new)
                print(f"{name}: {old or ''} -> {value}")
            else:
                if old is None:
                    if "i" not in o:
                        print(f"sysrc: unknown variable '{name}'", file=sys.stderr)
                        status = 1
                    continue
                print(old if "n" in o else f"{name}: {old}")
        if lines != before:  # as sysrc does: a changed rc.conf replaces the old one whole (kill -9 safe)
            tmp = path.with_name(f".{path.name}.sysrc{os.getpid()}")
            tmp.write_text("".join(ln + "\n" for ln in lines))
            os.replace(tmp, path)
    sys.exit(status)


def cu(argv):
    opts, rest = getopt(argv, set("dehot"), set("lsaE"), usage="usage: cu [-ehot] [-l line] [-s speed | -speed] [host]")
    o = dict(opts)
    line = o.get("l")
    if not line:
        die("usage: cu [-ehot] [-l line] [-s speed | -speed] [host]", 1)
    if "nmdm" in line and not kld_loaded("nmdm"):
        die(f"cu: {line}: No such file or directory", 1)
    print("Connected")


# ------------------------------------------------------------------- mount -p, swapctl -l

def _proc_table(path):
    try:
        return [line.split() for line in Path(path).read_text().splitlines() if line.split()]
    except OSError:
        return []


def mount(argv):
    """mount -p only (fstab lines of what is mounted, from this host's own table); anything else
    kvm never runs, so the simulator refuses it rather than mount something."""
    if argv != ["-p"]:
        die("mount: the simulator takes -p only", 1)
    for f in _proc_table("/proc/self/mounts"):
        print(f"{f[0]}\t\t{f[1]}\t{f[2]}\t{f[3].split(',')[0]}\t0 0")


def swapctl(argv):
    """swapctl -l only: the swap devices (this host's /proc/swaps)."""
    if argv != ["-l"]:
        die("usage: swapctl -l [-ghkmS]", 1)
    print("Device:       1024-blocks     Used:")
    for f in _proc_table("/proc/swaps")[1:]:
        print(f"{f[0]}\t{f[2]}\t{f[3]}")



# --------------------------------------------------------------------- sysctl, route -n get

def sysctl(argv):
    """sysctl [-i] [-n] name[=value] ...: the OIDs kvm reads and sets (state in sysctl.json)."""
    opts, rest = getopt(argv, set("inqbdehNoTWx"), set("f"),
                        usage="usage: sysctl [-bdehiNnoqTtWx] [ -B <bufsize> ] [-f filename] name[=value] ...")
    o = dict(opts)
    if not rest:
        die("usage: sysctl [-bdehiNnoqTtWx] [ -B <bufsize> ] [-f filename] name[=value] ...", 1)
    with locked():
        values = load("sysctl.json", SYSCTL_DEFAULTS)
        status = 0
        for item in rest:
            oid, eq, value = item.partition("=")
            if oid not in values:
                if "i" not in o:
                    print(f"sysctl: unknown oid '{oid}'", file=sys.stderr)
                    status = 1
                continue
            if eq:
                if not value.lstrip("-").isdigit():
                    print(f"sysctl: invalid integer '{value}'", file=sys.stderr)
                    status = 1
                    continue
                print(f"{oid}: {values[oid]} -> {value}")
                values[oid] = value
                continue
            print(values[oid] if "n" in o else f"{oid}: {values[oid]}")
        save("sysctl.json", values)
    sys.exit(status)


def route(argv):
    """route -n get default only (the default route's interface: routes.json)."""
    if argv[:1] == ["-n"]:
        argv = argv[1:]
    if argv != ["get", "default"]:
        die("route: the simulator takes -n get default only", 1)
    r = load("routes.json", {"default": {"gateway": "192.168.1.1", "interface": "em0"}}).get("default")
    if not r:
        die("route: route has not been found", 1)
    print(f"   route to: default\ndestination: default\n       mask: default\n    gateway: {r['gateway']}\n"
          f"        fib: 0\n  interface: {r['interface']}\n      flags: <UP,GATEWAY,DONE,STATIC>")


# ------------------------------------------------------------------------------ pfctl

PF_NAT = ("nat", "rdr", "binat", "nat-anchor", "rdr-anchor", "binat-anchor")
PF_FILTER = ("pass", "block", "match", "anchor", "antispoof")
PF_OTHER = ("set", "scrub", "table", "load")
PF_USAGE = ("usage: pfctl [-AdeghMmNnOPqRSrvz] [-a anchor] [-D macro=value] [-F modifier]\n"
            "\t[-f file] [-i interface] [-K host | network]\n\t[-k host | network | gateway | label | id] "
            "[-o level] [-p device]\n\t[-s modifier] [-t table -T command [address ...]] [-x level]")
SHOW = {"r": "rules", "rules": "rules", "n": "nat", "nat": "nat", "i": "info", "info": "info",
        "A": "Anchors", "Anchors": "Anchors"}
FLUSH = {"a": "all", "all": "all", "r": "rules", "rules": "rules", "n": "nat", "nat": "nat"}


def pf_parse(text, source):
    """(nat rules, filter rules) of a ruleset, or exit 1 as pfctl does on a syntax error."""
    nat, rules = [], []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip() if not line.strip().startswith("#") else ""
        if not line:
            continue
        word = line.split()[0]
        ok = word in PF_NAT + PF_FILTER + PF_OTHER and line.count('"') % 2 == 0
        if word == "nat" and (" -> " not in line or not line.startswith("nat on ")):
            ok = False
        if not ok:
            print(f"{source}:{number}: syntax error", file=sys.stderr)
            die("pfctl: Syntax error in config file: pf rules not loaded", 1)
        if word in PF_NAT:
            nat.append(line)
        elif word in PF_FILTER:
            rules.append(line)
    return nat, rules


def pfctl(argv):
    """pfctl: -e, -d, -s info|rules|nat|Anchors, -f FILE|- (into -a ANCHOR or the main ruleset),
    -F all|rules|nat; pf must be loaded (kldload pf). State: pf.json."""
    opts, rest = getopt(argv, set("AdeghMmNnOPqRrvz"), set("aDfFiKkopstTx"), usage=PF_USAGE)
    if rest:
        die(PF_USAGE, 1)
    o = dict(opts)
    if not kld_loaded("pf"):
        die("pfctl: /dev/pf: No such file or directory", 1)
    with locked():
        pf = load("pf.json", {"enabled": False, "main": {"nat": [], "rules": []}, "anchors": {}})
        anchor = o.get("a")
        if anchor is not None and (not anchor or anchor.startswith("/") or "//" in anchor):
            die(f"pfctl: anchor name '{anchor}' is not valid", 1)
        where = pf["anchors"].setdefault(anchor, {"nat": [], "rules": []}) if anchor else pf["main"]
        if "e" in o:
            if pf["enabled"]:
                die("pfctl: pf already enabled", 1)
            pf["enabled"] = True
            print("pf enabled", file=sys.stderr)
        if "d" in o:
            if not pf["enabled"]:
                die("pfctl: pf not enabled", 1)
            pf["enabled"] = False
            print("pf disabled", file=sys.stderr)
        if "F" in o:
            what = FLUSH.get(o["F"])
            if what is None:
                die(f"pfctl: Unknown flush modifier '{o['F']}'\n{PF_USAGE}", 1)
            if what in ("all", "nat"):
                where["nat"] = []
                print("nat cleared", file=sys.stderr)
            if what in ("all", "rules"):
                where["rules"] = []
                print("rules cleared", file=sys.stderr)
        if "f" in o:
            source = o["f"]
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
            nat, rules = pf_parse(text, "stdin" if source == "-" else source)
            where["nat"], where["rules"] = nat, rules   # a load replaces the ruleset at once
        if anchor and not where["nat"] and not where["rules"]:
            pf["anchors"].pop(anchor, None)
        save("pf.json", pf)
        if "s" in o:
            what = SHOW.get(o["s"])
            if what is None:
                die(f"pfctl: Unknown show modifier '{o['s']}'\n{PF_USAGE}", 1)
            if what == "info":
                state = "Enabled" if pf["enabled"] else "Disabled"
                print(f"Status: {state} for 0 days 00:00:01           Debug: Urgent")
            elif what == "Anchors":
                prefix = f"{anchor}/" if anchor else ""
                for name in sorted(pf["anchors"]):
                    if name.startswith(prefix):
                        print(f"  {name}")
            else:
                for line in where[what]:
                    print(line)


# ------------------------------------------------------------------------------- rctl

RCTL_USAGE = "usage: rctl [ -h ] [-a rule | -l filter | -r filter | -u filter | filter]"
RCTL_SUBJECTS = {"u": "user", "g": "group", "p": "process", "l": "loginclass", "c": "loginclass",
                 "class": "loginclass", "j": "jail"}
RCTL_RESOURCES = {"cputime", "datasize", "stacksize", "coredumpsize", "memoryuse", "memorylocked", "maxproc",
                  "openfiles", "vmemoryuse", "pseudoterminals", "swapuse", "nthr", "msgqqueued", "msgqsize",
                  "nmsgq", "nsem", "nsemop", "nshm", "shmsize", "wallclock", "pcpu", "readbps", "writebps",
                  "readiops", "writeiops"}
RCTL_DECAYING = {"pcpu", "readbps", "writebps", "readiops", "writeiops"}   # throttle only for these...
RCTL_UNDENIABLE = {"cputime", "wallclock", "readbps", "writebps", "readiops", "writeiops"}  # ...deny not these
RCTL_ACTIONS = {"deny", "log", "devctl", "throttle"}
SUFFIX = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def rctl_expand(rule):
    """rctl.c expand_rule: subject aliases, the amount through expand_number(3); None (warned) when
    malformed."""
    parts = rule.split(":", 2)
    if len(parts) < 2:
        print(f"rctl: malformed rule '{rule}': missing subject", file=sys.stderr)
        return None
    subject = RCTL_SUBJECTS.get(parts[0].lower(), parts[0])
    rest = parts[2] if len(parts) > 2 else ""
    resource, _, tail = rest.partition(":")
    # action=amount[/per] (strsep on "=/", then "/")
    m = re.match(r"([^=/]*)(?:=([^/]*))?(?:/(.*))?\Z", tail)
    action, amount, per = m.group(1), m.group(2) or "", m.group(3) or ""
    if amount:
        m = re.fullmatch(r"([0-9]+)([kKmMgGtTpPeE]?)[bB]?", amount)
        if not m:
            print(f"rctl: malformed rule '{rule}': invalid numeric value '{amount}'", file=sys.stderr)
            return None
        amount = str(int(m.group(1)) << SUFFIX[m.group(2).lower()])
    text = f"{subject}:{parts[1]}:{resource}"
    if action:
        text += f":{action}" + (f"={amount}" if amount else "") + (f"/{per}" if per else "")
    return text


def rctl_kernel(rule, adding):
    """kern_rctl.c: the error number a rule (or filter) gets, or None."""
    subject, sid, rest = (rule.split(":", 2) + ["", ""])[:3]
    resource, _, tail = rest.partition(":")
    action, _, amount = tail.partition("=")
    amount = amount.split("/")[0]
    if subject not in ("process", "user", "loginclass", "jail") or (resource and resource not in RCTL_RESOURCES):
        return "Invalid argument"
    if action and action not in RCTL_ACTIONS and not action.startswith("sig"):
        return "Invalid argument"
    if subject == "process" and sid:
        if not sid.isdigit():
            return "Invalid argument"
        if not alive(int(sid)):
            return "No such process"
    if adding:
        if not (sid and resource and action and amount):
            return "Invalid argument"   # an added rule is fully specified
        if action == "deny" and resource in RCTL_UNDENIABLE:
            return "Operation not supported"
        if action == "throttle" and (resource not in RCTL_DECAYING or resource == "pcpu"):
            return "Operation not supported"
    return None


def rctl(argv):
    opts, rest = getopt(argv, set("ahlnru"), set(), usage=RCTL_USAGE)
    flags = {c for c, _ in opts}
    if len(flags & set("alru")) > 1:
        die("rctl: at most one of -a, -l, -r, or -u may be specified", 1)
    if not rest:
        if not flags & set("alru"):
            rules = load("rctl.json", [])
            print("\n".join(rules))
            return
        die(RCTL_USAGE, 1)
    if load("racct.json", {"enable": 1}).get("enable") != 1:
        die("rctl: RACCT/RCTL present, but disabled; enable using kern.racct.enable=1 tunable", 1)
    errors = 0
    with locked():
        # a process's rules go with it (racct_proc_exit)
        rules = [r for r in load("rctl.json", []) if not r.startswith("process:") or alive(int(r.split(":")[1]))]
        for arg in rest:
            rule = rctl_expand(arg)
            if rule is None:
                errors += 1
                continue
            why = rctl_kernel(rule, "a" in flags)
            if why:
                verb = "add" if "a" in flags else "remove" if "r" in flags else "show"
                print(f"rctl: failed to {verb} rule '{arg}': {why}", file=sys.stderr)
                errors += 1
                continue
            if "a" in flags:
                if rule not in rules:
                    rules.append(rule)
            elif "r" in flags:
                prefix = [p for p in rule.split(":") if p]
                rules = [r for r in rules if r.split(":")[:len(prefix)] != prefix]
        save("rctl.json", rules)
    sys.exit(errors)


TOOLS = {"bhyve": bhyve, "bhyvectl": bhyvectl, "grub-bhyve": grub_bhyve, "ifconfig": ifconfig,
         "kldstat": kldstat, "kldload": kldload, "sockstat": sockstat, "pciconf": pciconf,
         "sysrc": sysrc, "cu": cu, "mount": mount, "swapctl": swapctl, "rctl": rctl,
         "sysctl": sysctl, "route": route, "pfctl": pfctl}


def main(tool):
    argv = sys.argv[1:]
    record(tool, argv)
    TOOLS[tool](argv)
    sys.exit(0)
