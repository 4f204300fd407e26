"""The receiving side of vmsend (`kvm vmrecv NAME`, run by ssh on DEST or locally with --local):
answer the sender's probe, receive one stream into ROOT/vm/NAME, check the VM it holds can run
here, and on any failure leave DEST as it was before.

A copy is recognised by the `kvm:source` user property, the guid of the sending VM's dataset:
a name that exists here without the same kvm:source is not ours to overwrite.
"""

import os
import time

from kvm import host, hypervisor, net, zfs
from kvm.errors import AlreadyExists, KvmError, NotFound, StateError, UsageError
from kvm.host import lock
from kvm.run import launch
from kvm.vm import Vm, check_free_on_host
from kvm.vm.root import other_roots
from kvm.zfs import stream as zfs_stream

SOURCE_PROP = "kvm:source"
MIGRATED_PROP = "kvm:migrated"
STARTED_PROP = "kvm:started"   # on a received copy: when it was first started here since the receive
SEND_PREFIX = "vmsend-"   # snapshots kvm makes for sending; pruned down to the last common one


def probe(root, name):
    """What the sender needs to plan: is there a copy (and whose: its kvm:source), does it run,
    its snapshots (name, guid), the firmware here, whether receives resume, the token of a partial
    receive to resume, and (bhyve) the VMs of that name in the other roots here. It refuses
    nothing: the sender judges the name (refusal), and the receive judges it again under the VM's
    lock."""
    ds = f"{root.vm_dataset()}/{name}"
    state = zfs_stream.dataset_state(ds, [SOURCE_PROP, STARTED_PROP])  # one call: is it there, whose, snapshots
    exists = state is not None
    props, snaps = state if exists else ({}, [])
    vm = Vm(root, name)
    folder = vm.dir
    found = lock.holder(vm.run.lock)
    return {"dataset": ds, "exists": exists, "elsewhere": [] if exists else same_name_elsewhere(root, name),
            "running": found is not None and not found[1],  # its supervisor holds its lock
            "source": props.get(SOURCE_PROP), "started": props.get(STARTED_PROP),
            "folder": str(folder) if not exists and folder.exists() else None,
            "snaps": snaps,
            "firmware": firmware_here(root.path),
            "switches": net.names(root),  # the sender checks DEST has the switches the VM's NICs use
            "resumable": zfs_stream.can_resume(),
            "token": zfs_stream.resume_token(ds) if exists else None}


def same_name_elsewhere(root, name):
    """Where the hypervisor's VM names are host-wide (bhyve), the VMs of this name in the other
    install roots of this host: [{root, guid, source}] (their dataset's guid and kvm:source), for
    refusal; else []."""
    if not hypervisor.current().host_wide_names:
        return []
    out = []
    for other in other_roots(root):
        vm = Vm(other, name)
        if vm.exists():
            ids = _ids(vm)
            out.append({"root": str(other.path), "guid": ids.get("guid"), "source": ids.get(SOURCE_PROP)})
    return out


def _ids(vm):
    """{guid, kvm:source} of a VM's dataset ({} when it has none)."""
    try:
        ds = zfs.dataset_of_path(vm.dir)
        return zfs.get_props([ds], ["guid", SOURCE_PROP]).get(ds, {}) if ds else {}
    except KvmError:
        return {}


def copy_of(source):
    """spare for check_free_on_host: another root's VM that is the stream's source (vmsend --local)
    or a copy of it (kvm:source) may share the name: it is the same VM."""
    def spare(vm):
        ids = _ids(vm)
        return source in (ids.get("guid"), ids.get(SOURCE_PROP))
    return spare


def started_refusal(info, force):
    """Why an increment must not go into a copy that was started here since its receive (the
    receive rolls back what it changed), or None (force: roll it back)."""
    if info.get("started") and not force:
        return (f"DEST's copy was started there ({info['started']}): an increment would roll back what "
                f"it changed since; vmsend --force to roll that back, or rename it there")
    return None


def newer_refusal(names, base, force):
    """Why an increment on `base` must not go into a copy holding snapshots made there after it
    (receive -F destroys them), or None. vmsend's own snapshots do not count: streams are -i,
    so any other snapshot after base was made on DEST."""
    newer = [s for s in names[names.index(base) + 1:] if not s.startswith(SEND_PREFIX)] if base in names else []
    if newer and not force:
        return (f"DEST's copy has snapshots made there after {base} ({', '.join(newer)}): an increment "
                f"would destroy them; vmsend --force to let it, or rename the copy there")
    return None


def refusal(info, source, mine=()):
    """Why the name cannot take this VM (source: the guid of its dataset; mine: the guids of its
    snapshots, for the hint), or None. A name that exists must be an earlier copy of this VM
    (kvm:source), or a new dataset a full `zfs receive -s` left half-received (no snapshots and
    no kvm:source yet: whose it is, its resume token says, and only the sender can read that)."""
    if info.get("running"):
        return "runs on DEST: stop it there first (a receive never goes into a running copy)"
    if not info["exists"]:
        if info["folder"]:
            return f"{info['folder']} exists on DEST but is not a dataset: not overwritten"
        for other in info.get("elsewhere") or ():
            if source not in (other["guid"], other["source"]):
                return (f"the name is taken on DEST by the VM of {other['root']}: bhyve's VM names are host-wide "
                        f"there (one VM of a name per host, whatever its root): choose another name")
        return None
    have = info["source"]
    if have == source or (info["token"] and have is None and not info["snaps"]):
        return None
    if have is None and info["snaps"] and all(guid in set(mine) for _, guid in info["snaps"]):
        return (f"exists on DEST without kvm:source, though every snapshot it has is this VM's (a receive cut "
                f"off before it was marked?): `zfs set {SOURCE_PROP}={source} {info['dataset']}` there, then "
                f"send again")
    what = f"a copy of another VM (kvm:source={have})" if have else "a VM of DEST's own"
    return f"exists on DEST as {what}: not overwritten (choose another name there)"


def check_identity(root, name, ds, source, exists, token, snaps, have):
    """refusal(), asked again at the receive (under the VM's lock) of what is there now (have:
    its kvm:source)."""
    folder = Vm(root, name).dir
    why = refusal({"exists": exists, "source": have,
                   "folder": str(folder) if not exists and folder.exists() else None, "token": token,
                   "snaps": snaps, "dataset": ds}, source)
    if why:
        raise StateError(why, vm=name)


def read_request(name, fd=0):
    """The sender's request line on stdin, read byte by byte so that nothing of the stream after
    it is taken: (verb, snap, base or None), or None at EOF (the sender chose not to send).
    The line is `VERB SNAP BASE|- SOURCE [force]`; verbs: `recv` (a stream from `zfs send`),
    `resume` (the rest of a partial receive, from `zfs send -t`); force: roll back what a copy
    started here changed. Returns (verb, snap, base, source, force)."""
    raw = b""
    while not raw.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            if raw:
                raise UsageError(f"truncated request '{raw.decode(errors='replace')}'", vm=name)
            return None
        raw += byte
        if len(raw) > 512:
            raise UsageError("request line too long", vm=name)
    words = raw.decode(errors="replace").split()
    if len(words) not in (4, 5) or words[0] not in ("recv", "resume") or not words[3].isdigit() \
            or words[4:] not in ([], ["force"]):
        raise UsageError(f"invalid request '{raw.decode(errors='replace').strip()}'", vm=name)
    return words[0], words[1], None if words[2] == "-" else words[2], words[3], len(words) == 5


def receive(root, name, source, snap, base=None, locked=True, resume=False, force=False):
    """Receive the stream on stdin as ROOT/vm/NAME@snap: incremental from base (a snapshot here),
    or full; `resume`: the rest of a partial receive (zfs send -t), incremental when the copy has
    snapshots; force: into a copy started here since its receive, or holding snapshots made here
    after base, both of which the receive rolls back. Returns the warnings."""
    ds = f"{root.vm_dataset()}/{name}"
    held = lock.hold_vm(Vm(root, name).run, "vmrecv") if locked else None
    try:
        state = zfs_stream.dataset_state(ds, [SOURCE_PROP, STARTED_PROP])  # what is there now, under the lock
        exists = state is not None
        token = zfs_stream.resume_token(ds) if exists else None
        got, snaps = state if exists else ({}, [])
        props = {"source": got.get(SOURCE_PROP), "started": got.get(STARTED_PROP)}
        check_identity(root, name, ds, source, exists, token, snaps, props["source"])
        if not exists:
            check_free_on_host(root, name, spare=copy_of(source))
        had = [s for s, _ in snaps]
        on = _builds_on(name, had, base, resume, token, props, force)
        try:
            return _receive_into(root, name, ds, snap, on, had, token, resume, props, source)
        except BaseException as exc:
            if had:  # DEST had this VM mounted before: whatever failed, it is mounted again
                mount_again(ds, exc)
            raise
    finally:
        if held is not None:
            held.release()


MOUNT_TRIES = 10    # `zfs mount` of a DEST answering "busy" (a file held open a moment): tries, 0.5 s apart


def mount_again(ds, exc=None):
    """Mount DEST's filesystem if a failed step (a receive, a rollback, an unmount) left it unmounted;
    when it cannot be, the error (exc) says exactly what to run there."""
    try:
        if not zfs.lzc_exists(ds) or not zfs.unmounted(ds):
            return
        _mount_retrying(ds)
    except KvmError as why:
        if isinstance(exc, KvmError):
            exc.message += f"; DEST's {ds} is left unmounted ({why.message}): run `zfs mount {ds}` there"


def _mount_retrying(ds, tries=MOUNT_TRIES):
    """zfs mount, tried again while ZFS answers busy."""
    for attempt in range(tries):
        try:
            zfs.mount(ds)
            return
        except KvmError as exc:
            if attempt == tries - 1 or "busy" not in str(exc):
                raise
            time.sleep(0.5)


def _receive_into(root, name, ds, snap, on, had, token, resume, props, source):
    """The receive proper, once what it builds on is known (see receive())."""
    if on and had[-1] != on:
        # what -F does on OpenZFS, done first for every ZFS (zfs-fuse's -F rolls back to the
        # newest snapshot only): only vmsend's own snapshots, or --force, get here
        zfs_stream.rollback_destroying(zfs.snapshot_name(ds, on))
    if token and not resume:
        zfs_stream.abort_partial(ds)  # the sender could not resume it: a fresh stream instead
    started = props["started"]
    _receive_stream(name, ds, on, source)
    try:
        if not on and not zfs_stream.can_receive_props():
            zfs.set_prop(ds, SOURCE_PROP, source)  # zfs-fuse: after the receive (OpenZFS: -o)
        if started:
            zfs.inherit_prop(ds, STARTED_PROP)  # what it changed is rolled back: the copy again
        remount(ds, bool(on))
        warnings = check_runnable(Vm(root, name))
    except BaseException:
        _undo(ds, on)
        raise
    prune(ds, snap)
    return warnings


def _builds_on(name, had, base, resume, token, props, force):
    """The snapshot an increment builds on (and an undo goes back to), None for a full receive;
    refusing what the request and DEST (its snapshot names `had`) do not allow."""
    if resume and not token:
        raise StateError("DEST holds no partial receive to resume", vm=name)
    if base and base not in had:
        raise StateError(f"DEST has no snapshot {base} to receive an increment on: send in full", vm=name)
    if had and not base and not resume:
        raise AlreadyExists("exists on DEST: only an increment can be received into it", vm=name)
    on = base or (had[-1] if had else None)
    why = newer_refusal(had, on, force) or started_refusal(props, force)
    if why:
        raise StateError(why, vm=name)
    return on


PARTIAL_KEPT = "partial-kept"   # vmrecv's stdout line: the sender keeps its snapshot to resume from


class PartialKept(StateError):
    """An interrupted resumable receive: DEST keeps what came, the sender keeps its snapshot."""


def _receive_stream(name, ds, on, source):
    """zfs receive (-s where ZFS has it) of stdin: incremental onto snapshot `on`, or full (then
    kvm:source with -o where ZFS has it). On failure DEST is as it was, except that an
    interrupted resumable receive keeps what came (hidden, unmounted) for the next vmsend."""
    resumable = zfs_stream.can_resume()
    props = {SOURCE_PROP: source} if not on and zfs_stream.can_receive_props() else None
    argv = zfs_stream.lzc_receive_argv(ds, force=bool(on), resumable=resumable, props=props)
    res = host.run(argv, own_stdin=True, check=False)
    if res.status == 0:
        return
    why = zfs_stream.error_text(res.stderr, f"zfs receive exited {res.status}")
    token = resumable and zfs.lzc_exists(ds) and zfs_stream.resume_token(ds)
    if token and "space" not in why:
        raise PartialKept(f"receive interrupted ({why}); DEST keeps what came (zfs receive -s): run vmsend "
                          f"again to resume, or `zfs receive -A {ds}` there to drop it", vm=name)
    if token:
        zfs_stream.abort_partial(ds)  # out of space: the partial would only hold the space
    if not on and zfs.lzc_exists(ds):
        zfs.destroy_recursive(ds)  # a full receive that failed half-way: DEST had no snapshot of it
    if "space" in why:
        raise StateError(f"DEST is out of space ({why}); DEST is unchanged", vm=name)
    raise StateError(f"receive failed ({why}); DEST is unchanged", vm=name)


def remount(ds, received_into_mounted):
    """Mount what was received. After an increment into a mounted filesystem, unmount (never
    forced: busy means someone has files open, then it stays as it is) and mount again, so
    no reader is served pages cached from before the receive (zfs-fuse keeps them)."""
    if received_into_mounted and not zfs.unmounted(ds):
        zfs.try_unmount(ds)
    if zfs.unmounted(ds):
        _mount_retrying(ds)


def _undo(ds, on):
    """Back to what DEST was: the snapshot an increment built on, or nothing (a full receive, into
    a name that had no snapshot)."""
    if on:
        zfs_stream.rollback_destroying(zfs.snapshot_name(ds, on))
    else:
        zfs.destroy_recursive(ds)


def check_runnable(vm):
    """The received VM must load here: set.conf valid, its disk there, its firmware pinned.
    A missing ISO is only a warning (media are per host). Returns the warnings."""
    if not vm.exists():
        raise NotFound(f"the received dataset holds no VM ({vm.dir} lacks set.conf or run)", vm=vm.name)
    cfg = vm.config()
    if cfg.disk and not os.path.exists(cfg.disk):
        raise NotFound(f"disk {cfg.disk} does not exist on DEST (a disk outside the VM folder is not sent)",
                       vm=vm.name)
    check_firmware(vm.name, cfg, firmware_here(vm.root.path))
    warnings = list(cfg.warnings)
    if cfg.iso and not os.path.exists(cfg.iso):
        warnings.append(f"ISO {cfg.iso} is not on DEST: eject it or copy it there before a start")
    # the hypervisor accepts the config here; the VNC port is a start's choice (no port scan now)
    launch.plan(vm, cfg, vnc_port=5900 if cfg.vnc else None, strict=False)
    return warnings


def firmware_here(root):
    """Which loaders the hypervisor in use here can boot: bhyve needs the pinned UEFI code or
    grub-bhyve; qemu boots UEFI with OVMF (pinned, else the host's, as its launch does) and
    grub VMs with its own SeaBIOS. A qemu DEST has no bhyve firmware and needs none."""
    return hypervisor.current().firmware_here(root)


def check_switches(name, cfg, have, force=False):
    """Refuse a VM whose NICs are on switches DEST lacks (`have`: DEST's switch names; None from a
    DEST that predates switches: not checked); --force sends it all the same."""
    if have is None or force:
        return
    missing = sorted({nic.switch for nic in cfg.nics} - set(have))
    if missing:
        raise NotFound(f"DEST has no switch {', '.join(missing)}, which the VM's NICs use (Switch): create "
                       f"{'it' if len(missing) == 1 else 'them'} there first (kvm switch create), or --force", vm=name)


def check_firmware(name, cfg, have):
    """Refuse a VM whose loader DEST has not pinned (an absolute VMrom must exist there)."""
    if cfg.loader and not cfg.vmrom.startswith("/") and not have.get(cfg.loader):
        raise NotFound(f"DEST has no pinned {cfg.loader} firmware: run kvminst there first", vm=name)
    if cfg.vmrom.startswith("/") and not os.path.exists(cfg.vmrom):
        raise NotFound(f"loader {cfg.vmrom} does not exist on DEST", vm=name)


def prune(ds, keep):
    """Destroy the send snapshots older than `keep` (the newest common one); cloned ones stay."""
    names = [s for s, _ in zfs_stream.snapshot_guids(ds)]
    if keep not in names:
        return
    doomed = [zfs.snapshot_name(ds, s) for s in names[:names.index(keep)] if s.startswith(SEND_PREFIX)]
    for full in doomed:
        try:
            zfs.lzc_destroy_snaps([full])
        except KvmError:
            pass  # a clone depends on it: kept (snap list shows it)
        except zfs.ZFSError:
            pass


def check_name_args(name, snap, base):
    for value in (snap, base):
        if value is not None and not value.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UsageError(f"invalid snapshot name '{value}'", vm=name)
