"""status NAME: the bhyve pid, 0 when stopped, -1 when the VM does not exist."""

from kvm import vm as vmmod
from kvm.cli import common, jsonout
from kvm.errors import NotFound

PROG = "status"
EXIT = {"running": 0, "orphaned": 0}


def build_parser():
    p = common.parser(PROG, "Print the VM's bhyve pid, 0 when it is not running, -1 when it does not "
                            "exist. Exit status: 0 running, 1 not running, 2 no such VM. No root needed.")
    p.add_argument("--json", action="store_true", help="print a JSON object instead")
    p.add_argument("name", help="VM name")
    return p


def body(args):
    vmmod.check_name(args.name)
    root = common.get_root(args)
    try:
        vm = vmmod.get_vm(root, args.name)
    except NotFound:
        if args.json:
            jsonout.emit({"name": args.name, "exists": False, "state": "missing", "pid": -1}, indent=None)
        else:
            print(-1)
        return 2
    rt = vmmod.runtime(vm)
    if args.json:
        jsonout.emit({"name": vm.name, "exists": True, "state": rt.state, "pid": rt.bhyve,
                      "supervisor": rt.supervisor, "allocated": rt.allocated}, indent=None)
    else:
        print(rt.bhyve)
    return EXIT.get(rt.state, 1)
