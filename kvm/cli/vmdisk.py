"""vmdisk list|add|grow|detach NAME ...: a VM's disks without editing set.conf by hand."""


from kvm import host
from kvm.cli import common, jsonout
from kvm.errors import UsageError
from kvm.manage import disks

PROG = "vmdisk"
VERBS = ("list", "add", "grow", "detach")
WORDS = {"list": 0, "add": 1, "grow": 2, "detach": 1}   # verb -> the words it takes after NAME
USAGE = "list NAME | add NAME SIZE | grow NAME DISK SIZE | detach NAME DISK"


def build_parser():
    p = common.parser(PROG, "A VM's disks. list NAME: every disk (the main Disk and each Devices disk) with "
                            "its slot, driver, size and space used; add NAME SIZE: a new file diskN in the "
                            "VM folder at the lowest free slot (at once on a running qemu VM with Hotplug "
                            "ports, else from the next boot); grow NAME DISK SIZE: never smaller, refused "
                            "while the VM runs unless the hypervisor resizes online; detach NAME DISK: out "
                            "of set.conf, the file kept unless --destroy (refused while the VM runs). DISK "
                            "is a disk as list names it, its file or its slot.",
                      dry_run=True, intermixed=True)
    p.add_argument("verb", choices=VERBS, help="list, add, grow or detach")
    p.add_argument("name", help="VM name")
    p.add_argument("words", nargs="*", metavar="DISK|SIZE", help="add: SIZE; grow: DISK SIZE; detach: DISK")
    p.add_argument("--driver", default="nvme", choices=disks.DRIVERS, help="add: the emulation (default nvme)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--sparse", action="store_true", help="add: a sparse file (the default)")
    how.add_argument("--thick", action="store_true", help="add: every block written now (zeros)")
    p.add_argument("--zvol", action="store_true",
                   help="add: a zvol ROOT/vm/NAME/diskN (volmode=dev) instead of a file; not on zfs-fuse")
    p.add_argument("--destroy", action="store_true", help="detach: remove the file (or zvol) too")
    p.add_argument("-H", dest="scripted", action="store_true", help="list: no header, tab-separated")
    p.add_argument("-p", dest="parsable", action="store_true", help="list: exact numbers (bytes)")
    p.add_argument("--json", action="store_true", help="list: JSON")
    return p


def body(args):
    if len(args.words) != WORDS[args.verb]:
        raise UsageError(f"{args.verb} takes {WORDS[args.verb] or 'no'} word(s) after NAME (vmdisk {USAGE})")
    vm = common.get_vm(args, root_user=args.verb != "list")
    return DO[args.verb](vm, args)


def do_list(vm, args):
    found = disks.disks(vm)
    if args.json:
        jsonout.emit([{"disk": d.id, "slot": d.slot, "driver": d.driver, "path": d.path, "kind": d.kind,
                       "size": d.size, "used": d.used, "main": d.main, "inside": d.inside} for d in found])
        return 0
    number = (lambda n: "-" if n is None else str(n)) if args.parsable or args.scripted else disks.human
    rows = [(d.id, d.slot, d.driver, number(d.size), number(d.used), d.kind, d.path) for d in found]
    common.print_table(("DISK", "SLOT", "DRIVER", "SIZE", "USED", "KIND", "PATH"), rows, args.scripted)
    return 0


def do_add(vm, args):
    size = disks.parse_size(vm, args.words[0])
    done = disks.add(vm, size, args.driver, thick=args.thick, zvol=args.zvol)
    what = f"disk {done.file} ({disks.human(size)}, {done.driver}) at slot {done.slot}"
    common.said(args, f"{vm.name}: added {what}", f"{vm.name}: would add {what}")
    if done.online:
        common.info(f"{vm.name} is running: the guest has the disk now (hot-plugged)")
    elif done.later and not host.dry_run():
        common.info(f"{vm.name} is running: {done.later}; the disk is there from the next start")
    return 0


def do_grow(vm, args):
    size = disks.parse_size(vm, args.words[1])
    done = disks.grow(vm, args.words[0], size)
    if done.size == done.disk.size:
        common.info(f"{vm.name}: disk {done.disk.id} is already {disks.human(size)}; nothing changed")
        return 0
    what = f"disk {done.disk.id} from {disks.human(done.disk.size)} to {disks.human(size)}"
    common.said(args, f"{vm.name}: grew {what}", f"{vm.name}: would grow {what}")
    if done.online:
        common.info(f"{vm.name} is running: the guest was told the new size")
    return 0


def do_detach(vm, args):
    disk = disks.detach(vm, args.words[0], destroy=args.destroy)
    kept = "destroyed" if args.destroy else f"kept as {disk.path}"
    common.said(args, f"{vm.name}: detached disk {disk.id} (slot {disk.slot}; file {kept})",
                f"{vm.name}: would detach disk {disk.id} (slot {disk.slot})")
    return 0


DO = {"list": do_list, "add": do_add, "grow": do_grow, "detach": do_detach}
