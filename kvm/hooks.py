"""preRun/postRun: the VM's own sh functions, run through /bin/sh as the shell toolkit does.

They run with `functions`, set.conf and run sourced (in that order) and VMname,
VMdir, VMd set; postRun also gets VMexit and VMreason. They run as root, so they
run only when `run` and `set.conf` are owned by root and not writable by group or
others. Each hook runs in its own process group so a stop can end a hung hook.
"""

import os
import stat

from . import host
from .errors import PermissionDenied

SCRIPT = ('[ -r "$VMd/functions" ] && . "$VMd/functions"; . "$VMdir/set.conf" && . "$VMdir/run" && '
          'type "$1" >/dev/null 2>&1 || { echo "$1 is not defined in $VMdir/run" >&2; exit 127; }; "$1"')


def check_safe(vm):
    """Refuse hooks whose files someone other than root could have changed."""
    for path in (vm.run_path, vm.conf_path):
        st = path.stat()
        if st.st_uid != 0:
            raise PermissionDenied(f"{path} is not owned by root (uid {st.st_uid}): hooks run as root, "
                                   f"refusing (chown root {path})", vm=vm.name)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionDenied(f"{path} is writable by group or others: hooks run as root, refusing "
                                   f"(chmod go-w {path})", vm=vm.name)


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
    return host.spawn(["/bin/sh", "-c", SCRIPT, "kvm-hook", which], env=hook_env(vm, extra),
                      new_session=True)

