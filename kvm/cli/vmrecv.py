"""vmrecv NAME: the receiving side of vmsend (run by it over ssh or locally; not for hands)."""

import json

from . import common

PROG = "vmrecv"


def build_parser():
    p = common.parser(PROG, "Receive a VM vmsend sends (its stream on stdin) into ROOT/vm/NAME; refuse a name "
                            "that is not an earlier copy of the same VM; leave this root as it was on any failure.")
    p.add_argument("name", help="VM name")
    p.add_argument("--source", required=True, help="the sending VM's identity (its dataset's guid)")
    p.add_argument("--probe", action="store_true", help="print what vmsend needs to plan, as JSON")
    p.add_argument("--snap", help="the snapshot the stream carries")
    p.add_argument("--base", help="the snapshot an incremental stream starts from")
    p.add_argument("--no-lock", action="store_true",
                   help="vmsend on this same host holds the VM's lock already (--local)")
    return p


def body(args):
    from .. import receive
    from ..errors import UsageError
    from ..vm import check_name
    check_name(args.name)
    root = common.get_root(args)
    if args.probe:
        print(json.dumps(receive.probe(root, args.name, args.source)))
        return 0
    if not args.snap:
        raise UsageError("--snap is required to receive", vm=args.name)
    receive.check_name_args(args.name, args.snap, args.base)
    common.need_root_user(args.name)
    warnings = receive.receive(root, args.name, args.source, args.snap, args.base, locked=not args.no_lock)
    for line in warnings:
        print(f"warning: {line}")
    print(f"received {args.name}@{args.snap} into {root.vm_dir / args.name}")
    return 0
