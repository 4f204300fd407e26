"""Changing a VM's set.conf: edit the text, validate the whole result, write atomically with a backup."""

import os

from . import config, host
from .errors import ConfigError

BACKUP = "set.conf.sav"


def apply(vm, change):
    """Apply change(text) -> text to set.conf; the result must validate before anything is written."""
    path = vm.conf_path
    text = path.read_text()
    new = change(text)
    if new == text:
        return False
    try:
        values = config.parse_text(new)
    except config.NeedsShell:
        values = None  # validated below through sh on a temp copy
    if values is None:
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as tmp:
            tmp.write(new)
        try:
            values = config.evaluate_with_sh(tmp.name)
        finally:
            os.unlink(tmp.name)
    try:
        config.validate(vm.name, str(vm.dir), values)
    except ConfigError as exc:
        exc.vm = vm.name
        raise
    mode = path.stat().st_mode & 0o7777
    host.write_file(path, new, mode=mode, backup=vm.dir / BACKUP)
    return True
