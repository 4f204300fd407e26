"""Renaming a VM: dataset, comment lines of set.conf and run, the rc.d script and its rc.conf variable."""

import re

from . import host, rcd, vm as vmmod, zfs
from .errors import KvmError, StateError


def rename_comments(text, old, new):
    """Replace the VM name as a whole word on comment lines only (tap names and values stay)."""
    pattern = re.compile(rf"(?<![A-Za-z0-9_.-]){re.escape(old)}(?![A-Za-z0-9_.-])")
    out = []
    for line in text.splitlines(keepends=True):
        out.append(pattern.sub(new, line) if line.lstrip().startswith("#") else line)
    return "".join(out)


def check(root, old_vm, new):
    """Everything that could stop a rename, checked before any change."""
    vmmod.check_name(new, "new VM name")
    target = vmmod.Vm(root, new)
    if target.dir.exists() or zfs.lzc_exists(target.dataset()):
        raise StateError(f"cannot rename to '{new}': it already exists", vm=old_vm.name)
    script = rcd.our_script(old_vm.name)
    if script:
        if rcd.rc_name(new) != rcd.rc_name(old_vm.name):
            rcd.check_writable_slot(new)
    elif rcd.script_path(old_vm.name).exists() and rcd.parse(rcd.script_path(old_vm.name)) is None:
        pass  # a foreign script of that name is not ours to move
    return target, script


def rename(root, old_vm, new):
    """Rename the VM; on a failure after the dataset moved, move it back."""
    target, script = check(root, old_vm, new)
    old = old_vm.name
    zfs.lzc_rename(old_vm.dataset(), target.dataset())
    try:
        for path in (target.conf_path, target.run_path):
            if path.exists() or host.dry_run():
                text = path.read_text() if path.exists() else ""
                new_text = rename_comments(text, old, new)
                if new_text != text:
                    host.write_file(path, new_text, mode=path.stat().st_mode & 0o7777)
        old_log = target.dir / f"{old}.log"
        if old_log.exists():
            host.run(["mv", str(old_log), str(target.dir / f"{new}.log")])
        if script:
            move_script(root, script, old, new, target)
    except KvmError:
        zfs.lzc_rename(target.dataset(), old_vm.dataset())
        raise
    return target


def move_script(root, script, old, new, target):
    """Write the rc.d script for the new name, carry the _enable value, remove the old one."""
    value = rcd.enabled_value(script.rcvar)
    text = rcd.render(new, root.path, require=script.require, before=script.before, keyword=script.keyword)
    host.write_file(rcd.script_path(new), text, mode=0o555)
    host.write_file(target.dir / f"{new}.rc", text, mode=0o444)
    old_copy = target.dir / f"{old}.rc"
    if old_copy.exists():
        host.remove_file(old_copy)
    if rcd.script_path(new) != script.path:
        host.remove_file(script.path)
    new_rcvar = f"{rcd.rc_name(new)}_enable"
    if new_rcvar != script.rcvar:
        rcd.sysrc("-i", "-x", script.rcvar)
        if value:
            rcd.sysrc(f"{new_rcvar}={value}")
