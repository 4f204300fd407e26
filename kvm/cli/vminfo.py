"""vminfo NAME [--json]: what the VM is and whether it runs."""

from kvm.cli import common, jsonout
from kvm.conf.reach import of_info
from kvm.hypervisor import current as hypervisor
from kvm.manage import info

PROG = "vminfo"


def build_parser():
    p = common.parser(PROG, "Show a VM: running state (pid, start, uptime), loader, cores, memory, "
                            "options, disk, ISO, VNC, console, devices (bridge and MAC of taps, "
                            "pciconf description of passthru devices). No root needed.")
    p.add_argument("--json", action="store_true", help="print a JSON object (see README for the schema)")
    p.add_argument("name", help="VM name")
    return p


def body(args):
    vm = common.get_vm(args)
    data = info.collect(vm)
    for line in [*data["warnings"], *filter(None, [of_info(data)])]:
        common.warn(PROG, line, vm=vm.name)
    if args.json:
        jsonout.emit(data, sort_keys=True)
        return 0
    rows = info.lines(data, cleanup=hypervisor().cleanup_hint(vm.run))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}} {value}")
    return 0
