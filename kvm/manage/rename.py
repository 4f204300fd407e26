"""Renaming a VM: dataset, comment lines of set.conf and run, the paths of its zvols there
(/dev/zvol/ROOT/vm/OLD/... becomes /dev/zvol/ROOT/vm/NEW/...), the log, the rc.d script and its
rc.conf variables.

kill -9 at any point leaves a state `vmrename OLD NEW` completes: before the dataset moves, an
intent file (INTENT, in the VM folder, so it moves with the dataset) records "OLD NEW"; a run
that finds no VM OLD but a VM NEW holding that intent resumes with the steps after the rename,
each of which can be done again (rcinstall.move writes the new script before it removes the
old one).
"""

import re

from kvm import host, zfs
from kvm import vm as vmmod
from kvm.conf.config import mode_for
from kvm.conf.hooks import HOOKS_MAX
from kvm.conf.shconf import read_text
from kvm.errors import AlreadyExists, KvmError, NotFound
from kvm.host import lock
from kvm.manage import create, rcinstall
from kvm.platform import rcd

INTENT = ".kvm-rename"


def rename_comments(text, old, new):
    """Replace the VM name as a whole word on comment lines only (tap names and values stay)."""
    pattern = re.compile(rf"(?<![A-Za-z0-9_.-]){re.escape(old)}(?![A-Za-z0-9_.-])")
    out = []
    for line in text.splitlines(keepends=True):
        out.append(pattern.sub(new, line) if line.lstrip().startswith("#") else line)
    return "".join(out)


def _tap_pattern(old):
    """The VM's default tap, and the taps of its further NICs (tapNAMEn1, tapNAMEn2: vmcreate --switch,
    vmimport), as whole words."""
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(create.default_tap(old))}(n[0-9]+)?(?![A-Za-z0-9_])")


def zvol_pattern(old_dataset):
    """/dev/zvol/OLD_DATASET/ at the start of a path (not inside a longer one, and a whole
    component: ROOT/vm/web never matches ROOT/vm/web2/disk)."""
    return re.compile(rf"(?<![A-Za-z0-9_./-]){re.escape(zfs.zvol_device(old_dataset))}(?=/)")


def rewrite_zvols(text, old_dataset, new_dataset):
    """The device paths of the zvols below OLD_DATASET, anywhere in the text (values, comments,
    hook commands), made those of the same zvols below NEW_DATASET. Done again, it changes nothing."""
    if old_dataset == new_dataset:
        return text
    return zvol_pattern(old_dataset).sub(lambda _m: zfs.zvol_device(new_dataset), text)


def rewrite_names(text, old, new, taps=False, datasets=None):
    """A VM's set.conf or run for its new name: the name on comment lines (vmrename); with taps
    (vmclone, whose copy must not share the original's interfaces), its default tap name too,
    derived and checked as vmcreate derives it (create.derived_tap). datasets, (old, new): the
    paths of the zvols below the old dataset become those below the new one (rewrite_zvols), so
    that the VM never names another's disk."""
    if datasets:
        text = rewrite_zvols(text, *datasets)
    if old == new:
        return text
    text = rename_comments(text, old, new)
    if taps and _tap_pattern(old).search(text):
        used = uses_tap(text, old)  # else on comments only: not checked as an interface name
        text = _tap_pattern(old).sub(lambda m: create.derived_tap(new, m.group(1) or "") if used
                                     else create.default_tap(new) + (m.group(1) or ""), text)
    return text


def uses_tap(text, old):
    """A line that is no comment names the default tap of VM `old`."""
    return any(_tap_pattern(old).search(line) for line in text.splitlines() if not line.lstrip().startswith("#"))


def check_taps(src, cfg, new):
    """Before anything is made: the tap a copy of `src` named `new` would get, when src's settings
    (`cfg`, as read: set.conf is read once) or its run use its own default tap (UsageError naming
    the copy when that is no interface name)."""
    texts = [str(value) for value in cfg.variables.values()]
    try:
        texts.append(host.read_bounded(src.run_path, HOOKS_MAX, "run", follow=False).decode(errors="surrogateescape"))
    except KvmError:
        pass
    if any(uses_tap(text, src.name) for text in texts):
        create.derived_tap(new)


def rewrite_files(target, old, taps=False, old_dataset=None):
    """rewrite_names on the target's set.conf and run, each written only when it changes; the zvol
    paths of old_dataset (default: ROOT/vm/OLD, the target's root) become the target's own."""
    datasets = (old_dataset or f"{target.root.vm_dataset()}/{old}", target.dataset())
    for path in (target.conf_path, target.run_path):
        if path.exists():
            text = read_text(str(path)) if path == target.conf_path else \
                host.read_bounded(path, HOOKS_MAX, "run", follow=False).decode(errors="surrogateescape")
            new_text = rewrite_names(text, old, target.name, taps, datasets)
            if new_text != text:
                mode = path.stat().st_mode & 0o7777
                host.write_file(path, new_text, mode=mode_for(new_text, mode) if path == target.conf_path else mode)


def unfinished(root, old, new):
    """The renamed Vm when a killed `vmrename OLD NEW` left its intent in NEW, else None."""
    target = vmmod.Vm(root, new)
    try:
        return target if (target.dir / INTENT).read_text().split() == [old, new] else None
    except OSError:
        return None


def check(root, old_vm, new):
    """Everything that could stop a rename, checked before any change."""
    vmmod.check_name(new, "new VM name")
    old_vm.check_files()   # a linked set.conf or run: its target's text would be copied in
    target = vmmod.Vm(root, new)
    if target.dir.exists() or zfs.lzc_exists(target.dataset()):
        raise AlreadyExists(f"cannot rename to '{new}': it already exists", vm=old_vm.name)
    create.check_derived_names(root, new, exclude=old_vm.name)
    vmmod.check_free_on_host(root, new)
    if rcd.our_script(old_vm.name):
        rcinstall.check_slot(new, moving_from=old_vm.name)
    return target


def rename(root, old_vm, new):
    """Rename the VM (its lock and the new name's held meanwhile); on a failure before the
    files were rewritten, move the dataset back."""
    old = old_vm.name
    check(root, old_vm, new)  # first: `vmrename web web` says "already exists", not "busy"
    with lock.hold_vm(old_vm.run, "vmrename"), lock.hold_vm(vmmod.Vm(root, new).run, "vmrename"):
        target = check(root, old_vm, new)
        host.write_file(old_vm.dir / INTENT, f"{old} {new}\n")
        try:
            zfs.lzc_rename(old_vm.dataset(), target.dataset())
        except KvmError:
            host.remove_file(old_vm.dir / INTENT)
            raise
        _finish_or_say(old, target)
    return target


def resume(root, old, new):
    """Complete a killed `vmrename OLD NEW`; NotFound when there is none to complete."""
    vmmod.remount(vmmod.Vm(root, new))  # killed between the unmount and the mount
    target = unfinished(root, old, new)
    if target is None:
        raise NotFound(f"no such VM (no set.conf and run in {vmmod.Vm(root, old).dir})", vm=old)
    with lock.hold_vm(vmmod.Vm(root, old).run, "vmrename"), lock.hold_vm(target.run, "vmrename"):
        _finish_or_say(old, target)
    return target


def _finish_or_say(old, target):
    """finish(); when a step fails, its one line also says that the dataset is renamed and how to
    complete the rest (the intent stays for that)."""
    try:
        finish(old, target)
    except KvmError as exc:
        exc.vm = exc.vm or old
        exc.message += (f" (the dataset is renamed to {target.name}: run `vmrename {old} {target.name}` again "
                        f"to finish)")
        raise


def finish(old, target):
    """The steps after the dataset moved, each safe to repeat; the intent goes last."""
    new = target.name
    rewrite_files(target, old)
    old_log = target.dir / f"{old}.log"
    if old_log.exists():
        host.run(["mv", str(old_log), str(target.dir / f"{new}.log")])
    rcinstall.move(old, target)
    host.remove_file(target.dir / INTENT)
