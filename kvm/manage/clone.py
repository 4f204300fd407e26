"""vmclone SRC DST: a ZFS clone of SRC's snapshot with a new identity (fresh MACs and UEFI vars,
tap names, comments and zvol paths rewritten by vmrename's own rewrite, no rc.d script, no
run-time state); --independent copies the snapshot's files instead, so DST depends on nothing.

The zvols below SRC's dataset that set.conf uses as disks (vmdisk add --zvol, vmcreate
--disk-zvol) come along: one snapshot set over SRC's dataset and them, taken at once, and a clone
of each below DST's dataset (volmode=dev, as kvm makes zvols), DST's set.conf naming DST's own.

All under the creation transaction: a failure or kill -9 leaves neither DST (its zvol clones are
below it) nor the snapshots (clone-DST-...) the clone was to be made of.
"""

import os
import random
import re
import time

from kvm import host, zfs
from kvm.conf import cloudinit, config
from kvm.conf.guestconf import TPM_DIR
from kvm.conf.shconf import read_text
from kvm.errors import NotFound, UsageError
from kvm.host import lock
from kvm.hypervisor import current as hypervisor
from kvm.manage import rename
from kvm.manage.disks import ZVOL_PROPS
from kvm.manage.create import check_new
from kvm.run import swtpm
from kvm.storage import images
from kvm.storage import snap as snapmod
from kvm.zfs.txn import Transaction
from kvm.zfs.txn import clone as zclone

# files that are the source's alone: never in a clone
# (OVMF_VARS.fd is qemu's vars copy: the clone's must be fresh too, made as for a new VM)
LEFT_OUT = ("console.log", "OVMF_VARS.fd", rename.INTENT)
_MAC_RE = re.compile(r"mac=[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")


def new_mac():
    """A random locally administered unicast MAC (58:9c:fc is bhyve's own; 02: is ours)."""
    return "02:" + ":".join(f"{random.randrange(256):02x}" for _ in range(5))


def fresh_macs(text):
    return _MAC_RE.sub(lambda _m: f"mac={new_mac()}", text)


def plan(root, src, dst, snap=None, independent=False):
    """(target Vm, origin snapshot, snapshots to take or None, vars template or None, the zvols to
    clone along, the snapshot's short name); checks first."""
    target = check_new(root, dst)
    cfg = src.config()
    # the copy's set.conf is SRC's: it must be one a VM can start from, as any set.conf kvm writes
    config.validate(src.name, str(src.dir), cfg.variables, reading=config.Reading(cfg.variables, cfg.unevaluated),
                    startable=True)
    rename.check_taps(src, cfg, dst)  # tapSRC becomes tapDST: refused here when that is too long
    ds = src.dataset()
    used = [d for d in snapmod.datasets_of(src, cfg) if d != ds]
    zvols = sorted(d for d in used if d.startswith(ds + "/"))   # its own zvols: cloned with it
    others = [d for d in used if d not in zvols]
    if others:  # a clone would share that disk with SRC, and the copy would not have it
        raise UsageError(f"uses disks on other datasets ({', '.join(others)}): vmclone clones only {ds} "
                         f"and the zvols below it", vm=src.name)
    if zvols and independent:
        raise UsageError(f"--independent copies files, and its disk {', '.join(zfs.zvol_device(z) for z in zvols)} "
                         f"is a zvol: vmclone without --independent clones it too, or vmexport and vmrestore "
                         f"under the new name make a copy that depends on nothing", vm=src.name)
    if not host.dry_run():   # (a dry run shows its zfs commands: on zfs-fuse too, which has no zvols)
        missing = [z for z in zvols if not zfs.lzc_exists(z)]
        if missing:
            raise NotFound(f"its disk {', '.join(zfs.zvol_device(z) for z in missing)} names no zvol that exists "
                           f"({', '.join(missing)}): nothing to clone it from", vm=src.name)
    own = None
    if snap:
        for d in [ds, *zvols]:
            if not zfs.lzc_exists(zfs.snapshot_name(d, snap)):
                raise NotFound(f"no snapshot '{snap}' of {d}", vm=src.name)
    else:
        snap = time.strftime(f"clone-{dst}-%Y%m%d%H%M%S")
        own = [zfs.snapshot_name(d, snap) for d in [ds, *zvols]]   # one set, taken at once
    template = vars_template(root, cfg.loader, dst)
    return target, zfs.snapshot_name(ds, snap), own, template, zvols, snap


def vars_template(root, loader, dst, what="the clone"):
    """(template, file name) of fresh UEFI vars for a copy named dst, as the hypervisor in use
    gives a new VM; None for another loader; NotFound when none is pinned."""
    if loader != "uefi":
        return None
    source, name, missing = hypervisor().uefi_vars(root.path)
    if source is None:
        raise NotFound(f"{missing} ({what} needs fresh UEFI vars)", vm=dst)
    return source, name


def clone(root, src, dst, snap=None, independent=False):
    """Make DST; returns (Vm, origin snapshot)."""
    target, origin, own, template, zvols, short = plan(root, src, dst, snap, independent)
    # SRC's lock keeps snap rollback and the like out meanwhile; a running SRC is fine
    with snapmod.hold(src, "vmclone", running_ok=True), lock.hold_vm(target.run, "vmclone"):
        check_new(root, dst)   # again under DST's lock: another vmclone may have made it meanwhile
        with Transaction(target.dataset(), origin=None if independent else origin, own_snap=own) as txn:
            if independent:
                copy_snapshot(target, origin)
            for zvol in zvols:   # below DST, so the transaction's watchdog destroys them with it
                zclone(zfs.snapshot_name(zvol, short), target.dataset() + zvol[len(src.dataset()):], ZVOL_PROPS)
            if not host.dry_run():
                new_identity(src.name, target, template)
            txn.commit()
        if independent and own:
            zfs.lzc_destroy_snaps(own)  # taken only to copy from
    return target, origin


def copy_snapshot(target, origin):
    """The snapshot's files into DST, through a clone mounted inside DST for the copy only."""
    tmp = f"{target.dataset()}/kvm-copy"
    zclone(origin, tmp, {"readonly": "on"})
    src_dir = target.dir / "kvm-copy"
    if not host.dry_run():
        for entry in os.listdir(src_dir):
            if os.path.isfile(src_dir / entry):
                images.copy_hashing(src_dir / entry, target.dir / entry)
                os.chmod(target.dir / entry, os.stat(src_dir / entry).st_mode & 0o7777)
    zfs.destroy_recursive(tmp)
    if not host.dry_run() and src_dir.is_dir():
        src_dir.rmdir()


def new_identity(src_name, target, template, old_dataset=None):
    """The copy's own MACs, vars, names, zvol paths (those below old_dataset, default ROOT/vm/SRC);
    what belongs to SRC alone is removed. vmclone's, and vmrestore's under another name. Done
    again, it gives yet another fresh identity: a killed one is completed so."""
    for entry in os.listdir(target.dir):
        if entry in LEFT_OUT or entry.endswith(".log"):
            host.remove_file(target.dir / entry)
    rename.rewrite_files(target, src_name, taps=True, old_dataset=old_dataset)
    conf = target.conf_path
    text = read_text(str(conf))
    if _MAC_RE.search(text):
        host.write_file(conf, fresh_macs(text), mode=config.mode_for(text, conf.stat().st_mode & 0o7777))
    for _key, path, kind in config.media(target.config(fresh=True)):
        if kind == "disk" and config.under(os.path.realpath(path), os.path.realpath(target.dir)):
            host.tighten_mode(path, images.DISK_MODE)  # the source's may be 0644 (the shell toolkit's)
    if template is not None:
        host.copy_file(template[0], target.dir / template[1], mode=0o644)
    swtpm.fresh_identity(target.dir / TPM_DIR)   # a TPM of its own, made at its first start
    if (target.dir / cloudinit.STATE).exists():  # a seed of its own: new instance-id, its own name
        seed = cloudinit.saved(target)
        if seed.hostname in ("", src_name):
            seed.hostname = target.name
        cloudinit.write_seed(target, seed)
