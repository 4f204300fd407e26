"""Changing a VM's set.conf: edit the text, validate the whole result, write atomically with a backup.

Every edit holds the VM's config lock (lock.hold_config) from its read to its write, so two
edits (or an edit and the supervisor's read before a launch) never interleave; it does not
need the VM stopped: a running VM reads the new file at its next guest reboot. The new text
is validated by the plain reader only: an edit never runs set.conf.
"""

import os
import stat

from . import config, host, lock, shconf
from .errors import KvmError

BACKUP = "set.conf.sav"
TEMP_GLOB = f".{shconf.CONF}*.tmp"   # host.write_file's temp files for set.conf and its backup


def apply(vm, change, what="edit"):
    """Apply change(text) -> text to set.conf; the result must validate before anything is written."""
    if host.dry_run():
        return _apply(vm, change)  # writes nothing: nothing to serialise, no lock file made
    with lock.hold_config(vm.name, what):
        return _apply(vm, change)


def _apply(vm, change):
    path = vm.conf_path
    remove_leftovers(vm)
    try:
        text = shconf.read_text(str(path))
        new = change(text)
        if new == text:
            return False
        old_mode = stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode)
        cfg = _validate(vm, new)
        backup_mode = config.file_mode(_validate(vm, text, quiet=True) or cfg, old_mode)
    except KvmError as exc:
        exc.vm = vm.name
        raise
    # A copy holding a password is never readable by others, and the new file is never more
    # readable than the old one was.
    mode = config.file_mode(cfg, old_mode) & backup_mode
    host.write_file(vm.dir / BACKUP, text, mode=backup_mode)
    host.write_file(path, new, mode=mode)
    return True


def _validate(vm, text, quiet=False):
    """The VmConfig of a text, read without sh; with quiet, None when it does not validate."""
    try:
        reading = config.read_plain(text)
        return config.validate(vm.name, str(vm.dir), reading.values, reading=reading)
    except KvmError:
        if quiet:
            return None
        raise


def remove_leftovers(vm):
    """Temp files of an atomic write that was killed before its rename (under the config lock,
    no edit of ours is writing one)."""
    if host.dry_run():
        return
    for leftover in vm.dir.glob(TEMP_GLOB):
        try:
            if stat.S_ISREG(os.lstat(leftover).st_mode):
                os.unlink(leftover)
        except OSError:
            pass
