"""insert NAME ISO: set ISO= in the VM's set.conf."""

import os

from kvm import vm as vmmod
from kvm.cli import common
from kvm.conf import config, edit
from kvm.errors import NotFound, UsageError

PROG = "insert"


def build_parser():
    p = common.parser(PROG, "Insert an ISO image: set ISO= in set.conf (the old file is kept as "
                            "set.conf.sav). A running VM sees it at its next guest reboot.", dry_run=True)
    p.add_argument("name", help="VM name")
    p.add_argument("iso", help="ISO file (absolute, or relative to the current folder or the VM folder)")
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
    if not os.path.isfile(path):
        raise NotFound(f"ISO '{given}' does not exist (looked at {path})", vm=vm.name)
    return value


def body(args):
    vm = common.get_vm(args, root_user=True)
    value = resolve_iso(vm, args.iso)
    changed = edit.apply(vm, lambda text: config.set_value(text, "ISO", value), "insert")
    if not changed:
        common.info(f"{vm.name}: {value} is already inserted")
        return 0
    common.said(args, f"{vm.name}: inserted {value}", f"{vm.name}: would insert {value}")
    if vmmod.runtime(vm).active and not args.dry_run:
        common.info(f"{vm.name} is running: the ISO is used from its next guest reboot "
                    f"(the supervisor re-reads set.conf), or the next start.")
    return 0
