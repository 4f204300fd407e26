"""insert NAME ISO: set ISO= in the VM's set.conf."""

import os

from kvm import vm as vmmod
from kvm.cli import common
from kvm.conf import config, edit
from kvm.errors import KvmError, NotFound, UsageError

PROG = "insert"


def build_parser():
    p = common.parser(PROG, "Insert an ISO image: set ISO= in set.conf (the old file is kept as "
                            "set.conf.sav). A running VM sees it at its next guest reboot.", dry_run=True)
    p.add_argument("name", help="VM name")
    p.add_argument("iso", help="ISO file (absolute, or relative to the current folder or the VM folder)")
    p.add_argument("--allow-path", action="store_true",
                   help="allow this file although it lies outside the VM folder and ROOT/iso (or is no ISO "
                        "image there): its path is added to AllowPath in set.conf")
    return p


def resolve_iso(vm, given):
    """The ISO value to write: absolute when given from the current folder, else as in the VM folder."""
    if not given:
        raise UsageError(f"ISO {given!r} is not a file name", vm=vm.name)
    edit.check_value(vm, "ISO", given)   # a CR or newline: the value is named, not a line of set.conf
    if os.path.isabs(given):
        path, value = given, given
    elif os.path.exists(given):
        path = value = os.path.abspath(given)
    else:
        path, value = str(vm.dir / given), given
    if not os.path.exists(path):
        raise NotFound(f"ISO '{given}' does not exist (looked at {path})", vm=vm.name)
    if not os.path.isfile(path):
        raise KvmError(f"ISO '{given}' is not a regular file ({path})", vm=vm.name)
    return value


def with_iso(text, value, path, allow):
    """set.conf text with ISO=value; with allow, the ISO's path added to AllowPath too."""
    new = config.set_value(text, "ISO", value)
    if allow:
        entries = config.read_plain(text).values.get("AllowPath", "").split()
        if path not in entries:
            new = config.set_value(new, "AllowPath", " ".join(entries + [path]))
    return new


def body(args):
    vm = common.get_vm(args, root_user=True)
    value = resolve_iso(vm, args.iso)
    path = os.path.join(vm.dir, value)  # an absolute value stays itself
    edited = []

    def change(text):
        edited.append(with_iso(text, value, path, args.allow_path))
        return edited[-1]
    changed = edit.apply(vm, change, "insert")
    if not changed:
        common.info(f"{vm.name}: {value} is already inserted")
        return 0
    for line in config.check_paths(edit.check_text(vm, edited[-1]))[1]:
        if line.startswith("ISO="):
            common.warn(PROG, line, vm=vm.name)
    common.said(args, f"{vm.name}: inserted {value}", f"{vm.name}: would insert {value}")
    if vmmod.runtime(vm).active and not args.dry_run:
        common.info(f"{vm.name} is running: the ISO is used from its next guest reboot "
                    f"(the supervisor re-reads set.conf), or the next start.")
    return 0
