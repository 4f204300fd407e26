"""vmrestore FILE|- [NAME] [--force]: a VM back from a vmexport file."""

import sys

from kvm.cli import common
from kvm.migrate import archive
from kvm.migrate.send import Progress

PROG = "vmrestore"


def build_parser():
    p = common.parser(PROG, "Restore a VM from a vmexport file (or stdin, '-', spooled first into the "
                            "root's pool): the whole file is checked (end tag, length, sha256 of the "
                            "manifest and of every stream) before anything is received. A full export "
                            "makes a new VM (NAME, default the exported name); an incremental one is "
                            "applied onto the VM that holds its base snapshot. What a killed vmrestore "
                            "left is cleaned up by the next one, which says so. Progress on a terminal.")
    p.add_argument("file", metavar="FILE", help="the export file, or - for stdin")
    p.add_argument("name", nargs="?", help="VM name (default: the exported VM's)")
    p.add_argument("--force", action="store_true", help="replace an existing VM of that name (stopped)")
    return p


def body(args):
    common.need_root_user(args.name)
    root = common.get_root(args)
    if args.name:
        from kvm.vm import check_name
        check_name(args.name)
    archive.clean_leftovers(root, common.info)
    spooled = archive.spool_stdin(root) if args.file == "-" else None
    try:
        path = spooled or args.file
        tty = common.is_terminal(sys.stderr)
        import os
        size = os.path.getsize(path) if os.path.exists(path) else 0
        exp = archive.read(path, Progress(common.info, "checking", size) if tty else None)
        name = args.name or exp.info["name"]
        args.name = name
        warnings = archive.restore(root, exp, name, force=args.force,
                                   progress=Progress(common.info, name, size) if tty else None)
    finally:
        if spooled:
            from kvm import host
            host.remove_file(spooled)
    what = f"increment {exp.info['base']}..{exp.info['snapshot']}" if exp.info.get("base") else \
        f"snapshot {exp.info['snapshot']} of {exp.info['name']}"
    print(f"{name}: restored {what}")
    if exp.info["name"] != name:
        common.info(f"{name}: a copy of {exp.info['name']}: fresh MAC addresses, UEFI vars, TPM and cloud-init "
                    f"instance, its own tap names and zvol paths (restored as {exp.info['name']}, a VM keeps them)")
    for line in warnings:
        common.warn(PROG, line, vm=name)
    return 0
