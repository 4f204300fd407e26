"""vmrename OLD NEW [-f]: rename a VM."""

from kvm import vm as vmmod
from kvm.cli import common
from kvm.errors import NotFound
from kvm.manage.rename import check, rename, resume
from kvm.run.power import ensure_stopped

PROG = "vmrename"


def build_parser():
    p = common.parser(PROG, "Rename a VM: its dataset, the name on comment lines of set.conf and run "
                            "(tap names and values stay), the paths of its zvols (/dev/zvol/ROOT/vm/OLD/... "
                            "becomes .../NEW/...), our rc.d script and its rc.conf variables. "
                            "Run it again to complete a rename that was interrupted.",
                      dry_run=True)
    p.add_argument("-f", "--force", action="store_true", help="stop the VM first if it runs")
    p.add_argument("old", help="current VM name")
    p.add_argument("new", help="new VM name")
    return p


def body(args):
    vmmod.check_name(args.old)
    vmmod.check_name(args.new, "new VM name")
    root = common.get_root(args)
    try:
        vm = vmmod.get_vm(root, args.old)
    except NotFound:
        common.need_root_user(args.old)
        target = resume(root, args.old, args.new)  # a killed vmrename OLD NEW: finish it
    else:
        common.need_root_user(vm.name)
        check(root, vm, args.new)
        how = ensure_stopped(vm, args.force, PROG)
        if how:
            common.info(f"{vm.name}: would stop it first" if args.dry_run else f"{vm.name}: stopped ({how})")
        target = rename(root, vm, args.new)
    common.said(args, f"renamed {args.old} to {args.new} ({target.dir})",
                f"would rename {args.old} to {args.new} ({target.dir})")
    if not args.dry_run:
        common.info("Interface names in set.conf and run (taps, bridges) were left as they were.")
    return 0
