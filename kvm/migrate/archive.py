"""vmexport and vmrestore: a VM in one file, and back.

The file (kvm(8), FILES, "export file"):

    KVMEXPORT 1\\n
    MANIFEST\\n                 one line of JSON: what the file holds (see manifest())
    STREAM 1 ... STREAM N      each `zfs send` stream (through `zstd -c` with --compress zstd),
                               back to back, in the manifest's order
    TRAILER\\n                  one line of JSON: {"manifest_sha256", "streams": [{"size", "sha256"}]}
    KVMEXPORT-END NNNNNNNNNNNNNNNNNNNN\\n   the trailer's length, 20 digits (a fixed 35 bytes)

The sizes and checksums come after the streams, so that an export can be written to a pipe
(`-`) in one pass; a reader finds the trailer from the end. vmrestore checks everything before it
receives anything: the magic, the end tag (a truncated file has none), the total length, the
manifest's checksum, then each stream's size and sha256 in a first pass over the file. From stdin
(`-`) the file is first spooled into the destination root's folder (so its pool), then read so.

A full restore receives into a staging dataset ROOT/vmrestore-PID made under a zfs/txn.py
Transaction: killed (-9 too), its watchdog destroys it; when both die, the next vmrestore finds
it (kvm:creating names a dead pid), destroys it and says so. The VM is renamed into ROOT/vm only
once every stream is in. An incremental restore marks the VM's dataset kvm:restoring=PID:BASE
first; the next vmrestore rolls a VM so marked by a dead pid back to BASE and says so.

A restore under another name than the exported one is a copy, beside an original that may still
exist: it gets what vmclone gives a clone (clone.new_identity: fresh MACs, UEFI vars, TPM and
cloud-init instance, the name on comments, tapNAME, the zvol paths of its own dataset). A restore
under the exported name keeps its identity; where its dataset is another than the exported one
(another root or pool) the zvol paths alone become its own. Kill-safe: the received dataset is
marked kvm:restored-from="NAME DATASET" before it is renamed into ROOT/vm, the mark removed once
the files are rewritten; the next vmrestore completes a VM still so marked and says so.
"""

import json
import os
import re
import shutil
import sys
import time

from kvm import __version__, host, zfs
from kvm import vm as vmmod
from kvm.errors import AlreadyExists, KvmError, NotFound, StateError, UsageError
from kvm.host import lock, pump
from kvm.migrate import receive
from kvm.zfs import stream as zfs_stream
from kvm.zfs import txn

MAGIC = b"KVMEXPORT 1\n"
END_TAG = b"KVMEXPORT-END "
END_LEN = len(END_TAG) + 21            # the tag, 20 digits, a newline
MANIFEST_MAX = 4 << 20                 # a manifest longer than this is not ours
EXPORT_PREFIX = "vmexport-"            # the snapshots vmexport takes
STAGING = "vmrestore-"                 # ROOT/vmrestore-PID: a full restore's staging dataset
SPOOL = ".vmrestore-{pid}.spool"       # stdin spooled in ROOT
RESTORING = "kvm:restoring"            # PID:BASE on a VM an incremental restore is changing
OLD = "vmrestore-old-"                 # ROOT/vmrestore-old-NAME: the VM --force replaces, for a moment
COPIED = "kvm:restored-from"           # "NAME DATASET" on a restored VM whose files are still to be rewritten
COMPRESSORS = {"zstd": (["zstd", "-q", "-c", "-T0"], ["zstd", "-q", "-d", "-c"])}


class BadExport(KvmError):
    """The file is not a whole, intact vmexport file."""


def check_compressor(method, platform_hint):
    """None for 'none'; for zstd, a one-line error naming the package when it is missing."""
    if method in (None, "none"):
        return None
    if method not in COMPRESSORS:
        raise UsageError(f"--compress '{method}': use zstd or none")
    if shutil.which("zstd") is None:
        raise StateError(f"--compress zstd: zstd is not installed ({platform_hint(['zstd'])})")
    return method


# ------------------------------------------------------------------ export

def tree(vm):
    """The VM's dataset and its descendants (filesystems and volumes), parents first."""
    rows = zfs.get_props([vm.dataset()], ["type"], recursive=True)
    return sorted(n for n, p in rows.items() if p.get("type") in ("filesystem", "volume"))


def check_inside(vm, cfg, datasets):
    """What set.conf uses must lie in the VM's own datasets (vmsend's rule)."""
    from kvm.storage import snap as snapmod
    extra = [d for d in snapmod.datasets_of(vm, cfg) if d not in datasets]
    if extra:
        raise StateError(f"its data lies also on {', '.join(extra)}: vmexport exports {vm.dataset()} and its "
                         f"children only (move the disk into the VM folder)", vm=vm.name)


def check_file(vm, path):
    """FILE may not lie in the VM's own dataset (it would export itself), nor exist."""
    if path == "-":
        if sys.stdout.isatty():
            raise UsageError("FILE is '-' but stdout is a terminal: redirect it to a file or a pipe", vm=vm.name)
        return
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)) or ".")
    mine = os.path.realpath(vm.dir)
    if folder == mine or folder.startswith(mine + "/"):
        raise UsageError(f"export file {path} lies in the VM's own dataset {vm.dataset()}: write it elsewhere",
                         vm=vm.name)
    if not os.path.isdir(folder):
        raise NotFound(f"export file {path}: folder {folder} does not exist", vm=vm.name)
    if os.path.lexists(path):
        raise AlreadyExists(f"export file {path} exists: not overwritten (remove it first)", vm=vm.name)


def snapshots_of(ds):
    return [s for s, _ in zfs_stream.snapshot_guids(ds)]


def pick_snapshots(vm, datasets, snapshot, base):
    """(snapshot, made): the given one (on every dataset), or a new vmexport-STAMP set."""
    for name in (snapshot, base):
        if name is None:
            continue
        missing = [d for d in datasets if name not in snapshots_of(d)]
        if missing:
            raise NotFound(f"no snapshot '{name}' on {', '.join(missing)} (snap list {vm.name})", vm=vm.name)
    if snapshot is None:
        snapshot = time.strftime(f"{EXPORT_PREFIX}%Y%m%d-%H%M%S")
        zfs.lzc_snapshot([zfs.snapshot_name(d, snapshot) for d in datasets])   # all at once
        made = True
    else:
        made = False
    if base is not None:
        order = snapshots_of(datasets[0])
        if order.index(base) >= order.index(snapshot):
            raise UsageError(f"--incremental-from {base} is not older than {snapshot}", vm=vm.name)
    return snapshot, made


def manifest(vm, cfg, datasets, snapshot, base, compress):
    """What the file holds, before its streams (sizes and checksums go in the trailer)."""
    from kvm.manage import install
    guids = {d: dict(zfs_stream.snapshot_guids(d)) for d in datasets}
    types = zfs.get_props(datasets, ["type"])
    streams = []
    for d in datasets:
        rel = d[len(vm.dataset()):].lstrip("/")
        streams.append({"dataset": rel, "type": types.get(d, {}).get("type"), "snapshot": snapshot,
                        "guid": guids[d][snapshot], "base": base, "base_guid": guids[d].get(base) if base else None})
    try:
        conf = vm.conf_path.read_text(errors="surrogateescape")
    except OSError:
        conf = ""
    return {"format": 1, "kvm": __version__, "name": vm.name, "dataset": vm.dataset(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "snapshot": snapshot, "base": base, "compress": compress or "none", "set.conf": conf,
            "snapshots": snapshots_of(vm.dataset()), "disk_driver": cfg.disk_driver,
            "firmware": install.read_manifest(vm.root.path / "firmware"), "streams": streams}


def export(vm, cfg, path, snapshot=None, base=None, compress=None, progress=None, say=None):
    """Write the export file (or stdout for '-'); returns the manifest."""
    datasets = tree(vm)
    check_inside(vm, cfg, datasets)
    check_file(vm, path)
    from kvm.storage import snap as snapmod
    with snapmod.hold(vm, "vmexport", running_ok=True):
        snapshot, made = pick_snapshots(vm, datasets, snapshot, base)
    if made and say:
        say(f"{vm.name}: exporting from a new snapshot {snapshot}"
            + (" (the VM keeps running: crash-consistent)" if vmmod.runtime(vm).active else ""))
    try:
        info = manifest(vm, cfg, datasets, snapshot, base, compress)
        _write(vm, path, info, datasets, progress)
    except BaseException:
        if made:   # the snapshot taken for a failed export goes with it
            try:
                zfs.lzc_destroy_snaps([zfs.snapshot_name(d, snapshot) for d in datasets])
            except (KvmError, zfs.ZFSError):
                pass
        raise
    return info


def _write(vm, path, info, datasets, progress):
    head = MAGIC + json.dumps(info, sort_keys=True).encode() + b"\n"
    partial = None
    if path == "-":
        fd = sys.stdout.buffer.fileno()
    else:
        partial = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.partial")
        if os.path.lexists(partial):
            host.remove_file(partial)   # a killed vmexport's (the name says whose)
        fd = pump.create_exclusive(partial, 0o600)
    try:
        _all(fd, head)
        sums, done = [], 0
        for d, item in zip(datasets, info["streams"]):
            snap = zfs.snapshot_name(d, item["snapshot"])
            frm = zfs.snapshot_name(d, item["base"]) if item["base"] else None
            argvs = [zfs_stream.lzc_send_argv(snap, frm)]
            if info["compress"] != "none":
                argvs.append(COMPRESSORS[info["compress"]][0])
            count = (lambda n, before=done: progress(before + n)) if progress else None
            if partial:   # a regular file: the last command writes it itself, hashed behind it
                size, sha, results = pump.pump_to_file(argvs, fd, count)
            else:
                size, sha, results = pump.pump_out(argvs, fd, count)
            _check(vm, results, "export")
            sums.append({"size": size, "sha256": sha})
            done += size
        trailer = json.dumps({"manifest_sha256": _sha(head), "streams": sums}, sort_keys=True).encode() + b"\n"
        _all(fd, trailer + END_TAG + b"%020d\n" % len(trailer))
        if partial:
            os.fsync(fd)
    except OSError as exc:
        _drop(fd, partial)
        raise StateError(f"cannot write {path}: {exc.strerror or exc}", vm=vm.name) from None
    except BaseException:
        _drop(fd, partial)
        raise
    if partial:
        os.close(fd)
        os.rename(partial, path)
    if progress:
        progress(done, final=True)


def _drop(fd, partial):
    if partial:
        os.close(fd)
        try:
            os.unlink(partial)
        except OSError:
            pass


def _all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _sha(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def _check(vm, results, what):
    for argv, status, err in results:
        if status != 0:
            lines = [x for x in err.strip().splitlines() if x.strip()]
            why = lines[-1] if lines else f"exit status {status}"
            raise StateError(f"{what} failed: {os.path.basename(argv[0])} {argv[1] if len(argv) > 1 else ''}: "
                             f"{why}".replace("  ", " "), vm=vm.name)


# ------------------------------------------------------------------ snap auto --export-to

AUTO_SUFFIX = ".kvmexport"


def auto_file(name, snap):
    """The file name `snap auto --export-to` gives an export: NAME-auto-YYYYmmdd-HHMM.kvmexport."""
    return f"{name}-{snap}{AUTO_SUFFIX}"


def prune_exports(folder, name, keep, dry_run=False):
    """Remove all but the newest `keep` NAME-auto-*.kvmexport files of FOLDER (names sort by
    time); returns the paths removed (or, dry, that would be). Other files are never touched."""
    prefix = f"{name}-auto-"
    mine = sorted(e for e in os.listdir(folder) if e.startswith(prefix) and e.endswith(AUTO_SUFFIX)
                  and e[len(prefix):-len(AUTO_SUFFIX)].replace("-", "").isdigit())
    doomed = [os.path.join(folder, e) for e in mine[:max(0, len(mine) - keep)]]
    if not dry_run:
        for path in doomed:
            host.remove_file(path)
    return doomed


# ------------------------------------------------------------------ reading a file

class Export:
    """A verified export file: its manifest and where each stream lies."""

    def __init__(self, path, info, spans):
        self.path, self.info, self.spans = path, info, spans   # spans: [(offset, size)]


def read(path, progress=None):
    """The verified Export of a regular file; BadExport naming what is wrong."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise NotFound(f"{path}: {exc.strerror}") from None
    with fh:
        st = os.fstat(fh.fileno())
        import stat
        if not stat.S_ISREG(st.st_mode):
            raise BadExport(f"{path} is not a regular file")
        length = st.st_size
        if fh.read(len(MAGIC)) != MAGIC:
            raise BadExport(f"{path} is not a vmexport file (no {MAGIC.strip().decode()} header)")
        line = fh.readline(MANIFEST_MAX)
        if not line.endswith(b"\n"):
            raise BadExport(f"{path}: its manifest is cut off (a truncated file?)")
        head = MAGIC + line
        if length < len(head) + END_LEN:
            raise BadExport(f"{path} is truncated: no end tag")
        fh.seek(length - END_LEN)
        tag = fh.read(END_LEN)
        if not tag.startswith(END_TAG) or not tag[len(END_TAG):-1].isdigit() or not tag.endswith(b"\n"):
            raise BadExport(f"{path} is truncated or damaged: no end tag (an export cut off before its end?)")
        tlen = int(tag[len(END_TAG):-1])
        if tlen > length - len(head) - END_LEN:
            raise BadExport(f"{path} is damaged: its end tag names a trailer longer than the file")
        fh.seek(length - END_LEN - tlen)
        try:
            trailer = json.loads(fh.read(tlen))
            info = json.loads(line)
            sums = trailer["streams"]
        except (ValueError, KeyError, TypeError):
            raise BadExport(f"{path} is damaged: its manifest or trailer is not what vmexport writes") from None
        if trailer.get("manifest_sha256") != _sha(head):
            raise BadExport(f"{path} is damaged: its manifest does not match its checksum")
        if len(sums) != len(info.get("streams", ())):
            raise BadExport(f"{path} is damaged: {len(sums)} checksums for {len(info['streams'])} streams")
        body = length - len(head) - tlen - END_LEN
        if sum(s["size"] for s in sums) != body:
            raise BadExport(f"{path} is damaged: its streams hold {body} bytes, its trailer says "
                            f"{sum(s['size'] for s in sums)}")
        spans, offset, done = [], len(head), 0
        for n, s in enumerate(sums):
            sha, _ = pump.hash_range(fh, offset, s["size"], progress, done)
            if sha != s["sha256"]:
                raise BadExport(f"{path} is damaged: stream {n + 1} ({info['streams'][n]['dataset'] or 'the VM'}) "
                                f"does not match its sha256; nothing was received")
            spans.append((offset, s["size"]))
            offset += s["size"]
            done += s["size"]
    return Export(path, info, spans)


# ------------------------------------------------------------------ restore

def clean_leftovers(root, say):
    """What a killed vmrestore left: staging datasets (their creator and watchdog dead), a spool
    file of a dead pid, a VM --force was replacing, a VM an incremental restore was changing."""
    base = root.dataset()
    rows = zfs.get_props([base], [txn.CREATING, "type"], recursive=True, depth=1, with_source=True)
    for name in txn.stale(base, {n: p for n, p in rows.items() if n.split("/")[-1].startswith(STAGING)}):
        # empty once its VM was moved into ROOT/vm (killed after that): nothing of a VM is lost
        empty = list(zfs.get_props([name], ["type"], recursive=True)) == [name]
        zfs.destroy_recursive(name)
        say(f"vmrestore: removed {name}, the empty staging dataset of a vmrestore killed after its VM was in place"
            if empty else f"vmrestore: removed {name}, a half-restored VM a killed vmrestore left")
    for name in rows:
        short = name.split("/")[-1]
        if short.startswith(OLD):
            vm_name = short[len(OLD):]
            target = f"{root.vm_dataset()}/{vm_name}"
            if zfs.lzc_exists(target):
                zfs.destroy_recursive(name)
                say(f"vmrestore: {vm_name}: removed {name}, the copy a killed vmrestore --force had replaced")
            else:
                zfs.lzc_rename(name, target)
                say(f"vmrestore: {vm_name}: put back {target}, which a killed vmrestore --force had moved aside")
    for entry in os.listdir(root.path):
        if entry.startswith(".vmrestore-") and entry.endswith(".spool"):
            pid = entry[len(".vmrestore-"):-len(".spool")]
            if pid.isdigit() and not host.pid_alive(int(pid)):
                host.remove_file(root.path / entry)
                say(f"vmrestore: removed {root.path / entry}, stdin a killed vmrestore had spooled")
    marked = zfs.get_props([root.vm_dataset()], [RESTORING], recursive=True, depth=1, with_source=True)
    for name, props in marked.items():
        value, source = props.get(RESTORING, (None, "-"))
        if source != "local" or not value:
            continue
        pid, _, snap = value.partition(":")
        if pid.isdigit() and not host.pid_alive(int(pid)):
            for d in sorted(zfs.get_props([name], ["type"], recursive=True), reverse=True):
                if snap in snapshots_of(d):
                    zfs_stream.rollback_destroying(zfs.snapshot_name(d, snap))
            zfs.inherit_prop(name, RESTORING)
            say(f"vmrestore: {name.split('/')[-1]}: rolled back to {snap}, where a killed incremental vmrestore "
                f"had left it half-applied")
    marked = zfs.get_props([root.vm_dataset()], [COPIED], recursive=True, depth=1, with_source=True)
    for name, props in marked.items():
        value, source = props.get(COPIED, (None, "-"))
        vm = vmmod.Vm(root, name.split("/")[-1])
        if source != "local" or not value or name == root.vm_dataset() or not vm.exists():
            continue
        try:
            held = lock.hold_vm(vm.run, "vmrestore")   # taken here, or refused at once
        except KvmError:
            continue   # a vmrestore at work on it now (or the VM runs): not ours to finish now
        with held:
            try:
                done = finish_copy(vm)
            except KvmError as exc:   # said, and left marked: it must not stop every restore
                say(f"vmrestore: {vm.name}: cannot rewrite the files of this copy of {value.split(' ')[0]} yet "
                    f"({exc.message}): it still names the original's")
                continue
            if done:
                say(f"vmrestore: {vm.name}: rewrote the files of this copy of {value.split(' ')[0]}, which a "
                    f"killed vmrestore had left naming the original's")


def spool_stdin(root, say=None):
    """stdin into ROOT/.vmrestore-PID.spool (the destination pool); its path."""
    if sys.stdin.isatty():
        raise UsageError("FILE is '-' but stdin is a terminal: pipe an export into it")
    path = root.path / SPOOL.format(pid=os.getpid())
    try:
        pump.spool(sys.stdin.buffer.fileno(), path)
    except OSError as exc:
        raise StateError(f"cannot spool stdin into {root.path} ({exc.strerror or exc}); nothing was "
                         f"received") from None
    return path


def restore(root, exp, name, force=False, progress=None, say=None):
    """Receive a verified Export as VM `name` (full: a new VM, or --force replacing one;
    incremental: onto the VM holding its base). Returns the warnings."""
    info = exp.info
    vmmod.check_name(name)
    target = f"{root.vm_dataset()}/{name}"
    copied = copy_of(info, name, target)
    if copied and copied[0] != name:
        check_copy(root, info, name)
    with lock.hold_vm(vmmod.Vm(root, name).run, "vmrestore"):
        try:
            if info.get("base"):
                _incremental(root, exp, name, target, progress, copied)
            else:
                _full(root, exp, name, target, force, progress, copied)
        except BaseException:
            if copied:   # an increment rolled back to its base: the copy's files again, when it can
                try:
                    finish_copy(vmmod.Vm(root, name))
                except (KvmError, zfs.ZFSError):
                    pass   # still marked: the next vmrestore completes it
            raise
        if copied:
            finish_copy(vmmod.Vm(root, name))
    warnings = []
    try:
        warnings = receive.check_runnable(vmmod.Vm(root, name))
    except KvmError as exc:
        warnings.append(exc.message)
    return warnings


def exported_dataset(info):
    """The exported VM's dataset: the manifest's (since it names it), else the ROOT/vm/NAME its
    set.conf's zvol paths name (a file of an earlier version), else None."""
    if info.get("dataset"):
        return info["dataset"]
    found = re.search(rf"/dev/zvol/((?:[^/\s\"',]+/)+vm/{re.escape(info['name'])})/", info.get("set.conf") or "")
    return found.group(1) if found else None


def copy_of(info, name, target):
    """(exported name, exported dataset) when the restored VM is to be rewritten (another name, or
    another dataset its zvol paths must follow), else None."""
    old_name, old_ds = info["name"], exported_dataset(info) or target
    return (old_name, old_ds) if (old_name, old_ds) != (name, target) else None


def check_copy(root, info, name):
    """Before anything is received: what a copy named `name` needs (the tap name vmcreate would
    derive for it, fresh UEFI vars), refused as vmclone refuses it."""
    from kvm.manage import clone, create, rename
    text = info.get("set.conf") or ""
    if rename.uses_tap(text, info["name"]):
        create.derived_tap(name)
    clone.vars_template(root, _loader(text), name, "the restored copy")


def _loader(text):
    """The loader kind a set.conf's text names (uefi, grub), read as text: never refused here."""
    from kvm.conf import config, shconf
    try:
        return config.loader_kind(str(shconf.read_plain(text).values.get("VMrom") or ""))
    except KvmError:
        return None


def finish_copy(vm):
    """The files of a VM marked kvm:restored-from rewritten (see the module's doc), then the mark
    removed; True when there was one. Done again, it changes nothing but the fresh identity."""
    value = zfs.get_prop(vm.dataset(), COPIED)
    if not value or value == "-" or " " not in value:
        return False
    old_name, old_ds = value.split(" ", 1)
    from kvm.manage import clone, rename
    if old_name != vm.name:
        from kvm.conf.shconf import read_text
        text = read_text(str(vm.conf_path))   # a link is refused, as every set.conf read refuses it
        clone.new_identity(old_name, vm, clone.vars_template(vm.root, _loader(text), vm.name, "the restored copy"),
                           old_ds)
    else:
        rename.rewrite_files(vm, old_name, old_dataset=old_ds)
    vm.forget_config()
    zfs.inherit_prop(vm.dataset(), COPIED)
    return True


def _argvs(info, dataset, force=False):
    argvs = []
    if info.get("compress", "none") != "none":
        argvs.append(COMPRESSORS[info["compress"]][1])
    argvs.append(zfs_stream.lzc_receive_argv(dataset, force=force))
    return argvs


def _full(root, exp, name, target, force, progress, copied=None):
    exists = zfs.lzc_exists(target)
    if exists and not force:
        raise AlreadyExists("exists: not overwritten (vmrestore --force replaces it, or give another NAME)", vm=name)
    if exists and vmmod.runtime(vmmod.Vm(root, name)).active:
        raise StateError("is running: stop it before vmrestore --force replaces it", vm=name)
    staging = f"{root.dataset()}/{STAGING}{os.getpid()}"
    with txn.Transaction(staging):
        done = 0
        for item, (offset, size) in zip(exp.info["streams"], exp.spans):
            into = f"{staging}/{name}" + (f"/{item['dataset']}" if item["dataset"] else "")
            count = (lambda n, before=done: progress(before + n)) if progress else None
            _check(vmmod.Vm(root, name), pump.pump_in(exp.path, offset, size, _argvs(exp.info, into), count),
                   "restore")
            done += size
        if copied:   # marked before it is a VM in ROOT/vm: a kill from here on is completed later
            zfs.set_prop(f"{staging}/{name}", COPIED, " ".join(copied))
        if exists:
            old = f"{root.dataset()}/{OLD}{name}"
            zfs.lzc_rename(target, old)
            zfs.lzc_rename(f"{staging}/{name}", target)
            zfs.destroy_recursive(old)
        else:
            zfs.lzc_rename(f"{staging}/{name}", target)
        # not committed: the watchdog destroys the staging dataset, empty now
    if progress:
        progress(done, final=True)


def _incremental(root, exp, name, target, progress, copied=None):
    info = exp.info
    base = info["base"]
    if not zfs.lzc_exists(target):
        raise NotFound(f"no VM to apply the increment on {base} to (restore the full export first)", vm=name)
    if vmmod.runtime(vmmod.Vm(root, name)).active:
        raise StateError("is running: stop it before an incremental vmrestore", vm=name)
    plan = []
    for item in info["streams"]:
        d = target + (f"/{item['dataset']}" if item["dataset"] else "")
        guids = dict(zfs_stream.snapshot_guids(d)) if zfs.lzc_exists(d) else {}
        if base not in guids:
            raise StateError(f"{d} has no snapshot {base}, the base of this increment: restore onto the VM "
                             f"that holds it", vm=name)
        if str(guids[base]) != str(item["base_guid"]):
            raise StateError(f"{d}@{base} is another snapshot than the base of this increment (guid "
                             f"{guids[base]}, the file's base {item['base_guid']}): wrong base", vm=name)
        if item["snapshot"] in guids:
            raise StateError(f"{d} has {item['snapshot']} already: this increment is applied", vm=name)
        later = list(guids)[list(guids).index(base) + 1:]
        if later:
            raise StateError(f"{d} has snapshots after {base} ({', '.join(later)}): an increment on {base} "
                             f"would destroy them", vm=name)
        plan.append(d)
    zfs.set_prop(target, RESTORING, f"{os.getpid()}:{base}")
    if copied:   # the increment brings the exported set.conf back: rewritten again after it
        zfs.set_prop(target, COPIED, " ".join(copied))
    done = 0
    try:
        for d, (offset, size) in zip(plan, exp.spans):
            count = (lambda n, before=done: progress(before + n)) if progress else None
            _check(vmmod.Vm(root, name), pump.pump_in(exp.path, offset, size, _argvs(info, d, force=True), count),
                   "restore")
            done += size
    except BaseException:
        for d in reversed(plan):
            try:
                zfs_stream.rollback_destroying(zfs.snapshot_name(d, base))
            except (KvmError, zfs.ZFSError):
                pass
        zfs.inherit_prop(target, RESTORING)
        raise
    zfs.inherit_prop(target, RESTORING)
    receive.remount(target, True)
    if progress:
        progress(done, final=True)
