"""vmrecv NAME: the receiving side of vmsend (run by it over ssh or locally; not for hands)."""

import json

from kvm.cli import common
from kvm.migrate import receive
from kvm.vm import check_name

PROG = "vmrecv"


def build_parser():
    p = common.parser(PROG, "The far side of vmsend: print what this root holds of the VM as one JSON line, "
                            "read the sender's request line on stdin (`recv SNAP BASE|- SOURCE`, or `resume "
                            "...` for the rest of a partial receive), receive the stream after it into "
                            "ROOT/vm/NAME; refuse a name that is not an earlier copy of the same VM; leave "
                            "this root as it was on any failure.")
    p.add_argument("name", help="VM name")
    p.add_argument("--no-lock", action="store_true",
                   help="do not take the VM's lock (what vmsend --local of earlier versions asked, "
                        "when the roots of a host shared one lock per VM name)")
    return p


def body(args):
    check_name(args.name)
    root = common.get_root(args)
    print(json.dumps(receive.probe(root, args.name)), flush=True)
    request = receive.read_request(args.name)
    if request is None:
        return 0  # the sender planned only (a dry run) or refused: nothing asked, nothing done
    verb, snap, base, source, force = request
    receive.check_name_args(args.name, snap, base)
    common.need_root_user(args.name)
    try:
        warnings = receive.receive(root, args.name, source, snap, base, locked=not args.no_lock,
                                   resume=verb == "resume", force=force)
    except receive.PartialKept:
        print(receive.PARTIAL_KEPT, flush=True)
        raise
    for line in warnings:
        print(f"warning: {line}")
    print(f"received {args.name}@{snap} into {root.vm_dir / args.name}")
    return 0
