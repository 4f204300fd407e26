"""Changing a VM's set.conf: edit the text, validate the whole result, write atomically with a backup.

Every edit holds the VM's config lock (lock.hold_config) from its read to its write, so two
edits (or an edit and the supervisor's read before a launch) never interleave; it does not
need the VM stopped: a running VM reads the new file at its next guest reboot. The new text
is validated by the plain reader only: an edit never runs set.conf.
"""

import os
import shlex
import stat

from kvm import host
from kvm.conf import config, shconf
from kvm.errors import CommandFailed, ConfigError, KvmError, StateError, UsageError
from kvm.host import lock

BACKUP = "set.conf.sav"
TEMP_GLOB = f".{shconf.CONF}*.tmp"   # host.write_file's temp files for set.conf and its backup


def apply(vm, change, what="edit"):
    """Apply change(text) -> text to set.conf; the result must validate before anything is written."""
    if host.dry_run():
        return _apply(vm, change)  # writes nothing: nothing to serialise, no lock file made
    with lock.hold_config(vm.run, what):
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
        cfg = _validate(vm, new, startable=True)   # what an edit writes, a VM can start from
        old_cfg = _validate(vm, text, quiet=True)
        check_new_paths(cfg, old_cfg)
        backup_mode = config.mode_for(text, old_mode)
    except KvmError as exc:
        exc.vm = vm.name
        raise
    # A copy holding a password is never readable by others, and the new file is never more
    # readable than the old one was.
    mode = config.mode_for(new, old_mode) & backup_mode
    host.write_file(vm.dir / BACKUP, text, mode=backup_mode)
    host.write_file(path, new, mode=mode)
    vm.forget_config()  # what this command read of set.conf before is no longer the file
    return True


def check_new_paths(cfg, old_cfg=None):
    """An edit may not bring in a disk or ISO that a start would refuse for where it lies (one it
    leaves as it was is the start's business)."""
    old = set(config.check_paths(old_cfg)[0]) if old_cfg else set()
    for line in config.check_paths(cfg)[0]:
        if line not in old:
            raise ConfigError(line)


def _validate(vm, text, quiet=False, startable=False):
    """The VmConfig of a text, read without sh; with quiet, None when it does not validate."""
    try:
        reading = config.read_plain(text)
        return config.validate(vm.name, str(vm.dir), reading.values, reading=reading, startable=startable)
    except KvmError:
        if quiet:
            return None
        raise


def current_text(vm):
    """set.conf's text as it is now (a link or a file that is not regular refused, as every read)."""
    try:
        return shconf.read_text(str(vm.conf_path))
    except KvmError as exc:
        exc.vm = vm.name
        raise
def tighten_secrets(vm, cfg):
    """set.conf (as `cfg` read it) and set.conf.sav made 0640 at most when they hold a secret,
    whoever wrote them (an editor, the shell toolkit); returns the paths changed."""
    changed = []
    if config.has_secret(cfg) and host.tighten_mode(vm.conf_path, config.SECRET_MODE):
        changed.append(vm.conf_path)
    backup = vm.dir / BACKUP
    try:
        text = shconf.read_text(str(backup))
    except KvmError:
        return changed  # none (or no settings file): nothing to keep private
    if config.holds_secret(text) and host.tighten_mode(backup, config.SECRET_MODE):
        changed.append(backup)
    return changed


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


# ------------------------------------------------------------------ vmset: KEY=VALUE edits

def check_keys(vm, keys, force=False):
    """Every key must be an sh variable name and, unless force, a setting kvm knows (a misspelt
    `cores` would otherwise be written and silently ignored)."""
    for key in keys:
        if not shconf.NAME_RE.fullmatch(key):
            raise UsageError(f"{key!r} is not a variable name (letters, digits and _)", vm=vm.name)
        if config.reserved(key):
            raise UsageError(config.reserved(key), vm=vm.name)
        if key not in config.KNOWN and not force:
            hint = _near_miss(key)
            raise UsageError(f"{key!r} is not a kvm setting{hint}; --force sets it anyway", vm=vm.name)


def _near_miss(key):
    import difflib
    lower = {k.lower(): k for k in config.KNOWN}
    close = difflib.get_close_matches(key.lower(), list(lower), n=1, cutoff=0.6)
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


def check_value(vm, key, value):
    """A value vmset writes stays on one line: set.conf is read line by line by people too."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise UsageError(f"{key}={value!r} holds a control character (a newline?)", vm=vm.name)


def typed_value(key, value):
    """(value to write, how it was read or None): a size typed otherwise than bhyve takes it is
    converted by the one rule (config.typed_value: Mem=2GB -> 2G, Mem=512 -> 512M); a value
    that is no size is left for the validation to refuse, naming it as given."""
    try:
        return config.typed_value(key, value)
    except config.Invalid:
        return value, None


def set_values(vm, sets, unsets=(), what="vmset"):
    """Set (key, value) pairs and remove keys in one validated, atomic edit (edit.apply: the
    config lock, set.conf.sav, the old file kept on any error). Returns the changes as
    (key, old, new) with None for an unset value; empty when the file already said so."""
    changes = []

    def change(text):
        before, new = _values(text), text
        for key, value in sets:
            if before.get(key) != value:  # already so: leave its line as it is written
                new = config.set_value(new, key, value)
        for key in unsets:
            new = config.remove_value(new, key)
        after = _values(new)
        keys = dict.fromkeys([k for k, _ in sets] + list(unsets))
        changes[:] = [(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)]
        return new

    apply(vm, change, what)
    return changes


def _values(text):
    """The values the plain reader sees (for the report; {} for a text it refuses)."""
    try:
        return config.read_plain(text).values
    except KvmError:
        return {}


# ------------------------------------------------------------------ vmedit: $EDITOR on a copy

def editor_argv(environ, path):
    """$EDITOR, else $VISUAL, else vi, split as sh words (EDITOR="emacs -nw"), then the file."""
    for var in ("EDITOR", "VISUAL"):
        value = environ.get(var, "").strip()
        if value:
            try:
                return shlex.split(value) + [str(path)]
            except ValueError as exc:
                raise UsageError(f"{var}={value!r} cannot be split into words: {exc}") from None
    return ["vi", str(path)]


def run_editor(vm, path, environ=None):
    """Run the editor on the copy, on our terminal; CommandFailed when it fails."""
    argv = editor_argv(os.environ if environ is None else environ, path)
    # not a change of the VM (only the private copy is edited): a dry run edits too
    res = host.run(argv, mutating=False, check=False, capture=False, own_stdin=True, vm=vm.name)
    if res.status != 0:
        raise CommandFailed(argv, res.status, f"exited with status {res.status}", vm=vm.name)


class Copy:
    """A private copy of set.conf to edit: 0600 in a fresh 0700 temp folder (set.conf may hold
    a VNC password), removed at the end unless an error says where it is kept."""

    def __init__(self, vm):
        import tempfile
        self.original = shconf.read_text(str(vm.conf_path))
        self.folder = tempfile.mkdtemp(prefix=f"kvm-vmedit-{vm.name}.")
        self.path = os.path.join(self.folder, shconf.CONF)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            fh.write(self.original)

    def text(self):
        """What the editor left in the copy: a regular file (a link it left is not followed)."""
        import errno
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StateError(f"the editor left no file at {self.path}; set.conf left as it was") from None
        except OSError as exc:
            why = "is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise StateError(f"the edited copy {self.path} {why}: refusing it; set.conf left as it was") from None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise StateError(f"the edited copy {self.path} is not a regular file: refusing it; "
                                 f"set.conf left as it was")
            return fh.read().decode("utf-8", errors="surrogateescape")

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, KvmError) and os.path.isfile(self.path) and not os.path.islink(self.path):
            exc.message += f" (your edit is kept in {self.path})"  # an edit is never lost
            return False
        import shutil
        shutil.rmtree(self.folder, ignore_errors=True)
        return False


def check_text(vm, text):
    """The VmConfig of an edited text, read without sh; ConfigError naming VM, key and value."""
    return _validate(vm, text, startable=True)


def replace(vm, original, new, what="vmedit"):
    """set.conf := new, validated, atomically, set.conf.sav keeping the old one; refused when
    set.conf is no longer `original` (another command wrote it while the editor ran: the
    config lock is not held across an editor session, or a running VM could not reboot)."""
    def change(current):
        if current != original:
            raise StateError(f"{shconf.CONF} was changed by another command while it was being edited; "
                             f"nothing replaced")
        return new
    return apply(vm, change, what)
