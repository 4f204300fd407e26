"""vmcreate [NAME] [flags]: create a VM (asks what the flags do not say)."""

import argparse
import os

from kvm import vm as vmmod
from kvm.cli import common, jsonout
from kvm.cli.cloudinit import add_seed_args, seed_from_args
from kvm.conf import config, reach, shconf, switchconf
from kvm.errors import KvmError, UsageError
from kvm.hypervisor import current as hypervisor
from kvm.manage import info
from kvm.manage.create import DEFAULT_BRIDGE, DEFAULT_DISK_SIZE, Answers, check_ifname, create, disk_size, summary
from kvm.storage import images

PROG = "vmcreate"
# vmcreate --windows: what Windows 11 asks of a machine (UEFI, TPM 2.0, 4G memory, a 64G disk) and
# devices its installer has drivers for (nvme, e1000: no virtio without a driver disk)
WINDOWS = {"loader": "uefi", "tpm": "swtpm", "cores": "2", "mem": "4G", "disk_size": "64G", "disk_driver": "nvme",
           "vnc": "yes"}


def build_parser():
    p = common.parser(PROG, "Create a VM: its dataset, set.conf, run, disk and UEFI vars. Asks, in the "
                            "shell kvm's order, whatever the flags do not give, shows what it will "
                            "create and asks to confirm; with -y, takes the defaults instead of asking "
                            f"(a {DEFAULT_DISK_SIZE} sparse disk, a tap on {DEFAULT_BRIDGE}, VNC on "
                            "127.0.0.1 with uefi or the serial console with grub). A failure or "
                            "interrupt leaves nothing behind.",
                      dry_run=True)
    p.add_argument("name", nargs="?", help="VM name (1-31 of letters, digits, . _ -)")
    p.add_argument("--loader", help="uefi, grub, or an absolute loader path")
    p.add_argument("--boot", help="grub root device, e.g. cd0 or hd0,msdos1")
    p.add_argument("--cores", help="vCPUs (default 1)")
    p.add_argument("--mem", help="memory, e.g. 2G, 2GB, 0.5G or 512 (MiB) (default 1G)")
    p.add_argument("--options", help=common.hypervisor_text("options_help", "VMoptions letters without dash"))
    p.add_argument("--disk-size", help=f"size of the sparse disk file, e.g. 40G or 40GB (default {DEFAULT_DISK_SIZE}; "
                                       "with --from: the image's)")
    p.add_argument("--no-disk", action="store_true", help="no disk")
    p.add_argument("--disk-zvol", action="store_true",
                   help="the disk is a sparse zvol ROOT/vm/NAME/disk (volmode=dev), not a file; not on zfs-fuse")
    p.add_argument("--disk-driver", help="nvme (default), virtio-blk, ahci-hd")
    p.add_argument("--bridge", help=f"the basic network's bridge (default {DEFAULT_BRIDGE})")
    p.add_argument("--tap", help="tap name for the basic network (default tapNAME)")
    p.add_argument("--uplink", help="host interface to add to the bridge")
    p.add_argument("--no-network", action="store_true", help="no basic network")
    p.add_argument("--switch", action=SwitchNic, dest="switch", metavar="NAME",
                   help="a NIC on kvm switch NAME (kvm switch list; repeat for several NICs): no preRun lines")
    p.add_argument("--vlan", action=SwitchVlan, dest="switch", metavar="N",
                   help="the VLAN (1-4094) of the NIC the --switch before it gives")
    p.add_argument("--vnc", choices=["yes", "wait", "no"],
                   help="VNC screen (uefi only; default yes unless --com yes gives a console)")
    p.add_argument("--vnc-addr", help="VNC listen address (default 127.0.0.1)")
    p.add_argument("--com", choices=["yes", "no"],
                   help="serial console on COM1, attached with ./console NAME (default yes when VNC is off)")
    p.add_argument("--iso", help="absolute path of an ISO to insert")
    p.add_argument("--from", dest="image", metavar="IMAGE",
                   help="the dataset is a clone of this image (image list): instant; --disk-size grows it")
    p.add_argument("--tpm", help="TPM: swtpm (a software TPM 2.0 per VM), passthru:/dev/tpmN, or no (default)")
    p.add_argument("--limits", help='resource limits, e.g. "pcpu=50 rbps=100M wbps=100M riops=1000 wiops=1000 vmem=8G"')
    p.add_argument("--cpu-pin", help='vCPU:host CPU pins, e.g. "0:2 1:3"')
    p.add_argument("--agent", choices=["yes", "no"], help="a guest-agent channel (stop asks the agent first)")
    p.add_argument("--windows", action="store_true",
                   help=f"Windows 11 preset for what the flags omit: uefi, TPM swtpm, 2 cores, {WINDOWS['mem']} "
                        f"memory, a {WINDOWS['disk_size']} disk (nvme) and an e1000 NIC its installer sees, VNC")
    p.add_argument("--cloud-init", action="store_true", help="write a cloud-init seed.iso (flags below)")
    add_seed_args(p)
    p.add_argument("-y", "--yes", action="store_true", help="ask nothing: defaults for what flags omit")
    p.add_argument("--json", action="store_true",
                   help="print the VM made as a JSON object (vminfo --json's, with created and dry_run)")
    return p


class SwitchNic(argparse.Action):
    """--switch NAME: one more NIC, [name, vlan] in args.switch."""

    def __call__(self, parser, namespace, value, option_string=None):
        nics = list(getattr(namespace, self.dest) or [])
        nics.append([value, 0])
        setattr(namespace, self.dest, nics)


class SwitchVlan(argparse.Action):
    """--vlan N: the VLAN of the NIC the --switch just before gives."""

    def __call__(self, parser, namespace, value, option_string=None):
        nics = getattr(namespace, self.dest) or []
        if not nics:
            raise argparse.ArgumentError(self, "follows the --switch NAME it applies to")
        if nics[-1][1]:
            raise argparse.ArgumentError(self, f"given twice for --switch {nics[-1][0]}")
        try:
            nics[-1][1] = switchconf.vlan_id(value, "VLAN")
        except ValueError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None


class Asker:
    """Asks a question until the answer passes its check (or takes the flag/default)."""

    def __init__(self, args):
        self.args = args

    def get(self, flag, question, check=None, default=""):
        given = getattr(self.args, flag)
        if given is not None:
            if check:
                check(given)
            return given
        if self.args.yes:
            return default
        hint = f"--{flag.replace('_', '-')} answers it, -y takes the defaults"
        while True:
            answer = common.ask(question, default, flag=hint)
            try:
                if check and answer:
                    check(answer)
                return answer or ""
            except KvmError as exc:
                common.info(f"  {exc.message} - try again")


def _checked(what, checker, *args):
    """A flag/prompt check from set.conf's own checker: one rule, one range, in one place."""
    def check(v):
        try:
            checker(*args, v)
        except config.Invalid as exc:
            raise UsageError(f"{what} '{v}' {exc}") from None
    return check


_check_loader = _checked("loader", config.loader)
_check_cores = _checked("cores", config.whole_number, "Cores")
_check_options = _checked("bhyve options", config.bhyve_options)
_check_driver = _checked("disk driver", config.disk_driver)
_check_mem = _checked("memory", config.typed_memory)  # 2G, 2GB, 0.5G, 512 (MiB): config.typed_size


def _yes_no(v):
    if v.lower() not in ("y", "yes", "n", "no"):
        raise UsageError(f"answer '{v}' is not y or n")


def windows_preset(args):
    """--windows: the flags not given take WINDOWS's values; what Windows 11 cannot run with is
    refused (a grub loader, no TPM, less than 4G)."""
    if not args.windows:
        return
    for flag, value in WINDOWS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    if config.loader_kind(args.loader) != "uefi":
        raise UsageError(f"--windows needs the uefi loader (Windows 11 boots only with UEFI), not '{args.loader}'")
    if args.tpm in ("no", ""):
        raise UsageError("--windows needs a TPM (Windows 11 refuses to install without TPM 2.0): "
                         "--tpm swtpm or passthru:/dev/tpmN")
    if (config.typed_memory(args.mem)[0] if config.mem_bytes(args.mem) is None else config.mem_bytes(args.mem)) \
            < 4 << 30:
        raise UsageError(f"--windows needs at least 4G of memory (Windows 11's minimum), not '{args.mem}'")


def gather_guest(args, a):
    """--tpm, --limits, --cpu-pin, --agent: checked by set.conf's own checkers when written;
    an offline host CPU refused here (run/launch.py's check)."""
    a.tpm = "" if args.tpm in (None, "no") else args.tpm
    a.limits = args.limits or ""
    a.cpu_pin = args.cpu_pin or ""
    a.agent = args.agent == "yes"
    if args.windows:
        a.nic = "e1000"
    from kvm.run import launch
    problem = launch.offline_pin_text(a.cpu_pin)
    if problem:
        raise UsageError(f"--cpu-pin: {problem}")


def gather(args, notes=None):
    """The answers, from flags and prompts; a size typed otherwise than bhyve writes it is
    converted (config.typed_size), and how it was read is added to `notes`."""
    notes = [] if notes is None else notes
    windows_preset(args)
    q = Asker(args)
    a = Answers()
    a.loader = q.get("loader", "Loader (uefi, grub or a loader's full path) [uefi]: ", _check_loader, "uefi")
    grub = config.loader_kind(a.loader) == "grub"
    if grub:
        a.boot = q.get("boot", "Boot device for grub-bhyve (cd0 to install, hd0,msdos1 after) [cd0]: ",
                       None, "cd0")
    a.cores = q.get("cores", "Cores [1]: ", _check_cores)
    a.mem = q.get("mem", "Memory, with a unit (M, G) [1G]: ", _check_mem)
    if a.mem:
        a.mem = _as_written("memory", a.mem, config.typed_memory(a.mem), notes)
    a.options = q.get("options", hypervisor().options_prompt, _check_options)
    a.disk_size = gather_disk(args, q)
    if a.disk_size:
        a.disk_size = _as_written("disk size", a.disk_size, disk_size(a.disk_size), notes)
    if getattr(args, "disk_zvol", False):
        if args.no_disk or args.image:
            raise UsageError("--disk-zvol cannot be used with --no-disk or --from")
        a.disk_zvol = True
    if args.disk_driver:
        _check_driver(args.disk_driver)
        a.disk_driver = args.disk_driver
    gather_network(args, q, a)
    gather_console(args, q, a, grub)
    if args.iso:
        a.iso = args.iso
    if args.vnc_addr:
        a.vnc_addr = args.vnc_addr
    gather_guest(args, a)
    return a


def _as_written(what, typed, read, notes):
    """The text to write of a size read as (bytes, text, how); how it was read goes to notes."""
    _, written, how = read
    if how:
        notes.append(f"{what} '{typed}' {how}")
    return written


def gather_disk(args, q):
    """The disk size: DEFAULT_DISK_SIZE unless told (--no-disk, or `none` at the prompt); with
    --from the image's disk as it is unless --disk-size grows it."""
    if args.no_disk:
        if args.disk_size is not None or args.image:
            raise UsageError("--no-disk cannot be used with --disk-size or --from")
        return ""
    default = "" if args.image else DEFAULT_DISK_SIZE
    shown = "Enter = the image's" if args.image else f"{default}; none = no disk"
    size = q.get("disk_size", f"Disk size with a unit (e.g. 40G) [{shown}]: ",
                 lambda v: None if v.lower() == "none" else disk_size(v), default)
    return "" if size.lower() == "none" else size


def gather_network(args, q, a):
    """The basic network: on by default (a tap on DEFAULT_BRIDGE, as the shell kvm proposes)."""
    if args.switch:
        given = [f for f, v in (("--bridge", args.bridge), ("--tap", args.tap), ("--uplink", args.uplink),
                                ("--no-network", args.no_network)) if v]
        if given:
            raise UsageError(f"{given[0]} is the basic network's; --switch puts the NIC on a kvm switch instead")
        for switch, _vlan in args.switch:
            switchconf.check_name(switch)
        a.nics = [tuple(n) for n in args.switch]
        return
    if args.no_network:
        return
    wanted = args.yes or args.bridge is not None or args.tap is not None or args.uplink is not None
    if not wanted:
        wanted = (common.ask("Basic network: a tap on a bridge, given as virtio-net (Y/n)? ", "y",
                             flag="--bridge BRIDGE or --no-network answers it, -y takes the defaults")
                  or "y").lower().startswith("y")
    if not wanted:
        return
    a.network = True
    a.bridge = q.get("bridge", f"Bridge to use [{DEFAULT_BRIDGE}]: ",
                     lambda v: check_ifname(v, "bridge name"), DEFAULT_BRIDGE) or DEFAULT_BRIDGE
    a.tap = args.tap or ""
    a.uplink = q.get("uplink", "Host interface to add to the bridge [Enter = none]: ",
                     lambda v: check_ifname(v, "uplink interface"))


def gather_console(args, q, a, grub):
    if grub:
        if args.vnc in ("yes", "wait"):
            raise UsageError("--vnc cannot be used with the grub loader")
        if not args.yes:
            common.info("grub loader: the console is the serial one (./console NAME); no VNC.")
        a.com = True
        return
    # a console by default: VNC (on 127.0.0.1), unless --com yes already gives one
    vnc_default = "no" if (args.com or "").lower() == "yes" else "yes"
    vnc = q.get("vnc", f"VNC screen: y, wait (boot waits for a viewer) or n [{vnc_default[0]}]: ",
                lambda v: None if v.lower() in ("y", "yes", "wait", "n", "no")
                else _yes_no(v), vnc_default)
    a.vnc = {"y": "1", "yes": "1", "wait": "wait"}.get(vnc.lower(), "")
    com_default = "no" if a.vnc else "yes"  # without VNC, the serial console is the one left
    com = q.get("com", "Serial console (y/N)? " if a.vnc else "Serial console (Y/n)? ", _yes_no, com_default)
    a.com = com.lower().startswith("y")


def image_defaults(args, root):
    """--from IMAGE: a published image's set.conf gives the defaults of what the flags omit."""
    if not args.image:
        return
    _, where = images.get(root, args.image)
    conf = where / "set.conf"
    if not os.path.lexists(conf):
        # an imported image has none (a published one has): an image's dataset is read-only, so
        # no edit races this, and read_text's retries of a vanished file (200 ms) are not needed
        return
    try:
        values = shconf.read_plain(shconf.read_text(str(conf))).values
    except KvmError:
        return
    for flag, key in (("loader", "VMrom"), ("cores", "Cores"), ("mem", "Mem"), ("options", "VMoptions"),
                      ("disk_driver", "DiskDriver")):
        if getattr(args, flag) is None and values.get(key):
            setattr(args, flag, values[key])


def confirmed(root, name, a):
    """Show what will be created (and the warning when nothing could reach it); ask Y/n."""
    for line in summary(name, a, root.path / "vm" / name):
        common.info(line)
    grub = config.loader_kind(a.loader) == "grub"
    unreachable = reach.warning(bool(a.vnc or a.com or grub), ["virtio-net"] if a.network or a.nics else [])
    if unreachable:
        common.warn(PROG, unreachable, vm=name)
    answer = common.ask("Create it (Y/n)? ", "y", flag="-y creates it without asking") or "y"
    return answer.lower().startswith("y")


def body(args):
    common.need_root_user()
    root = common.get_root(args)
    name = args.name
    if not name:
        if args.yes or not common.is_terminal():  # the name is positional: asked only at a terminal
            raise UsageError("the VM name is missing: vmcreate NAME [-y] [flags]")
        name = common.ask("VM name: ", "")
    vmmod.check_name(name)
    try:
        image_defaults(args, root)
        notes = []
        answers = gather(args, notes)
        for note in notes:
            common.info(f"{name}: {note}")
    except UsageError as exc:
        exc.vm = exc.vm or name
        raise
    answers.image = args.image or ""
    if args.cloud_init:
        answers.cloud_init = seed_from_args(args, name)
    if not args.yes and not confirmed(root, name, answers):
        common.info("Nothing created.")
        return 1
    vm, cfg = create(root, name, answers)
    for line in cfg.warnings:
        common.warn(PROG, line, vm=name)
    if args.yes and reach.of_config(cfg):  # interactive runs were told before they confirmed
        common.warn(PROG, reach.of_config(cfg), vm=name)
    if args.json:
        jsonout.emit(created_json(vm, args.dry_run), sort_keys=True)
        return 0
    common.said(args, f"created {name} in {vm.dir}", f"would create {name} in {vm.dir}")
    if not args.dry_run:
        common.info(f"Review {vm.conf_path} and {vm.run_path}.")
        common.info(f"To install from an ISO: {root.path}/insert {name} /path/to/image.iso")
        common.info(f"To start it: {root.path}/start {name}   (or start -b {name} in the background)")
        common.info(f"To run it as a service: {root.path}/dorc {name}")
    return 0


def created_json(vm, dry_run):
    """vmcreate --json: the VM as vminfo --json gives it; in a dry run its name and folder only."""
    if dry_run:
        return {"name": vm.name, "dir": str(vm.dir), "created": False, "dry_run": True}
    return {**info.collect(vm), "created": True, "dry_run": False}
