"""One launch plan for the run, `start --dry-run` and vminfo: the hypervisor's plan for a config,
with the files checked and the VNC port chosen (reserved for a run, only looked up otherwise)."""

import os
import re

from kvm import platform
from kvm.conf import config
from kvm.errors import ConfigError, NotFound, StateError
from kvm.hypervisor import Context
from kvm.hypervisor import current as hypervisor
from kvm.run import ports
from kvm.vm import check_not_running_elsewhere


def check_files(cfg):
    """Before a launch: the disk and ISO exist, every disk and ISO lies where it may
    (config.check_paths), and none outside the VM folder is used by the host itself (mounted,
    swap, a pool's vdev: refused whatever AllowPath says). Returns the warnings."""
    if cfg.disk and not os.path.exists(cfg.disk):
        raise NotFound(f"disk {cfg.disk} not found", vm=cfg.name)
    if cfg.iso and not os.path.exists(cfg.iso):
        raise NotFound(f"ISO {cfg.iso} not found (eject it, or insert another)", vm=cfg.name)
    refused, warnings = config.check_paths(cfg)
    if refused:
        raise ConfigError(refused[0], vm=cfg.name)
    problem = host_use(cfg)
    if problem:
        raise StateError(problem, vm=cfg.name)
    return warnings


def host_use(cfg):
    """The line refusing a disk or ISO outside the VM folder that the host itself uses, or None
    (paths in the VM folder are the VM's own: no pool or mount is asked about them)."""
    vmdir = os.path.realpath(cfg.vmdir)
    host_os = platform.current()
    for key, path, _kind in config.media(cfg):
        real = os.path.realpath(path)
        if config.under(real, vmdir):
            continue
        why = host_os.host_use(real)
        if why:
            shown = f"{key}={path!r}" if key in ("Disk", "ISO") else key
            return f"{shown} is used by the host ({why}): never given to a VM"
    return None


def plan(vm, cfg, vnc_port=None, strict=True, hv=None):
    """The plan of one launch. strict (a real launch, after check_files): firmware must exist; else
    placeholders. Without a vnc_port, a VM with VNC gets the port a start would choose now (not
    reserved)."""
    hv = hv or hypervisor()
    if cfg.vnc and vnc_port is None:
        vnc_port = ports.first_free(vm)
    return hv.plan(cfg, Context(root=vm.root.path, run=vm.run, vnc_port=vnc_port, strict=strict))


def masked(line):
    """A line of a secret file with the password written as ***."""
    return re.sub(r"(password=).*", r"\1***", line)


def dry_run_lines(vm, warn=None):
    """Every step a start would take, as lines; changes nothing. warn(line) gets each warning."""
    hv = hypervisor()
    cfg = vm.config()
    for line in check_files(cfg):
        if warn:
            warn(line)
    check_not_running_elsewhere(vm)  # a real start would refuse (and not destroy the other's VM)
    p = plan(vm, cfg, strict=False, hv=hv)
    out = [f"would start {vm.name} with these steps (preRun to postRun again at each guest reboot):"]
    out += [hv.destroy_text(vm.run)] if hv.is_allocated(vm.run) else []
    out += hv.prepare_host_text(p)
    out.append(f"preRun    (sh: . {vm.root.path}/functions; . {vm.conf_path}; . {vm.run_path}; preRun)")
    for path, text, mode in p.files:
        out.append(f"would write {path}:")
        # a file only root reads holds a secret (the VNC password): shown masked
        out += [f"    {masked(line) if not mode & 0o077 else line}" for line in text.splitlines()]
    if p.loader:
        out.append(hv.shown(p.loader))
    out.append(hv.shown(p.argv))
    out.append(hv.destroy_text(vm.run))
    out.append("postRun   (VMexit, VMreason set); loop on reboot")
    out.append(f"# hypervisor {hv.name}, accelerator {hv.accelerator()}")
    return out
