"""preRun/postRun: the VM's own sh functions, run through /bin/sh as the shell toolkit does.

They run with `functions`, set.conf and run sourced (in that order) and VMname,
VMdir, VMd set; postRun also gets VMexit and VMreason. They run as root, so they
run only when `run`, `set.conf`, `functions` and their folders are owned by root and
not writable by group or others (check_safe). Each hook runs in its own process group
so a stop can end a hung hook.
"""

import contextlib
import os
import stat

from kvm import host
from kvm.conf.config import check_folder
from kvm.conf.shconf import check_owner, open_file
from kvm.errors import PermissionDenied
from kvm.host import lock

FUNCTIONS = "functions"
HOOKS_MAX = 1 << 20   # bytes of run or functions: sh source, never larger
LOCK_FD = 9   # where a hook's sh finds the config lock it holds while sourcing
# The hook's sh holds the config lock it inherits (descriptor LOCK_FD) while it sources the
# files, then closes it: an edit's rename never races that open of set.conf.
SCRIPT = ('[ -r "$VMd/functions" ] && . "$VMd/functions"; . "$VMdir/set.conf" && . "$VMdir/run" && '
          'type "$1" >/dev/null 2>&1 || { echo "$1 is not defined in $VMdir/run" >&2; exit 127; }; '
          f'exec {LOCK_FD}>&-; "$1"')


def check_safe(vm):
    """Refuse to run set.conf, run or functions (as root) unless each, and its folder, is a real
    file or folder of root's that only root may change. Files are opened without following a
    link and checked on the descriptor; a missing functions file is fine (hooks test -r it)."""
    for folder in (vm.dir, vm.root.vm_dir, vm.root.path):
        _refuse(vm, check_folder, str(folder))
    for path, needed in ((vm.conf_path, True), (vm.run_path, True), (vm.root.path / FUNCTIONS, False)):
        try:
            fd = open_file(path)
        except FileNotFoundError:
            if needed:
                raise PermissionDenied(f"{path} not found", vm=vm.name) from None
            continue
        except OSError as exc:
            raise PermissionDenied(f"{path}: {exc.strerror} (a symbolic link?): refusing to run it",
                                   vm=vm.name) from None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PermissionDenied(f"{path} is not a regular file: refusing to run it", vm=vm.name)
        _refuse(vm, check_owner, path, st)
        if path != vm.conf_path and st.st_size > HOOKS_MAX:  # set.conf has its own limit (shconf)
            raise PermissionDenied(f"{path} is larger than {HOOKS_MAX >> 20} MiB: not a hooks file, refusing "
                                   f"to run it", vm=vm.name)


def _refuse(vm, check, *args):
    try:
        check(*args)
    except PermissionDenied as exc:
        exc.vm = vm.name
        raise


def hook_env(vm, extra=None):
    """The environment hooks see."""
    env = {"PATH": os.environ.get("PATH", "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"),
           "VMname": vm.name, "VMdir": str(vm.dir), "VMd": str(vm.root.path)}
    for key in ("HOME", "LANG", "LC_ALL", "TERM") + tuple(k for k in os.environ if k.startswith("KVM_")):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra or {})
    return env


def start_hook(vm, which, extra=None):
    """Start preRun or postRun; returns the process (its own process group)."""
    if host.dry_run():
        host.run(["/bin/sh", "-c", f". {vm.root.path}/functions; . {vm.conf_path}; . {vm.run_path}; {which}"])
        return None
    with lock.hold_config(vm.run, f"{which} reading set.conf") as held, _on_fd(held.fd, LOCK_FD):
        return host.spawn(["/bin/sh", "-c", SCRIPT, "kvm-hook", which], env=hook_env(vm, extra),
                          new_session=True, pass_fds=(LOCK_FD,))


@contextlib.contextmanager
def _on_fd(fd, slot):
    """fd copied onto descriptor `slot` for a child to inherit (sh's redirections take one digit
    only, so the lock cannot be handed over at its own number); whatever `slot` was is put back."""
    try:
        saved = os.dup(slot)
    except OSError:
        saved = None
    os.dup2(fd, slot, inheritable=False)
    try:
        yield slot
    finally:
        if saved is None:
            os.close(slot)
        else:
            os.dup2(saved, slot, inheritable=False)
            os.close(saved)

