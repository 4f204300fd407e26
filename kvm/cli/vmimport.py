"""vmimport --from vm-bhyve|shell-kvm DIR [NAME] [--move]: a VM of another manager as a kvm VM."""

import os

from kvm.cli import common
from kvm.manage import importers

PROG = "vmimport"


def build_parser():
    p = common.parser(PROG, "Make a kvm VM of another manager's VM folder. vm-bhyve: DIR is the guest's "
                            "folder (DIR/NAME.conf); its settings are mapped onto set.conf and run, its "
                            "disks referenced where they are (or moved with --move). shell-kvm: DIR holds "
                            "set.conf and run, which are copied as they are with every file of the folder "
                            "(moved with --move). What could not be mapped is printed and kept in "
                            "vmimport.txt in the VM folder. A failure leaves nothing behind.",
                      dry_run=True)
    p.add_argument("--from", dest="source", required=True, choices=("vm-bhyve", "shell-kvm"),
                   help="the manager the VM comes from")
    p.add_argument("dir", help="the VM's folder")
    p.add_argument("name", nargs="?", help="the new VM's name (default: the folder's name)")
    p.add_argument("--move", action="store_true",
                   help="move the disk files (vm-bhyve) or every file (shell-kvm) into the VM's dataset "
                        "instead of referencing or copying them; removed only once the VM exists")
    p.add_argument("--allow-path", action="append", default=[], metavar="PATH",
                   help="a disk outside the guest's folder (an absolute or '..' path in its settings, or a "
                        "link leading out) that the VM may use in place: never copied, moved or removed; "
                        "written to AllowPath (repeatable)")
    return p


def body(args):
    args.name = args.name or os.path.basename(os.path.normpath(args.dir))  # errors name the VM
    common.need_root_user(args.name)
    vm, plan, warnings = importers.import_vm(common.get_root(args), args.source, args.dir, args.name,
                                             args.move, args.allow_path)
    for line in warnings:
        common.warn(PROG, line, vm=vm.name)
    dry = args.dry_run  # a dry run says what it would do, report included
    print(f"{'would import' if dry else 'imported'} {vm.name} from {plan.origin} into {vm.dir}")
    for line in plan.report:
        print(f"  not mapped: {line}")
    if plan.report:
        print(f"({len(plan.report)} {'to be kept' if dry else 'kept'} in {vm.dir / importers.REPORT})")
    moved = sum(1 for _, _, remove in plan.files if remove)
    if moved:
        print(f"{'would move' if dry else 'moved'} {moved} file(s) into {vm.dir}")
    return 0
