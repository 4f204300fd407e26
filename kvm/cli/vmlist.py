"""vmlist [-H] [-p] [--json]: running VMs first, then the others."""

import json
import time

from . import common

PROG = "vmlist"
ORDER = {"running": 0, "orphaned": 1, "starting": 2, "allocated": 3, "stopped": 4}


def build_parser():
    p = common.parser(PROG, "List the VMs: running ones first (name, state, pid, start time), then the "
                            "others. No root needed.")
    p.add_argument("-H", dest="scripted", action="store_true", help="no header, tab-separated (like zfs -H)")
    p.add_argument("-p", dest="parsable", action="store_true", help="start time as seconds since the epoch")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    return p


def when(epoch, parsable):
    if not epoch:
        return "-"
    if parsable:
        return str(int(epoch))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def body(args):
    from .. import vm as vmmod
    from ..hypervisor import current as hypervisor
    root = common.get_root(args)
    rows = vmmod.runtimes(vmmod.list_vms(root))
    rows.sort(key=lambda r: (ORDER[r.state], r.name))
    for r in rows:
        if r.state == "orphaned":
            common.warn(PROG, f"bhyve runs without its supervisor: `stop {r.name}` powers it off", vm=r.name)
        elif r.state == "allocated":
            common.warn(PROG, f"left allocated with no bhyve: clean with `{hypervisor().cleanup_hint(r.name)}`",
                        vm=r.name)
    if args.json:
        hv = hypervisor()
        accel = hv.accelerator() if rows else None
        print(json.dumps([{"name": r.name, "state": r.state, "pid": r.bhyve, "supervisor": r.supervisor,
                           "started": int(r.started) or None, "hypervisor": hv.name, "accelerator": accel}
                          for r in rows], indent=1))
        return 0
    table = [(r.name, r.state, str(r.bhyve or "-"), when(r.started, args.parsable)) for r in rows]
    common.print_table(("NAME", "STATE", "PID", "STARTED"), table, args.scripted)
    return 0
