"""vmexport NAME FILE|- [--snapshot SNAP] [--incremental-from SNAP] [--compress zstd|none]."""

import sys

from kvm import platform
from kvm.cli import common
from kvm.migrate import archive
from kvm.migrate.send import Progress

PROG = "vmexport"


def build_parser():
    p = common.parser(PROG, "Export a VM into one file (or stdout, '-'): a manifest (name, set.conf, "
                            "snapshots, pinned firmware hashes, kvm version) and the zfs send stream of "
                            "each of its datasets, with their sizes and sha256 (kvm(8), FILES). A running "
                            "VM is exported from a new snapshot without stopping it; vmexport-STAMP "
                            "snapshots are kept, as the base of a later --incremental-from. Progress on a "
                            "terminal.")
    p.add_argument("name", help="VM name")
    p.add_argument("file", metavar="FILE", help="the export file to write (never an existing one), or - for stdout")
    p.add_argument("--snapshot", metavar="SNAP", help="export this snapshot (default: a new vmexport-STAMP one)")
    p.add_argument("--incremental-from", metavar="SNAP",
                   help="only what changed since SNAP (vmrestore applies it onto a VM holding SNAP)")
    p.add_argument("--compress", default="none", choices=("zstd", "none"),
                   help="compress the streams with zstd (it must be installed); default none")
    return p


def progress_for(name, estimate):
    """Progress lines (bytes, rate, time left) when stderr is a terminal, else None."""
    return Progress(common.info, name, estimate) if common.is_terminal(sys.stderr) else None


def body(args):
    vm = common.get_vm(args, root_user=True)
    archive.check_compressor(args.compress, platform.current().install_command)
    cfg = vm.config()
    progress = None
    if common.is_terminal(sys.stderr):
        from kvm import zfs
        used = int(zfs.get_prop(vm.dataset(), "referenced") or 0)
        progress = Progress(common.info, vm.name, used)
    info = archive.export(vm, cfg, args.file, args.snapshot, args.incremental_from, args.compress, progress,
                          say=common.info)
    what = f"increment {info['base']}..{info['snapshot']}" if info["base"] else f"snapshot {info['snapshot']}"
    where = "stdout" if args.file == "-" else args.file
    common.info(f"{vm.name}: exported {what} ({len(info['streams'])} stream(s)) to {where}")
    return 0
