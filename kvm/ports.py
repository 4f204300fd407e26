"""Choosing the VNC port: the first free from 5900, reserved so two VMs started together differ."""

import os
import re

from . import host, paths, vm as vmmod

FIRST = 5900
LAST = 5999


def listening_ports():
    """TCP ports something listens on (sockstat -4l and -6l), matched exactly."""
    ports = set()
    for fam in ("-4l", "-6l"):
        res = host.run(["sockstat", fam], mutating=False, check=False)
        for line in res.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 6:
                m = re.search(r":(\d+)$", fields[5])
                if m:
                    ports.add(int(m.group(1)))
    return ports


def reserved_ports(except_name):
    """Ports other live supervisors hold in their state files."""
    out = set()
    for state in paths.current().run_dir.glob("*.state"):
        name = state.name[:-len(".state")]
        if name == except_name:
            continue
        port = int(vmmod.read_state(name).get("vnc_port") or 0)
        if port and vmmod.lock_held(name):
            out.add(port)
    return out


def reserve(name, write):
    """Pick a port under a host-wide lock and record it with write(port) before releasing the lock."""
    from .lock import acquire_blocking, host_dir
    with acquire_blocking(host_dir() / "vnc.lock", f"{os.getpid()}\n"):
        taken = listening_ports() | reserved_ports(name)
        for port in range(FIRST, LAST + 1):
            if port not in taken:
                write(port)
                return port
    from .errors import StateError
    raise StateError(f"no free VNC port between {FIRST} and {LAST}", vm=name)
