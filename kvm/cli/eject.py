"""eject NAME: remove ISO= from the VM's set.conf."""

from kvm import vm as vmmod
from kvm.cli import common
from kvm.conf import config, edit

PROG = "eject"


def build_parser():
    p = common.parser(PROG, "Eject the ISO image: remove ISO= from set.conf (the old file is kept as "
                            "set.conf.sav). A running VM loses it at its next guest reboot.", dry_run=True)
    p.add_argument("name", help="VM name")
    return p


def body(args):
    vm = common.get_vm(args, root_user=True)
    old = vm.config().iso
    if not edit.apply(vm, lambda text: config.remove_value(text, "ISO"), "eject"):
        common.info(f"{vm.name}: no ISO inserted; nothing changed")
        return 0
    common.said(args, f"{vm.name}: ejected {old}", f"{vm.name}: would eject {old}")
    if vmmod.runtime(vm).active and not args.dry_run:
        common.info(f"{vm.name} is running: the CD goes away at its next guest reboot, or the next start.")
    return 0
