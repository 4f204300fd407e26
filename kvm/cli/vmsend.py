"""vmsend NAME DEST: migrate (warm by default, or --cold) or replicate (--copy) a VM to another root."""

from kvm import host
from kvm.cli import common
from kvm.errors import UsageError
from kvm.migrate.send import Dest, Sender
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
        sender = Sender(vm, dest, mode, common.info, start=not args.no_start, keep=args.keep, peer=peer,
                        force=args.force)
        return _carry_out(args, vm, dest, mode, sender)
    finally:
        peer.abandon()  # one never asked to receive (a refusal here, a dry run) has only looked
        if sender:
            sender.close()


def _carry_out(args, vm, dest, mode, sender):
    if args.dry_run:
        print("\n".join(sender.plan_lines()))
        return 0
    if sender.running and mode != "copy" and not common.confirm(f"stop {vm.name} here to move it", args.yes):
        print(f"{vm.name}: nothing sent")
        return 1
    downtime = sender.run()
    done = {"copy": "copied to", "warm": "migrated to", "cold": "migrated to"}[mode]
    print(f"{vm.name}: {done} {dest.label}" + (f"; downtime {downtime:.2f}s" if downtime is not None else ""))
    return 0
