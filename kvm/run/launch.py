"""One launch plan for the run, `start --dry-run` and vminfo: the hypervisor's plan for a config,
with the files checked and the VNC port chosen (reserved for a run, only looked up otherwise)."""

import os

from kvm.errors import NotFound
from kvm.hypervisor import Context
from kvm.hypervisor import current as hypervisor
from kvm.run import ports
from kvm.vm import check_not_running_elsewhere


def check_files(cfg):
    """The disk and ISO must exist before a launch."""
    if cfg.disk and not os.path.exists(cfg.disk):
        raise NotFound(f"disk {cfg.disk} not found", vm=cfg.name)
    if cfg.iso and not os.path.exists(cfg.iso):
        raise NotFound(f"ISO {cfg.iso} not found (eject it, or insert another)", vm=cfg.name)


def plan(vm, cfg, vnc_port=None, strict=True, hv=None):
    """The plan of one launch. strict (a real launch): firmware must exist; else placeholders.
    Without a vnc_port, a VM with VNC gets the port a start would choose now (not reserved)."""
    hv = hv or hypervisor()
    if strict:
        check_files(cfg)
    if cfg.vnc and vnc_port is None:
        vnc_port = ports.first_free(vm)
    return hv.plan(cfg, Context(root=vm.root.path, run=vm.run, vnc_port=vnc_port, strict=strict))


def dry_run_lines(vm):
    """Every step a start would take, as lines; changes nothing."""
    hv = hypervisor()
    cfg = vm.config()
    check_files(cfg)
    check_not_running_elsewhere(vm)  # a real start would refuse (and not destroy the other's VM)
    p = plan(vm, cfg, strict=False, hv=hv)
    out = [f"would start {vm.name} with these steps (preRun to postRun again at each guest reboot):"]
    out += [hv.destroy_text(vm.run)] if hv.is_allocated(vm.run) else []
    out += hv.prepare_host_text(p)
    out.append(f"preRun    (sh: . {vm.root.path}/functions; . {vm.conf_path}; . {vm.run_path}; preRun)")
    for path, text in p.files:
        out.append(f"would write {path}:")
        out += [f"    {line}" for line in text.splitlines()]
    if p.loader:
        out.append(hv.shown(p.loader))
    out.append(hv.shown(p.argv))
    out.append(hv.destroy_text(vm.run))
    out.append("postRun   (VMexit, VMreason set); loop on reboot")
    out.append(f"# hypervisor {hv.name}, accelerator {hv.accelerator()}")
    return out
