"""vmclone SRC DST [--snapshot S] [-y] [--independent]: a new VM from another's snapshot."""

from kvm import vm as vmmod
from kvm.cli import common
from kvm.manage import clone

PROG = "vmclone"


def build_parser():
    p = common.parser(PROG, "Make VM DST a ZFS clone of VM SRC's snapshot (a new one, clone-DST-..., by "
                            "default): instant and without space. DST gets fresh MAC addresses, a fresh "
                            "UEFI vars file and SRC's tap names, comments and zvol paths rewritten for its name; "
                            "SRC's zvol disks (below its dataset) are cloned along; no "
                            "rc.d script, no run-time state. A running SRC gives a crash-consistent clone.",
                      dry_run=True)
    p.add_argument("src", help="the VM to clone")
    p.add_argument("dst", help="the new VM's name")
    p.add_argument("--snapshot", help="clone this existing snapshot of SRC")
    p.add_argument("--independent", action="store_true",
                   help="copy the files instead: DST does not depend on SRC's snapshot (takes time and space)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    return p


def body(args):
    src = common.get_vm(args, root_user=True, name=args.src)
    vmmod.check_name(args.dst, "new VM name")
    if vmmod.runtime(src).active:
        common.warn(PROG, "the VM is running: the clone is crash-consistent (like pulling the plug); "
                          "stop the VM for a clean one", vm=src.name)
    how = "a copy of" if args.independent else "a clone of"
    if not common.confirm(f"Create VM {args.dst} as {how} {src.name}", args.yes or args.dry_run):
        common.info("Nothing done.")
        return 1
    vm, origin = clone.clone(common.get_root(args), src, args.dst, args.snapshot, args.independent)
    common.said(args, f"created {vm.name} in {vm.dir} ({how} {origin})",
                f"would create {vm.name} in {vm.dir} ({how} {origin})")
    return 0
