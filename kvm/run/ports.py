"""Choosing the VNC port: the first free from 5900, reserved so two VMs started together differ."""

import os

from kvm import platform
from kvm.errors import StateError
from kvm.host import runfiles
from kvm.host.lock import acquire_blocking, holder, host_dir

FIRST = 5900
LAST = 5999


def listening_ports():
    """TCP ports something listens on, as the platform reads them."""
    return platform.current().listening_ports()


def reserved_ports(vm):
    """Ports other live supervisors hold in their state files, of every root (ports are
    host-wide), but this VM's own."""
    out = set()
    for run in runfiles.all_runs():
        if run == vm.run:
            continue
        port = int(run.read_state().get("vnc_port") or 0)
        if port and holder(run.lock) is not None:
            out.add(port)
    return out


def first_free(vm):
    """The port a start would choose now (for a dry run and vminfo: nothing reserved)."""
    taken = listening_ports() | reserved_ports(vm)
    return next((p for p in range(FIRST, LAST + 1) if p not in taken), FIRST)


def reserve(vm, write):
    """Pick a port under a host-wide lock and record it with write(port) before releasing the lock."""
    with acquire_blocking(host_dir() / runfiles.vnc_lock_name(), f"{os.getpid()}\n"):
        taken = listening_ports() | reserved_ports(vm)
        for port in range(FIRST, LAST + 1):
            if port not in taken:
                write(port)
                return port
    raise StateError(f"no free VNC port between {FIRST} and {LAST}", vm=vm.name)
