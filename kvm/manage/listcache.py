"""vmlist's memory of what each set.conf says: RUN_DIR/host/vmlist.cache.

Reading 500 set.conf files costs more than vmlist's whole budget on zfs-fuse (every open and
read is a trip through FUSE), so what vmlist took from a file is kept with the file's identity
(inode, mtime, ctime, size) and reused while a stat says the file is the same. Edits replace
set.conf by a rename (a new inode), so a changed file never passes for the old one. Only root
writes the cache (the run dir is root's); anyone may read it, so a set.conf others may not read
(one holding a VNC password) is never put in it. A missing or unreadable cache only makes
vmlist read the files.
"""

import json
import stat

from kvm import host
from kvm.errors import KvmError
from kvm.host import lock, paths

FILE = "vmlist.cache"
VERSION = 4   # 2: the facts end with [tpm, limits, pin, agent]; 3: then [[switch, MAC]] of the NICs;
              # 4: then [switch, vlan] (vmlist's columns)
SETTLE = 2  # seconds: a file changed since is read again next time (see cacheable)


def path():
    return paths.current().run_dir / lock.HOST_DIR / FILE


def identity(st):
    """What tells a file from its replacement or an edit in place."""
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size]


def cacheable(st, now):
    """Only what everybody may read anyway goes into a world-readable cache, and only a file
    left alone for a while: zfs-fuse shows whole seconds, so a same-size edit in place within
    the second we read the file would keep its identity; any later edit gets a later time."""
    settled = now - SETTLE
    return bool(st.st_mode & stat.S_IROTH) and st.st_mtime < settled and st.st_ctime < settled


def load():
    """{set.conf path: [identity, facts]} as the last vmlist left it; {} when there is none."""
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}
    return data.get("vms") or {}


def save(old, fresh, prefix):
    """Keep `fresh` for the files under `prefix` (this root's vm folder) and the other roots'
    entries as they were; written only when that changes anything and we are root (a failed
    write is no error: the cache only saves time)."""
    kept = {k: v for k, v in old.items() if not k.startswith(prefix)}
    kept.update(fresh)
    if kept == old or not host.is_root():
        return
    try:
        lock.host_dir()
        host.write_file(path(), json.dumps({"version": VERSION, "vms": kept}), mode=0o644)
    except (KvmError, OSError):
        pass
