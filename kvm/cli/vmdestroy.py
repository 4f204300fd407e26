"""vmdestroy NAME [-y] [-f]: destroy a VM, its data and snapshots, and our rc.d script."""

import sys

from . import common

PROG = "vmdestroy"


def build_parser():
    p = common.parser(PROG, "Destroy the VM's dataset recursively (disk, files, snapshots) and remove "
                            "our rc.d script and its rc.conf variable. Asks first.", dry_run=True)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("-f", "--force", action="store_true", help="stop the VM first if it runs")
    p.add_argument("name", help="VM name")
    return p


def body(args):
    from .. import rcd, vm as vmmod, zfs
    from ..power import ensure_stopped
    vm = common.get_vm(args, root_user=True)
    dataset = vm.dataset()
    if not zfs.lzc_exists(dataset):
        from ..errors import StateError
        raise StateError(f"{vm.dir} is not the dataset {dataset}: not destroying a plain folder", vm=vm.name)
    rt = vmmod.runtime(vm)
    if (rt.active or rt.allocated) and not args.force:
        ensure_stopped(vm, False, PROG)
    script = rcd.our_script(vm.name)
    common.info(f"This destroys {dataset} with every file and snapshot in it, for good.")
    if script:
        common.info(f"It also removes {script.path} and {script.rcvar} from rc.conf.")
    if not common.confirm(f"Destroy VM {vm.name}", args.yes or args.dry_run):
        common.info("Nothing done.")
        return 1
    how = ensure_stopped(vm, args.force, PROG)
    if how:
        common.info(f"{vm.name}: stopped ({how})")
    zfs.destroy_recursive(dataset)
    if script:
        rcd.remove_script(script)
    if not args.dry_run:
        print(f"destroyed {vm.name} ({dataset})")
    return 0


def main(argv=None, launcher_dir=None):
    return common.run(PROG, build_parser, body, sys.argv[1:] if argv is None else argv, launcher_dir)
