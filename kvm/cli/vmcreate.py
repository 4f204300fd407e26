"""vmcreate [NAME] [flags]: create a VM (asks what the flags do not say)."""

from .. import config
from ..create import Answers, check_ifname, create, size_bytes
from ..errors import KvmError, UsageError
from . import common
from .cloudinit import add_seed_args, seed_from_args

PROG = "vmcreate"


def build_parser():
    p = common.parser(PROG, "Create a VM: its dataset, set.conf, run, disk and UEFI vars. Asks, in the "
                            "shell kvm's order, whatever the flags do not give; with -y, takes the "
                            "defaults instead of asking. A failure or interrupt leaves nothing behind.",
                      dry_run=True)
    p.add_argument("name", nargs="?", help="VM name (1-31 of letters, digits, . _ -)")
    p.add_argument("--loader", help="uefi, grub, or an absolute loader path")
    p.add_argument("--boot", help="grub root device, e.g. cd0 or hd0,msdos1")
    p.add_argument("--cores", help="vCPUs (default 1)")
    p.add_argument("--mem", help="memory with unit, e.g. 2G (default 1G)")
    p.add_argument("--options", help="bhyve flags without dash, e.g. AHP")
    p.add_argument("--disk-size", help="size of the sparse disk file, e.g. 20G (default: no disk)")
    p.add_argument("--disk-driver", help="nvme (default), virtio-blk, ahci-hd")
    p.add_argument("--bridge", help="set up the basic network on this bridge (default bridgeLOCAL)")
    p.add_argument("--tap", help="tap name for the basic network (default tapNAME)")
    p.add_argument("--uplink", help="host interface to add to the bridge")
    p.add_argument("--no-network", action="store_true", help="no basic network")
    p.add_argument("--vnc", choices=["yes", "wait", "no"], help="VNC screen (uefi only)")
    p.add_argument("--vnc-addr", help="VNC listen address (default 127.0.0.1)")
    p.add_argument("--com", choices=["yes", "no"], help="serial console on COM1 (bhyve: nmdm, cu; qemu: a socket; attach with ./console NAME)")
    p.add_argument("--iso", help="absolute path of an ISO to insert")
    p.add_argument("--from", dest="image", metavar="IMAGE",
                   help="the dataset is a clone of this image (image list): instant; --disk-size grows it")
    p.add_argument("--cloud-init", action="store_true", help="write a cloud-init seed.iso (flags below)")
    add_seed_args(p)
    p.add_argument("-y", "--yes", action="store_true", help="ask nothing: defaults for what flags omit")
    return p


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
        while True:
            answer = common.ask(question, default)
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
_check_memory = _checked("memory", config.memory)


def _check_mem(v):
    size_bytes(v, "memory")  # vmcreate wants the unit written out
    _check_memory(v)


def _yes_no(v):
    if v.lower() not in ("y", "yes", "n", "no"):
        raise UsageError(f"answer '{v}' is not y or n")


def gather(args):
    """The answers, from flags and prompts."""
    q = Asker(args)
    a = Answers()
    a.loader = q.get("loader", "Loader (uefi, grub or a loader's full path) [uefi]: ", _check_loader, "uefi")
    grub = config.loader_kind(a.loader) == "grub"
    if grub:
        a.boot = q.get("boot", "Boot device for grub-bhyve (cd0 to install, hd0,msdos1 after) [cd0]: ",
                       None, "cd0")
    a.cores = q.get("cores", "Cores [1]: ", _check_cores)
    a.mem = q.get("mem", "Memory, with a unit (M, G) [1G]: ", _check_mem)
    a.options = q.get("options", "bhyve options without dash (e.g. AHP) [none]: ", _check_options)
    a.disk_size = q.get("disk_size", "Disk size with a unit (e.g. 20G) [Enter = no disk]: ",
                        lambda v: size_bytes(v, "disk size"))
    if args.disk_driver:
        _check_driver(args.disk_driver)
        a.disk_driver = args.disk_driver
    gather_network(args, q, a)
    gather_console(args, q, a, grub)
    if args.iso:
        a.iso = args.iso
    if args.vnc_addr:
        a.vnc_addr = args.vnc_addr
    return a


def gather_network(args, q, a):
    if args.no_network:
        return
    wanted = args.bridge is not None or args.tap is not None or args.uplink is not None
    if not wanted and not args.yes:
        wanted = (common.ask("Basic network: a tap on a bridge, given as virtio-net (y/N)? ", "n") or "n") \
            .lower().startswith("y")
    if not wanted:
        return
    a.network = True
    a.bridge = q.get("bridge", "Bridge to use [bridgeLOCAL]: ",
                     lambda v: check_ifname(v, "bridge name"), "bridgeLOCAL") or "bridgeLOCAL"
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
    vnc = q.get("vnc", "VNC screen: y, wait (boot waits for a viewer) or n [n]: ",
                lambda v: None if v.lower() in ("y", "yes", "wait", "n", "no")
                else _yes_no(v), "no")
    a.vnc = {"y": "1", "yes": "1", "wait": "wait"}.get(vnc.lower(), "")
    com = q.get("com", "Serial console (y/N)? ", _yes_no, "no")
    a.com = com.lower().startswith("y")


def image_defaults(args, root):
    """--from IMAGE: a published image's set.conf gives the defaults of what the flags omit."""
    if not args.image:
        return
    from .. import images, shconf
    _, where = images.get(root, args.image)
    try:
        values = shconf.read_plain((where / "set.conf").read_text()).values
    except OSError:
        return
    for flag, key in (("loader", "VMrom"), ("cores", "Cores"), ("mem", "Mem"), ("options", "VMoptions"),
                      ("disk_driver", "DiskDriver")):
        if getattr(args, flag) is None and values.get(key):
            setattr(args, flag, values[key])


def body(args):
    common.need_root_user()
    root = common.get_root(args)
    name = args.name
    if not name:
        if args.yes:
            raise UsageError("give the VM name")
        name = common.ask("VM name: ", "")
    from .. import vm as vmmod
    vmmod.check_name(name)
    try:
        image_defaults(args, root)
        answers = gather(args)
    except UsageError as exc:
        exc.vm = exc.vm or name
        raise
    answers.image = args.image or ""
    if args.cloud_init:
        answers.cloud_init = seed_from_args(args, name)
    vm, cfg = create(root, name, answers)
    for line in cfg.warnings:
        common.warn(PROG, line, vm=name)
    common.said(args, f"created {name} in {vm.dir}", f"would create {name} in {vm.dir}")
    if not args.dry_run:
        common.info(f"Review {vm.conf_path} and {vm.run_path}.")
        common.info(f"To install from an ISO: {root.path}/insert {name} /path/to/image.iso")
        common.info(f"To start it: {root.path}/start {name}   (or start -b {name} in the background)")
        common.info(f"To run it as a service: {root.path}/dorc {name}")
    return 0
