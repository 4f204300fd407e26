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
    p.add_argument("--export-to", metavar="DIR",
                   help="auto: also vmexport the new auto- snapshot into DIR/NAME-auto-YYYYmmdd-HHMM.kvmexport, "
                        "keeping the newest --keep N files of each VM there")
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
    export_to = check_export_to(args)
    now = time.time()  # one name for every VM of this run
    failed = 0
    for vm in vms(args):
        try:
            one(vm, keep, now, args.dry_run, export_to, args.keep)
        except KvmError as exc:
            if not args.all:
                raise
            exc.vm = exc.vm or vm.name
            print(exc.line(PROG), file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def check_export_to(args):
    """--export-to DIR: an existing folder, with --keep N (N >= 1) saying how many files to keep;
    --keep alone is prune's, not auto's."""
    if args.export_to is None:
        if args.keep is not None:
            raise UsageError("auto: --keep N counts export files: give it with --export-to DIR "
                             "(the snapshots have --keep-hourly ...)", vm=args.name)
        return None
    import os
    if not os.path.isdir(args.export_to):
        raise UsageError(f"--export-to {args.export_to}: no such folder", vm=args.name)
    if args.keep is None or args.keep < 1:
        raise UsageError(f"--export-to needs --keep N (N >= 1: how many export files of each VM to keep), "
                         f"not {args.keep}", vm=args.name)
    return os.path.abspath(args.export_to)


def one(vm, keep, now, dry_run, export_to=None, keep_files=None):
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
    if export_to:
        export(vm, p.take, export_to, keep_files, dry_run)


def export(vm, snap, folder, keep_files, dry_run):
    """The auto- snapshot into FOLDER/NAME-SNAP.kvmexport, then the oldest such files beyond keep_files go."""
    import os
    from kvm.migrate import archive
    path = os.path.join(folder, archive.auto_file(vm.name, snap))
    if dry_run:
        print(f"would export {vm.name}@{snap} to {path}")
    elif os.path.exists(path):
        common.info(f"{path} exists already: not exported again")
    else:
        archive.export(vm, vm.config(), path, snapshot=snap)
        print(f"exported {vm.name}@{snap} to {path}")
    for old in archive.prune_exports(folder, vm.name, keep_files, dry_run):
        print(f"{'would remove' if dry_run else 'removed'} {old}")
