"""Choosing the VNC port: the first free from 5900, reserved so two VMs started together differ."""

import os

from kvm import platform
from kvm import vm as vmmod
from kvm.errors import StateError
from kvm.host import paths, runfiles
from kvm.host.lock import acquire_blocking, host_dir

FIRST = 5900
LAST = 5999


def listening_ports():
    """TCP ports something listens on, as the platform reads them."""
    return platform.current().listening_ports()


def reserved_ports(except_name):
    """Ports other live supervisors hold in their state files."""
    out = set()
    try:
        names = runfiles.state_names(os.listdir(paths.current().run_dir))
    except OSError:
        names = set()
    for name in sorted(names):
        if name == except_name:
            continue
        port = int(vmmod.read_state(name).get("vnc_port") or 0)
        if port and vmmod.lock_held(name):
            out.add(port)
    return out


def first_free(name):
    """The port a start would choose now (for a dry run and vminfo: nothing reserved)."""
    taken = listening_ports() | reserved_ports(name)
    return next((p for p in range(FIRST, LAST + 1) if p not in taken), FIRST)


def reserve(name, write):
    """Pick a port under a host-wide lock and record it with write(port) before releasing the lock."""
    with acquire_blocking(host_dir() / runfiles.vnc_lock_name(), f"{os.getpid()}\n"):
        taken = listening_ports() | reserved_ports(name)
        for port in range(FIRST, LAST + 1):
            if port not in taken:
                write(port)
                return port
    raise StateError(f"no free VNC port between {FIRST} and {LAST}", vm=name)
