"""console NAME: attach to the VM's serial console with cu (quit with ~.)."""

from ..errors import StateError
from . import common

PROG = "console"


def build_parser():
    p = common.parser(PROG, "Attach to the VM's serial console with cu. Quit with ~. "
                            "(COM=1 in set.conf; always on with grub).")
    p.add_argument("name", help="VM name")
    return p


def body(args):
    from .. import host, vm as vmmod
    from ..hypervisor import current as hypervisor
    vm = common.get_vm(args)
    cfg = vm.config()
    if not cfg.com:
        raise StateError("has no serial console (set COM=1 in set.conf and restart it)", vm=vm.name)
    if not vmmod.runtime(vm).bhyve:
        raise StateError("is not running: start it first", vm=vm.name)
    common.info(f"Connecting to {vm.name}'s console; quit with ~.")
    host.exec_replace(hypervisor().console_command(vm.name))
    return 0
