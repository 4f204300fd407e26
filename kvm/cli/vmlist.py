"""vmlist [-H] [-p] [-o COL,...] [-s COL] [-S COL] [--json]: the VMs, as `zfs list` lists datasets."""

from kvm import vm as vmmod
from kvm.cli import common, jsonout
from kvm.hypervisor import current as hypervisor
from kvm.manage import listing
from kvm.manage.listing import COLUMNS, DEFAULT

PROG = "vmlist"


def build_parser():
    p = common.parser(PROG, "List the VMs, running ones first, one line each. No root needed. "
                            f"Columns: {','.join(COLUMNS)} (default {','.join(DEFAULT)}).")
    p.add_argument("-H", dest="scripted", action="store_true", help="no header, tab-separated (like zfs -H)")
    p.add_argument("-p", dest="parsable", action="store_true",
                   help="exact numbers: memory and disk in bytes, uptime in seconds, start time in epoch seconds")
    p.add_argument("-o", dest="columns", metavar="COL,...", help="the columns to show, in this order")
    p.add_argument("-s", dest="sort", metavar="COL", action="append", type=lambda v: (v, False), default=[],
                   help="sort by this column, ascending (numbers as numbers; repeat for more keys)")
    p.add_argument("-S", dest="sort", metavar="COL", action="append", type=lambda v: (v, True),
                   help="sort by this column, descending")
    p.add_argument("--json", action="store_true", help="print a JSON array with every column (numbers exact)")
    return p


def body(args):
    shown = listing.columns(args.columns) if args.columns is not None else listing.DEFAULT
    keys = [(listing.columns(name, "-S" if down else "-s")[0], down) for name, down in args.sort]
    root = common.get_root(args)
    rows, warnings = listing.rows(root)
    rows = listing.sort_rows(rows, keys)
    for name, text in warnings:
        common.warn(PROG, text, vm=name)
    hv = hypervisor()
    for r in rows:
        if r.state == "orphaned":
            common.warn(PROG, f"bhyve runs without its supervisor: `stop {r.name}` powers it off", vm=r.name)
        elif r.state == "allocated":
            common.warn(PROG, f"left allocated with no bhyve: clean with `{hv.cleanup_hint(vmmod.Vm(root, r.name).run)}`", vm=r.name)
    if args.json:
        accel = hv.accelerator() if rows else None
        jsonout.emit([dict(listing.as_json(r), hypervisor=hv.name, accelerator=accel) for r in rows])
        return 0
    table = [[listing.cell(r, c, args.parsable) for c in shown] for r in rows]
    common.print_table([c.upper() for c in shown], table, args.scripted)
    return 0
