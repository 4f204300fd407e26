"""vmrename OLD NEW [-f]: rename a VM."""

import sys

from . import common

PROG = "vmrename"


def build_parser():
    p = common.parser(PROG, "Rename a VM: its dataset, the name on comment lines of set.conf and run "
                            "(tap names and values stay), our rc.d script and its rc.conf variable.",
                      dry_run=True)
    p.add_argument("-f", "--force", action="store_true", help="stop the VM first if it runs")
    p.add_argument("old", help="current VM name")
    p.add_argument("new", help="new VM name")
    return p


def body(args):
    from ..power import ensure_stopped
    from ..rename import check, rename
    vm = common.get_vm(args, root_user=True, name=args.old)
    root = vm.root
    check(root, vm, args.new)
    how = ensure_stopped(vm, args.force, PROG)
    if how:
        common.info(f"{vm.name}: stopped ({how})")
    target = rename(root, vm, args.new)
    if not args.dry_run:
        print(f"renamed {args.old} to {args.new} ({target.dir})")
        common.info("Interface names in set.conf and run (taps, bridges) were left as they were.")
    return 0


def main(argv=None, launcher_dir=None):
    return common.run(PROG, build_parser, body, sys.argv[1:] if argv is None else argv, launcher_dir)
