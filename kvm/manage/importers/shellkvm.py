"""A VM folder of Emrion's shell toolkit (set.conf + run: kvm's own format) as a kvm VM.

Its files are copied as they are into ROOT/vm/NAME, a dataset of its own; set.conf is checked
at the source first (so nothing is created for a folder that would not start) and again where
it lands. set.conf and run become files that root's supervisor evaluates, so they must already
be root's and writable by root only: an import never makes a file someone else can change
trusted.
"""

import os
import stat
from pathlib import Path

from kvm.conf import config
from kvm.conf.shconf import CONF_MAX
from kvm.errors import ConfigError, NotFound, PermissionDenied
from kvm.manage.importers import trust
from kvm.manage.importers.plan import Plan

RUN = "run"


def _files(folder, name, report):
    """Every regular file of the folder, looked at without following links; the rest reported."""
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode):
            out.append(Path(entry.path))
        else:
            kind = "a link" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else "special"
            report.append(f"{entry.name}: not copied ({kind})")
    return out


def _check_owned(name, path):
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise PermissionDenied(f"{path} is not a regular file: refusing to import it", vm=name)
    trust.read(name, path, path.name, trust.HOOK_MAX if path.name == RUN else CONF_MAX)


def _outside(vm, cfg, folder, named, report):
    """The disks set.conf names outside the folder: each must be named on the command line
    (--allow-path), and is then kept in place and written to AllowPath; never copied or removed."""
    allow = []
    for key, path, kind in config.media(cfg):
        real = os.path.realpath(path)
        if config.under(real, os.path.realpath(folder)):
            continue
        if real in named:
            allow.append(path)
            report.append(f"{key.split('=')[0]}={path}: kept in place (outside the VM folder; named by --allow-path)")
        elif kind == "disk":
            raise ConfigError(f"{key} leads to {real}, outside {folder}: never copied, moved or removed; to use it "
                              f"in place, name it: --allow-path {real}", vm=vm.name)
    return allow


def plan(vm, folder, move=False, vars_name="UEFI_VARS.fd", allow_paths=()):
    """The Plan that copies (or moves) the shell kvm VM in `folder` into the new Vm `vm`."""
    folder = Path(folder).absolute()
    conf, run = folder / config.CONF, folder / RUN
    if not folder.is_dir() or not os.path.lexists(conf) or not os.path.lexists(run):
        raise NotFound(f"{folder} is not a shell kvm VM folder (it needs {config.CONF} and {RUN})", vm=vm.name)
    trust.check_folder(vm.name, folder)  # its files are copied as they are: nobody else may swap them
    for path in (conf, run):
        _check_owned(vm.name, path)
    cfg = config.load(vm.name, str(folder), evaluate=False, startable=True)  # one line naming the bad value
    if cfg.disk and not os.path.exists(cfg.disk):
        raise NotFound(f"disk {cfg.disk} does not exist", vm=vm.name)
    report = []
    allow = _outside(vm, cfg, folder, {os.path.realpath(p) for p in allow_paths}, report)
    files = _files(folder, vm.name, report)
    if folder.name != vm.name:
        report.append(f"(renamed from {folder.name}): tap and bridge names in set.conf and run left as they were")
    if cfg.iso and not os.path.exists(cfg.iso):
        report.append(f"ISO={cfg.iso}: does not exist: eject it or put it there before a start")
    disks = [os.path.basename(path) for _key, path, kind in config.media(cfg)
             if kind == "disk" and os.path.dirname(os.path.realpath(path)) == os.path.realpath(folder)]
    return Plan(name=vm.name, origin=f"shell-kvm {folder}", files=[(p, p.name, move) for p in files],
                report=report, allow_paths=allow, disks=disks,
                fresh_vars=cfg.loader == "uefi" and not (folder / vars_name).exists(),
                rename_from=folder.name if folder.name != vm.name else "")
