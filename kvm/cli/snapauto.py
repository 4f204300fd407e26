"""snap auto NAME|--all [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N]:
the scheduled snapshots (kvm/storage/snapauto.py has the keep rule), as periodic(8) or cron runs them."""

import sys
import time

from kvm import vm as vmmod
from kvm.cli import common
from kvm.errors import KvmError, UsageError
from kvm.storage.snapauto import DEFAULT_KEEP, check_keep, run

PROG = "snap"


def add_args(p):
    """snap's parser gets --all and the keep counts."""
    p.add_argument("--all", action="store_true", help="auto: every VM of the root")
    units = {"hourly": "hours", "daily": "days", "weekly": "ISO weeks", "monthly": "months"}
    for rule, count in DEFAULT_KEEP.items():
        p.add_argument(f"--keep-{rule}", type=int, metavar="N",
                       help=f"auto: keep the newest auto- snapshot of each of the N latest {units[rule]} "
                            f"that have one (default {count})")


def vms(args):
    """The VMs a `snap auto` works on: NAME, or every VM with --all."""
    if args.all == bool(args.name):
        raise UsageError("auto needs a VM name or --all (not both)")
    if args.all:
        common.need_root_user()
        return vmmod.list_vms(common.get_root(args))
    return [common.get_vm(args, root_user=True)]


def do_auto(args):
    """One set per VM, then the prune; with --all a VM that fails is reported and the others go on."""
    keep = check_keep({rule: getattr(args, f"keep_{rule}") if getattr(args, f"keep_{rule}") is not None
                       else count for rule, count in DEFAULT_KEEP.items()})
    if args.snap:
        raise UsageError(f"auto names its snapshots itself (auto-YYYYmmdd-HHMM): drop '{args.snap}'",
                         vm=args.name)
    now = time.time()  # one name for every VM of this run
    failed = 0
    for vm in vms(args):
        try:
            one(vm, keep, now, args.dry_run)
        except KvmError as exc:
            if not args.all:
                raise
            exc.vm = exc.vm or vm.name
            print(exc.line(PROG), file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def one(vm, keep, now, dry_run):
    if vmmod.runtime(vm).active:
        common.warn(PROG, "the VM is running: its auto- snapshot is crash-consistent", vm=vm.name)
    p = run(vm, keep, now)
    would = "would " if dry_run else ""
    if p.taken:
        print(f"{would}{'create' if dry_run else 'created'} {vm.name}@{p.take}")
    else:
        common.info(f"{vm.name}@{p.take} exists already (one auto- snapshot a minute): not taken again")
    for name in p.cloned:
        common.warn(PROG, f"keeping {name}: clones depend on it", vm=vm.name)
    for s in p.destroy:
        print(f"{would}{'destroy' if dry_run else 'destroyed'} {vm.name}@{s.name}")
