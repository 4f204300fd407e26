"""console [--log] NAME: attach to the VM's serial console (quit with ~.), or print its log."""

import sys

from kvm import host
from kvm import vm as vmmod
from kvm.cli import common
from kvm.errors import NotFound, Refused, StateError
from kvm.host.console_relay import raw_terminal, relay
from kvm.hypervisor import current as hypervisor
from kvm.hypervisor.qemu.backend import console_log

PROG = "console"


def build_parser():
    p = common.parser(PROG, "Attach to the VM's serial console (cu on bhyve, a built-in relay on qemu). "
                            "Quit with ~. (COM=1 in set.conf; always on with grub). --log prints what "
                            "the guest printed (qemu: vm/NAME/console.log, kept even with nobody attached).")
    p.add_argument("--log", action="store_true", help="print console.log (and the rotated console.log.0 first)")
    p.add_argument("name", help="VM name")
    return p


def body(args):
    vm = common.get_vm(args)
    if args.log:
        return print_log(vm)
    cfg = vm.config()
    if not cfg.com:
        raise StateError("has no serial console (set COM=1 in set.conf and restart it)", vm=vm.name)
    if not vmmod.runtime(vm).bhyve:
        raise Refused("is not running: start it first", vm=vm.name)
    hv = hypervisor()
    sock_path = hv.console_socket(vm.run)
    common.info(f"Connecting to {vm.name}'s console; quit with ~.")
    if sock_path is None:
        host.exec_replace(hv.console_command(vm.run))
    return attach(vm, sock_path)


def attach(vm, sock_path):
    """Relay this terminal to the console socket until ~., a hang-up or the guest's end."""
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(sock_path)
    except OSError as exc:
        raise StateError(f"cannot connect to its console {sock_path}: {exc.strerror or exc} "
                         f"(is another console attached?)", vm=vm.name) from None
    # qemu writes console.log itself, so the relay does not log (it would write it twice)
    with sock, raw_terminal(sys.stdin.fileno()):
        how = relay(sys.stdin.fileno(), sys.stdout.fileno(), sock)
    common.info(f"\r\nDisconnected from {vm.name}'s console ({how})")
    return 0


def print_log(vm):
    """console.log.0 then console.log, as bytes (the guest's output is not always UTF-8)."""
    path = console_log(vm.dir)
    parts = [p for p in (path.with_name(path.name + ".0"), path) if p.is_file()]
    if not parts:
        raise NotFound(f"no console log {path} (only a VM with COM=1 run by qemu has one)", vm=vm.name)
    for part in parts:
        sys.stdout.buffer.write(part.read_bytes())
    sys.stdout.flush()
    return 0
