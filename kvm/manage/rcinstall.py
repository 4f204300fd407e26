"""A VM's rc.d script with its rc.conf variables: installed, moved and removed here only, for
dorc, dorc -r (also of a name no VM has any more), vmrename and vmdestroy.

Ownership. kvm touches a script only when it carries our marker (rcd.parse), and rc.conf
variables only of such scripts. It refuses to write a script whose rc name is taken: by a
base-system service (/etc/rc.d/sshd: a VM called sshd would edit sshd_enable), by a script in
the rc.d folder that is not ours or is another VM's, or by rc.conf variables set while no
script of ours exists (someone else's).

kill -9. Every step leaves a state the same command completes when run again: a new script is
written before the old one is removed, variables are removed before the script that names
them, and the script is the last thing removed (it is the record of what is left).
"""

import contextlib
import os

from kvm import host
from kvm.errors import PermissionDenied, StateError
from kvm.host import lock
from kvm.host.record import record
from kvm.platform import rcd, systemd

SHUTDOWN_BUDGET = 85  # rcshutdown_timeout (90 s) less a few seconds for postRun and the rest


@record()
class Options:
    """What `dorc` asks: the rcorder headers and the stop timeout."""

    require: str = rcd.DEFAULTS["require"]
    before: str = rcd.DEFAULTS["before"]
    keyword: str = rcd.DEFAULTS["keyword"]
    timeout: int = rcd.STOP_TIMEOUT


def check_slot(vm_name, at=None, moving_from=None):
    """The path the VM's script may be written to; StateError when its rc name is taken."""
    rcname, path = rcd.rc_name(vm_name), rcd.script_path(vm_name, at)
    if rcname == rcd.HOST_WIDE:  # installed or not: its rc.d/kvm and kvm_enable are the host-wide service's
        raise StateError(f"rc name '{rcname}' is the host-wide kvm service's (rc.d/kvm, {rcname}_enable): "
                         f"a VM of that name cannot have an rc.d script (rename it)", vm=vm_name)
    base = rcd.base_script(rcname, at)
    if base:
        raise StateError(f"rc name '{rcname}' is the host's own service {base}: a VM of that name "
                         f"cannot have an rc.d script (rename it)", vm=vm_name)
    found = rcd.parse(path) if os.path.lexists(path) else None
    if os.path.lexists(path) and found is None:
        raise StateError(f"{path} exists and is not a kvm script: not overwriting it", vm=vm_name)
    if found and found.vm not in (vm_name, moving_from):
        raise StateError(f"rc name '{rcname}' is already used by VM '{found.vm}' ({path}); "
                         f"rename one of them", vm=vm_name)
    if found is None and not systemd.in_use():  # no rc.conf on a systemd host
        for var in (f"{rcname}_enable", f"{rcname}_timeout"):
            if rcd.rcconf_value(var, at) is not None:
                raise StateError(f"rc.conf already sets {var} and no kvm script owns it: "
                                 f"not taking it over", vm=vm_name)
    folder = path.parent
    if not folder.is_dir():
        raise StateError(f"rc.d folder {folder} does not exist", vm=vm_name)
    if not os.access(folder, os.W_OK) and not host.dry_run():
        raise PermissionDenied(f"rc.d folder {folder} is not writable", vm=vm_name)
    return path


def install(vm, opts, enable=False, at=None):
    """Write the VM's script (and its copy NAME.rc in the VM folder); enable it when asked."""
    path = check_slot(vm.name, at)
    _write(vm, opts, path)
    if enable and systemd.in_use():
        systemd.enable(path)
    elif enable:
        rcd.sysrc(f"{rcd.rc_name(vm.name)}_enable=YES", at=at)
    if systemd.in_use():
        systemd.reload(path.parent)
    return path


def copy_name(vm_name):
    """The copy of its script kept in the VM folder: NAME.rc, or NAME.service for a unit."""
    return f"{vm_name}.service" if systemd.in_use() else f"{vm_name}.rc"


def _write(vm, opts, path):
    """The script at path and its copy in the VM folder (what `dorc` shows it wrote)."""
    unit = systemd.in_use()
    text = rcd.render(vm.name, vm.root.path, require=opts.require, before=opts.before,
                      keyword=opts.keyword, timeout=opts.timeout, rcdir=path.parent, unit=unit)
    host.write_file(path, text, mode=0o444 if unit else 0o555)  # a unit is read, never run
    host.write_file(vm.dir / copy_name(vm.name), text, mode=0o444)


def remove(root, name, at=None):
    """Remove our script for `name` and its variables; the VM need not exist (a leftover of a
    killed vmrename or vmdestroy). Returns the script's path, None when there is none."""
    path, script = rcd.script_path(name, at), rcd.our_script(name, at)
    if script is None:
        if os.path.lexists(path):
            raise StateError(f"{path} is not a kvm script of this VM: not removing it", vm=name)
        return None   # nothing to remove (a re-run of a dorc -r that finished): the caller says so
    if not script.shell_toolkit and str(root.path) not in script.path.read_text(errors="replace"):
        raise StateError(f"{path} belongs to another kvm install root: not removing it", vm=name)
    host.remove_file(root.vm_dir / name / copy_name(name))
    rcd.remove_script(script, at)
    return path


def move(old, target, at=None):
    """vmrename's part: the script of VM `old` rewritten for `target` (the renamed Vm) with the
    same headers and timeout, the variables' values carried over, then the old ones removed.
    A no-op when there is nothing left to move (no script, or a re-run that finished it)."""
    script = rcd.our_script(old, at)
    if script is None:
        return None
    new = target.name
    values = {var: rcd.rcconf_value(var, at) for var in script.variables}
    opts = Options(script.require, script.before, script.keyword, script.timeout)
    path = check_slot(new, at, moving_from=old)
    _write(target, opts, path)
    host.remove_file(target.dir / copy_name(old))
    if path == script.path:  # the same rc name (web-1 -> web_1): the variables are already right
        if script.unit:
            systemd.reload(path.parent)
        return path
    if script.unit and systemd.is_enabled(script.path):
        systemd.enable(path)  # before the old link goes: a kill in between leaves it enabled
    if rcd.vars_are_ours(script, at):
        for var, value in values.items():
            if value is not None:
                rcd.sysrc(f"{rcd.rc_name(new)}{var[len(script.rcname):]}={value}", at=at)
    rcd.remove_script(script, at)
    return path


def hold_unless_running(vm, what):
    """The VM's lock, so that no vmrename or vmdestroy runs meanwhile; a running VM (its
    supervisor holds the lock) may still get its rc.d script written, without it."""
    found = lock.holder(vm.run.lock)
    if found is not None and not found[1]:
        return contextlib.nullcontext()
    return lock.hold_vm(vm.run, what)


def shutdown_overrun(root, at=None):
    """The enabled scripts stopped at shutdown whose stop timeout exceeds what rc.shutdown allows
    ([(rc name, seconds)]). The stops run at once (see templates/rc.j2), so each must fit alone."""
    out = []
    for script in rcd.our_scripts(root, at):
        if script.unit:
            continue  # systemd stops units in parallel, each under its own TimeoutStopSec
        if "shutdown" not in script.keyword.split() or not _yes(rcd.rcconf_value(script.rcvar, at)):
            continue
        seconds = rcd.rcconf_value(f"{script.rcname}_timeout", at) or str(script.timeout)
        if seconds.isdigit() and int(seconds) > SHUTDOWN_BUDGET:
            out.append((script.rcname, int(seconds)))
    return out


def _yes(value):
    return (value or "").lower() in ("yes", "true", "on", "1")
