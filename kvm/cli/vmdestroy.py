"""vmdestroy NAME [-y] [-f]: destroy a VM, its data and snapshots, and our rc.d script."""

from kvm import host
from kvm import vm as vmmod
from kvm.cli import common, jsonout
from kvm.errors import KvmError
from kvm.manage import destroy
from kvm.run.power import ensure_stopped

PROG = "vmdestroy"


def build_parser():
    p = common.parser(PROG, "Destroy the VM's dataset recursively (disk, files, snapshots) and remove "
                            "our rc.d script and its rc.conf variables. Asks first.", dry_run=True)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("-f", "--force", action="store_true", help="stop the VM first if it runs")
    p.add_argument("-R", dest="recursive", action="store_true",
                   help="also destroy the VMs and images cloned from this VM's snapshots (asks first)")
    p.add_argument("--json", action="store_true",
                   help="print what was destroyed as a JSON object (kvm(8) JSON OUTPUT)")
    p.add_argument("name", help="VM name")
    return p


def body(args):
    vmmod.check_name(args.name)
    if host.is_root():  # only root's vmdestroy could have left one (and only root may look at the dataset)
        destroy.wait_left_destroy(common.get_root(args), args.name, common.info)
    vm = common.get_vm(args, root_user=True)
    dataset = destroy.dataset_of(vm)
    destroy.check_not_busy(vm)
    users = destroy.check_no_clones(vm, args.recursive)
    rt = vmmod.runtime(vm)
    if (rt.active or rt.allocated) and not args.force:
        ensure_stopped(vm, False, PROG)
    script = destroy.script_of(vm)
    common.info(f"This destroys {dataset} with every file and snapshot in it, for good.")
    if users:
        common.info(f"With -R it first destroys its clones too: {', '.join(users)}.")
    if script:
        common.info(f"It also removes the systemd unit {script.path} and its link." if script.unit else
                    f"It also removes {script.path} and {script.rcvar} from rc.conf.")
    if not common.confirm(f"Destroy VM {vm.name}", args.yes or args.dry_run):
        if args.json:
            raise KvmError("nothing done (not confirmed)", vm=vm.name, hint=f"vmdestroy -y {vm.name}")
        common.info("Nothing done.")
        return 1
    how = ensure_stopped(vm, args.force, PROG)
    if how:
        common.info(f"{vm.name}: would stop it first" if args.dry_run else f"{vm.name}: stopped ({how})")
    for user in users:  # each clone's own lock refuses it while it runs
        common.info(f"would destroy clone {user}" if args.dry_run else f"destroying clone {user}")
    destroy.destroy_dependents(vm, users)
    destroy.destroy(vm)
    if args.json:
        jsonout.emit({"vm": vm.name, "dataset": dataset, "destroyed": users + [dataset], "stopped": how or None,
                      "script": str(script.path) if script else None, "changed": True,
                      "dry_run": bool(args.dry_run)})
        return 0
    common.said(args, f"destroyed {vm.name} ({dataset})", f"would destroy {vm.name} ({dataset})")
    return 0
