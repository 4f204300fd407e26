"""vmsend NAME DEST: migrate (warm by default, or --cold) or replicate (--copy) a VM to another root."""

import sys

from kvm import host
from kvm.cli import common, jsonout
from kvm.errors import KvmError, UsageError
from kvm.migrate.send import Dest, Sender, migrated_to
from kvm.vm import check_name

PROG = "vmsend"


def build_parser():
    p = common.parser(PROG, "Send the VM's dataset to another kvm root with zfs send/receive: over ssh to "
                            "DEST=[user@]host[:ROOT] (kvm must be installed there; ROOT defaults to its "
                            "marked install), or to a second root on this host with --local ROOT. Default: "
                            "warm migration (send while it runs, stop, send the rest, start it on DEST, "
                            "mark it kvm:migrated here). Progress on stderr.")
    p.add_argument("name", help="VM name")
    p.add_argument("dest", nargs="?", help="[user@]host[:ROOT]")
    p.add_argument("--local", metavar="ROOT", help="a kvm install root on this host instead of ssh")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--cold", action="store_true", help="stop first, then send once")
    how.add_argument("--copy", action="store_true", help="replicate only: the VM keeps running here")
    p.add_argument("--no-start", action="store_true", help="do not start the VM on DEST")
    p.add_argument("--keep", action="store_true", help="leave the source startable (no kvm:migrated mark)")
    p.add_argument("--force", action="store_true",
                   help="send into DEST's copy even though it was started there since the last send, or "
                        "holds snapshots made there (the receive rolls those changes back)")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="print the pipelines with sizes estimated by zfs, change nothing")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask before stopping a running VM")
    p.add_argument("--ssh-opt", action="append", default=[], metavar="OPT",
                   help="an ssh -o option (repeatable); the ssh command itself is KVM_SSH (default ssh)")
    p.add_argument("--remote-kvm", default="kvm", metavar="CMD",
                   help="the kvm command on DEST (default: kvm)")
    p.add_argument("--json", action="store_true",
                   help="print the result as a JSON object; a VM migrated to DEST already is \"changed\": "
                        "false with exit 0 (kvm(8) JSON OUTPUT)")
    # DEST is optional (--local instead), and argparse gives an optional positional its empty
    # match at once: `vmsend web --ssh-opt X host` would call host an unrecognized argument
    p.parse_args = p.parse_intermixed_args
    return p


def _here(command, argv):
    """A kvm command run in this process (vmsend --local forks it for vmrecv)."""
    from kvm import cli
    return cli.main(command, argv)


def body(args):
    check_name(args.name)
    if bool(args.dest) == bool(args.local):
        raise UsageError("give DEST or --local ROOT (one of them)", vm=args.name)
    dest = Dest(args.dest, args.local, args.ssh_opt, args.remote_kvm, here=_here)
    peer = dest.peer(args.name)  # vmrecv there boots while we look at the VM here
    sender = None
    try:
        host.set_dry_run(False)  # the probe of DEST is a command too: --dry-run changes nothing itself
        vm = common.get_vm(args, root_user=not args.dry_run)
        if args.local and str(vm.root.path) == dest.root:
            raise UsageError(f"--local {args.local} is this VM's own root", vm=vm.name)
        mode = "copy" if args.copy else "cold" if args.cold else "warm"
        if args.json and mode != "copy" and migrated_to(vm) == dest.label:
            # --json: a VM migrated to DEST already is a result (the text form refuses it, 8)
            jsonout.emit(sent_json(vm, dest, mode, changed=False))
            return 0
        sender = Sender(vm, dest, mode, common.info, start=not args.no_start, keep=args.keep, peer=peer,
                        force=args.force)
        return _carry_out(args, vm, dest, mode, sender)
    finally:
        peer.abandon()  # one never asked to receive (a refusal here, a dry run) has only looked
        if sender:
            sender.close()


def sent_json(vm, dest, mode, changed, sender=None, downtime=None, dry_run=False):
    """vmsend --json's object: where, how, the bytes relayed, the downtime (null when the VM did
    not stop), whether it was started on DEST and whether the source is marked migrated."""
    migrated = mode != "copy" and changed and not (sender and sender.keep)
    return {"vm": vm.name, "dest": dest.label, "mode": mode, "bytes": sender.sent if sender else 0,
            "downtime_s": None if downtime is None else round(downtime, 3),
            "started": bool(sender and sender.start and downtime is not None),
            "migrated": migrated or not changed, "changed": changed, "dry_run": dry_run}


def _carry_out(args, vm, dest, mode, sender):
    if args.dry_run:
        print("\n".join(sender.plan_lines()), file=sys.stderr if args.json else sys.stdout)
        if args.json:
            jsonout.emit(sent_json(vm, dest, mode, changed=True, sender=sender, dry_run=True))
        return 0
    if sender.running and mode != "copy" and not common.confirm(f"stop {vm.name} here to move it", args.yes):
        if args.json:
            raise KvmError("nothing sent (not confirmed)", vm=vm.name, hint=f"vmsend -y {vm.name}")
        print(f"{vm.name}: nothing sent")
        return 1
    downtime = sender.run()
    if args.json:
        jsonout.emit(sent_json(vm, dest, mode, changed=True, sender=sender, downtime=downtime))
        return 0
    done = {"copy": "copied to", "warm": "migrated to", "cold": "migrated to"}[mode]
    print(f"{vm.name}: {done} {dest.label}" + (f"; downtime {downtime:.2f}s" if downtime is not None else ""))
    return 0
