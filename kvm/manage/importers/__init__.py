"""vmimport: the VMs of other managers (vm-bhyve, the shell kvm) made into kvm VMs.

Each importer turns a source folder into a Plan: set.conf settings and run hooks (vm-bhyve) or
files taken as they are (the shell kvm), the files to copy or move into the new VM folder, and
the report of what could not be mapped. create() makes the VM under vmcreate's transaction
(kvm/zfs/txn.py): everything is checked first, then written, validated where it lies and committed;
on any failure, or a kill, the new dataset is destroyed. Sources are removed (--move) only after
the commit, so a failed import never loses a disk; a kill between the commit and the removal
leaves the source as well, which the next look shows.
"""

import os
import time

from kvm import host, platform
from kvm.conf import config
from kvm.conf.shconf import read_text
from kvm.conf.templating import render
from kvm.errors import NotFound, Refused, StateError
from kvm.host import lock
from kvm.host.files import WriteFailed
from kvm.manage.create import check_new
from kvm.manage.importers import shellkvm, vmbhyve
from kvm.manage.importers.plan import Plan  # noqa: F401 - the importers' result, handed on
from kvm.manage.rename import rewrite_files
from kvm.run import launch
from kvm.storage.images import DISK_MODE, copy_hashing
from kvm.vm import Vm, check_name
from kvm.zfs.txn import Transaction

REPORT = "vmimport.txt"
ORDER = ("VMrom", "Boot", "Cores", "Mem", "VMoptions", "Disk", "DiskDriver", "Devices", "Switch", "VNC", "wVNC",
         "hVNC", "Tablet", "VNCaddr", "VNCpassword", "COM", "RestartOnFault", "AllowPath")


def conf_text(plan):
    """set.conf for a mapped plan: the settings in kvm's usual order, one per line."""
    lines = [f"# VM settings for {plan.name}, imported by vmimport from {plan.origin}",
             f"# What could not be mapped is listed in {REPORT} in this folder.", ""]
    lines += [f"{key}={config.sh_quote(plan.settings[key])}" for key in ORDER if key in plan.settings]
    return "\n".join(lines) + "\n"


def report_text(plan):
    lines = [f"# vmimport of {plan.name} from {plan.origin}, {time.strftime('%Y-%m-%d %H:%M:%S %z')}"]
    if plan.report:
        lines.append("# settings kvm did not map (or mapped with a change), and why:")
    else:
        lines.append("# every setting was mapped")
    return "\n".join(lines + plan.report) + "\n"


def _texts(root, vm, plan):
    """(set.conf, run, cfg) of a mapped plan, validated before anything exists."""
    from kvm import hypervisor, platform
    conf = conf_text(plan)
    cfg = config.validate(plan.name, str(vm.dir), config.parse_text(conf), startable=True)
    hv = hypervisor.current()
    run = render("run.j2", root.path, name=plan.name, pre=plan.pre, post=plan.post, hv=hv.name,
                 helpers=platform.current().helpers, exit_status=hv.exit_status_text, reasons=hv.reasons_text)
    return conf, run, cfg


def _vars_template(root, plan, names):
    """(source, name) of fresh UEFI vars when the plan needs them, else None."""
    if not plan.fresh_vars:
        return None
    from kvm.hypervisor import current as hypervisor
    source, name, missing = hypervisor().uefi_vars(root.path)
    if name in names:
        return None  # the guest's own vars are carried over
    if source is None:
        raise NotFound(missing, vm=plan.name)
    return source, name


def copy_into(src, dst, mode=None):
    """Copy a file sparsely (a disk's holes stay holes), 0600 while it is written, then `mode`
    (default: the source's)."""
    if host.dry_run():
        host.plan(f"cp {src} {dst}")
        return
    try:
        copy_hashing(src, dst)
        os.chmod(dst, os.stat(src).st_mode & 0o7777 if mode is None else mode)
    except OSError as exc:
        raise WriteFailed(f"cannot copy {src} to {dst}: {exc.strerror or exc}") from None


def _mode(src, name, plan):
    """A copied file's mode: a disk 0600; the shell kvm's set.conf 0640 at most with a password;
    anything else the source's."""
    if name in plan.disks:
        return DISK_MODE
    current = os.stat(src).st_mode & 0o7777
    if name == config.CONF and plan.settings is None:
        return config.mode_for(read_text(str(src)), current)
    return current


def check_created(vm):
    """The new VM as a start would read it: set.conf valid there, its disks there."""
    cfg = vm.config()
    warnings = launch.check_files(cfg)
    for dev in cfg.devices:
        if dev.kind in ("disk", "cdrom") and not os.path.exists(dev.path):
            raise NotFound(f"Devices item '{dev.arg()}': {dev.path} does not exist", vm=vm.name)
    launch.plan(vm, cfg, strict=False)
    return list(cfg.warnings) + warnings


def _fill(vm, plan, texts, template):
    if texts:
        conf, run, cfg = texts
        host.write_file(vm.conf_path, conf, mode=config.file_mode(cfg))
        host.write_file(vm.run_path, run, mode=0o644)
    for src, name, _remove in plan.files:
        copy_into(src, vm.dir / name, None if host.dry_run() else _mode(src, name, plan))
    for name, (data, mode) in plan.texts.items():
        host.write_file(vm.dir / name, data, mode=mode)
    if plan.settings is None and plan.allow_paths and not host.dry_run():  # shell kvm: its own set.conf
        text = read_text(str(vm.conf_path))
        host.write_file(vm.conf_path, config.set_value(text, "AllowPath", " ".join(plan.allow_paths)),
                        mode=vm.conf_path.stat().st_mode & 0o7777)
    if template:
        host.copy_file(template[0], vm.dir / template[1], mode=0o644)
    if plan.rename_from and not host.dry_run():
        rewrite_files(vm, plan.rename_from)  # as vmrename: the name on comment lines
    host.write_file(vm.dir / REPORT, report_text(plan))


def create(root, plan, spare=None):
    """Make the VM the plan describes, all or nothing; returns (Vm, warnings). spare: see
    vm.check_free_on_host (the VM imported may share its name)."""
    vm = check_new(root, plan.name, spare)
    texts = _texts(root, vm, plan) if plan.settings is not None else None
    template = _vars_template(root, plan, {name for _, name, _ in plan.files})
    warnings = []
    with lock.hold_vm(vm.run, "vmimport"):
        with Transaction(vm.dataset()) as txn:
            if not host.dry_run() and not vm.dir.is_dir():
                raise StateError(f"dataset {vm.dataset()} is not mounted at {vm.dir}", vm=vm.name)
            _fill(vm, plan, texts, template)
            if not host.dry_run():
                warnings = check_created(vm)
            txn.commit()
    for name, cfg in plan.switches.items():  # the kvm switches its NICs are on, when the root lacks them
        from kvm import net
        if not net.conf_path(root, name).exists():
            net.save(root, cfg)
        elif net.load(root, name) != cfg:
            warnings.append(f"switch {name} exists in the root with other settings than vm-bhyve's: used as it is")
    for src, _name, remove in plan.files:
        if remove:  # only now: the VM holds its copy
            try:
                host.remove_file(src)
            except OSError as exc:
                warnings.append(f"{src} was copied but could not be removed: {exc.strerror or exc}")
    return vm, warnings


def import_vm(root, source, folder, name=None, move=False, allow_paths=()):
    """Import the `source` VM in `folder` (vm-bhyve or shell-kvm) as NAME (default: the folder's
    name); allow_paths: the paths outside the folder the command line named (--allow-path), the only
    ones the VM may keep using in place. Returns (Vm, Plan, warnings)."""
    from kvm.hypervisor import current as hypervisor
    name = name or os.path.basename(os.path.normpath(folder))
    check_name(name)
    vm = Vm(root, name)
    hv = hypervisor()
    running = os.path.basename(os.path.normpath(folder))  # the name the other manager runs it under
    if hv.is_allocated(Vm(root, running).run):
        raise Refused(f"a VM named {running} is allocated on this host (still running?): stop it "
                         f"first", vm=name)
    vars_name = hv.uefi_vars(root.path)[1]
    if source == "vm-bhyve":
        plan = vmbhyve.plan(vm, folder, move, host_os=platform.current(), vars_name=vars_name,
                            allow_paths=allow_paths)
    else:
        plan = shellkvm.plan(vm, folder, move, vars_name=vars_name, allow_paths=allow_paths)
    source_dir = os.path.realpath(folder)
    vm, warnings = create(root, plan, spare=lambda other: os.path.realpath(other.dir) == source_dir)
    return vm, plan, warnings
