"""A VM's disks (vmdisk): list them, add a file disk at a free slot, grow one, detach one.

Where they lie: the main disk is `Disk` at slot 1; every other disk is a Devices item
`SLOT,DRIVER,FILE` at a user slot (3-28, see conf/devices.py), FILE relative to the VM folder
(both hypervisors open it there). A disk vmdisk makes is a file `diskN` in the VM folder, so in
the VM's dataset: snapshots, vmsend and clones carry it. The slot chosen is the lowest user slot
no Devices item uses (any function of it), never 27 with Hotplug (its ports) nor 28 with
CloudInit (the seed), both of which the validation refuses anyway.

While the VM runs: `add` writes set.conf (the next boot has the disk) and asks the hypervisor to
give it to the guest at once where it can (qemu: hot-plug behind a Hotplug port); `grow` is done
only where the hypervisor resizes online (qemu: block_resize; bhyve: nvme and virtio-blk watch
their file), else refused; `detach` is refused. Stopped, each holds the VM's lock, so a start
cannot begin half-way.

Room: a disk is added or grown only when the pool has the room to hold it written in full
(sparse or not: a sparse file that later cannot be written fails the guest's writes), and the
refusal says what the pool can hold.
"""

import os

from kvm import host, zfs
from kvm import vm as vmmod
from kvm.conf import config, confedit, edit
from kvm.conf.config import HOTPLUG_SLOT
from kvm.errors import ConfigError, KvmError, NotFound, StateError, UsageError
from kvm.host import lock
from kvm.host.record import record
from kvm.hypervisor import current as hypervisor

DRIVERS = ("nvme", "virtio-blk", "ahci-hd")
FILE_STEM = "disk"          # new disks are diskN in the VM folder (vmcreate's main disk is `disk`)
USER_SLOTS = range(3, 29)   # bhyve's user slots (conf/devices.py)
CLOUDINIT_SLOT = "28"


class NoRoom(KvmError):
    """The pool cannot hold what was asked."""


# One disk of a VM: id, how vmdisk names it (the file as set.conf writes it); slot, its PCI slot
# (1: the main disk); driver; path, absolute; kind: file, zvol, device or missing; size and used
# in bytes (None when unknown); main: it is Disk=; inside: it lies in the VM folder (its dataset).
@record(frozen=True)
class Disk:
    id: str
    slot: str
    driver: str
    path: str
    kind: str
    size: object
    used: object
    main: bool
    inside: bool
    item: str = ""   # the Devices item as bhyve gets it ('' for the main disk)


def parse_size(vm, text, what="size"):
    """Bytes of a size as typed (2G, 512M, 0.5G, 2GiB; a number alone is MiB): config's rule."""
    try:
        size, _, _ = config.typed_size(text)
    except config.Invalid as exc:
        raise UsageError(f"{what} '{text}' {exc}", vm=vm.name) from None
    if size <= 0:
        raise UsageError(f"{what} '{text}' is zero", vm=vm.name)
    return size


def human(size):
    """1.5G, 512M, 300K: what `zfs list` would print."""
    if size is None:
        return "-"
    for letter, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.1f}{letter}".replace(".0" + letter, letter)
    return f"{size}B"


def _inside(vm, path):
    return config.under(os.path.realpath(path), os.path.realpath(vm.dir))


def _measure(path):
    """(kind, size, used) of a disk's file, zvol or device."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing", None, None
    import stat
    if stat.S_ISREG(st.st_mode):
        return "file", st.st_size, st.st_blocks * 512
    kind = "zvol" if path.startswith("/dev/zvol/") else "device"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return kind, os.lseek(fd, 0, os.SEEK_END), None
        finally:
            os.close(fd)
    except OSError:
        return kind, None, None


def disks(vm, cfg=None):
    """Every disk of the VM: the main Disk, then each Devices disk in slot order."""
    cfg = cfg or vm.config(fresh=True)
    found = []
    if cfg.disk:
        found.append((cfg.variables.get("Disk", cfg.disk), "1", cfg.disk_driver, cfg.disk, True, ""))
    for dev in cfg.devices:
        if dev.kind != "disk" or not dev.path:
            continue
        path = dev.path if dev.path.startswith("/") else os.path.join(vm.dir, dev.path)
        found.append((dev.path, dev.slot, dev.emulation, path, False, dev.arg()))
    zvols = [zvol_name(f[3]) for f in found if zvol_name(f[3])]
    volsizes = zfs.volume_sizes(zvols) if zvols else {}
    return [_disk(vm, *f, volsizes=volsizes) for f in found]


def zvol_name(path):
    """The zvol a /dev/zvol/ path names, else None."""
    return path[len(zfs.ZVOL_DEVICES):] if str(path).startswith(zfs.ZVOL_DEVICES) else None


def _disk(vm, ident, slot, driver, path, main=False, item="", volsizes=None):
    zvol = zvol_name(path)
    if zvol:
        size = (volsizes or {}).get(zvol)
        kind, used = ("zvol" if size is not None else "missing"), None
        inside = zvol.startswith(vm.dataset() + "/")
    else:
        (kind, size, used), inside = _measure(path), _inside(vm, path)
    return Disk(id=ident, slot=str(slot), driver=driver, path=str(path), kind=kind, size=size, used=used,
                main=main, inside=inside, item=item)


def find(vm, name, cfg=None):
    """The disk a command names: by its id as listed (disk1), its file name, its path, or its slot."""
    found = disks(vm, cfg)
    for d in found:
        if name in (d.id, d.slot, d.path, os.path.basename(d.path)) or \
                (name.startswith("/") and os.path.realpath(name) == os.path.realpath(d.path)):
            return d
    names = ", ".join(d.id for d in found) or "none"
    raise NotFound(f"no disk '{name}' (its disks: {names}; see vmdisk list)", vm=vm.name)


def used_slots(cfg):
    """The slot numbers (as text) its Devices use, the ports of Hotplug and the seed of CloudInit."""
    used = {dev.slot.split(":")[0] for dev in cfg.devices}
    if cfg.hotplug:
        used.add(HOTPLUG_SLOT)
    if cfg.variables.get("CloudInit", "0") not in ("", "0"):
        used.add(CLOUDINIT_SLOT)
    return used


def free_slot(vm, cfg):
    """The lowest user slot nothing uses (ConfigError when all are taken)."""
    used = used_slots(cfg)
    for n in USER_SLOTS:
        if str(n) not in used:
            return str(n)
    raise ConfigError("has no free slot for a disk (slots 3-28 are all used by Devices)", vm=vm.name)


def new_file(vm, cfg):
    """diskN: the first name no file of the folder and no disk of set.conf has."""
    taken = {os.path.basename(d.path) for d in disks(vm, cfg)}
    n = 1
    while f"{FILE_STEM}{n}" in taken or os.path.lexists(vm.dir / f"{FILE_STEM}{n}"):
        n += 1
    return f"{FILE_STEM}{n}"


def room(vm):
    """(pool, bytes the VM's dataset can still hold)."""
    dataset = vm.dataset()
    props = zfs.get_props([dataset], ["available"]).get(dataset, {})
    return dataset.split("/")[0], int(props.get("available") or 0)


def check_room(vm, need, what):
    """NoRoom unless the pool can hold `need` more bytes (written in full)."""
    pool, available = room(vm)
    if need > available:
        raise NoRoom(f"pool {pool} has {human(available)} available ({available} bytes): it cannot hold "
                     f"{what} ({human(need)} more, written in full)", vm=vm.name)
    return available


def _running(vm):
    return vmmod.runtime(vm).active


# ------------------------------------------------------------------ add

# What add did: file, the disk's file name; slot; driver; size; online: the guest has it now;
# later: why it waits for the next boot ('' when online or stopped).
@record(frozen=True)
class Added:
    file: str
    slot: str
    driver: str
    size: int
    online: bool = False
    later: str = ""


ZVOL_PROPS = {"volmode": "dev"}   # a zvol is the guest's disk only: the host does not taste its partitions


def add(vm, size, driver="nvme", thick=False, zvol=False):
    """A new disk of `size` bytes at a free slot: a file diskN in the VM folder, or (zvol) a
    volume ROOT/vm/NAME/diskN, volmode=dev, sparse unless thick (see the module's text)."""
    if driver not in DRIVERS:
        raise UsageError(f"driver '{driver}' is not one of {', '.join(DRIVERS)}", vm=vm.name)
    if zvol and size % (1 << 20):
        raise UsageError(f"size {size} bytes: a zvol's size must be a whole number of MiB", vm=vm.name)
    cfg = vm.config(fresh=True)
    running = _running(vm)
    if running:
        return _add(vm, cfg, size, driver, thick, zvol, running=True)
    with lock.hold_vm(vm.run, "vmdisk add"):
        return _add(vm, cfg, size, driver, thick, zvol, running=False)


def _add(vm, cfg, size, driver, thick, zvol, running):
    name = new_file(vm, cfg)
    slot = free_slot(vm, cfg)   # chosen again under the config lock below; checked here for a dry run
    check_room(vm, size, f"a new {human(size)} disk")
    if zvol:
        dataset = f"{vm.dataset()}/{name}"
        if zfs.lzc_exists(dataset):
            raise StateError(f"dataset {dataset} exists already: not a new disk", vm=vm.name)
        zfs.create_volume(dataset, size, sparse=not thick, props=ZVOL_PROPS)
        path = value = zfs.zvol_device(dataset)
        undo = lambda: zfs.destroy_recursive(dataset)   # noqa: E731
    else:
        path, value = vm.dir / name, name
        (host.make_thick if thick else host.make_sparse)(path, size)
        undo = lambda: host.remove_file(path)   # noqa: E731
    chosen = []

    def change(text):
        current = config.validate(vm.name, str(vm.dir), config.read_plain(text).values)
        chosen[:] = [free_slot(vm, current)]
        return confedit.add_item(text, "Devices", f"{chosen[0]},{driver},{value}")
    try:
        edit.apply(vm, change, "vmdisk add")
    except BaseException:
        if not host.dry_run():
            undo()   # set.conf refused it: the disk goes too
        raise
    slot = chosen[0] if chosen else slot
    if not running:
        return Added(name, slot, driver, size)
    later = hypervisor().disk_add_online(vm.run, vm.config(fresh=True), slot, driver, str(path))
    return Added(name, slot, driver, size, online=later is None, later=later or "")


# ------------------------------------------------------------------ grow

# What grow did: disk, the Disk before; size, the new size; online: done on the running VM.
@record(frozen=True)
class Grown:
    disk: object
    size: int
    online: bool = False


def grow(vm, name, size):
    """Grow a disk file to `size` bytes: never smaller; refused outside the VM folder, and while
    the VM runs unless the hypervisor resizes online; the pool must hold the growth."""
    cfg = vm.config(fresh=True)
    disk = find(vm, name, cfg)
    if not disk.inside:
        raise StateError(f"disk {disk.id} ({disk.path}) lies outside the VM's dataset {vm.dataset()}: "
                         f"refusing to grow it (grow it where it lives)", vm=vm.name)
    if disk.kind not in ("file", "zvol"):
        raise StateError(f"disk {disk.id} ({disk.path}) is a {disk.kind}: vmdisk grows files and zvols", vm=vm.name)
    if size < disk.size:
        raise UsageError(f"disk {disk.id} is {human(disk.size)} ({disk.size} bytes): {human(size)} would "
                         f"shrink it, and a disk never shrinks", vm=vm.name)
    if size == disk.size:
        return Grown(disk, size)
    check_room(vm, size - disk.size, f"disk {disk.id} grown to {human(size)}")
    if disk.kind == "zvol":
        if size % (1 << 20):
            raise UsageError(f"size {size} bytes: a zvol's size must be a whole number of MiB", vm=vm.name)
        if _running(vm):
            raise StateError(f"is running: stop it first to grow zvol disk {disk.id}", vm=vm.name)
        with lock.hold_vm(vm.run, "vmdisk grow"):
            zfs.set_volsize(zvol_name(disk.path), size)
        return Grown(disk, size)
    if _running(vm):
        why = hypervisor().disk_grow_online(vm.run, cfg, disk.slot, disk.driver, disk.path, size)
        if why:
            raise StateError(f"is running and {why}: stop it first to grow disk {disk.id}", vm=vm.name)
        return Grown(disk, size, online=True)
    with lock.hold_vm(vm.run, "vmdisk grow"):
        host.grow_file(disk.path, size)
    return Grown(disk, size)


# ------------------------------------------------------------------ detach

def detach(vm, name, destroy=False):
    """Take a disk out of set.conf (kept as a file unless destroy); refused while the VM runs."""
    cfg = vm.config(fresh=True)
    disk = find(vm, name, cfg)
    if destroy and not disk.inside:
        raise StateError(f"disk {disk.id} ({disk.path}) lies outside the VM's dataset {vm.dataset()}: "
                         f"refusing to destroy it (detach it without --destroy)", vm=vm.name)
    if destroy and disk.kind not in ("file", "zvol", "missing"):
        raise StateError(f"disk {disk.id} ({disk.path}) is a {disk.kind}: --destroy removes files and zvols",
                         vm=vm.name)
    if _running(vm):
        raise StateError(f"is running: stop it first to detach disk {disk.id} (no hypervisor here "
                         f"unplugs a disk safely)", vm=vm.name)
    with lock.hold_vm(vm.run, "vmdisk detach"):
        def change(text):
            if disk.main:
                return confedit.remove_value(confedit.remove_value(text, "Disk"), "DiskDriver")
            return confedit.remove_item(text, "Devices", disk.item)
        edit.apply(vm, change, "vmdisk detach")
        if destroy and disk.kind == "file":
            host.remove_file(disk.path)
        elif destroy and zvol_name(disk.path):
            zfs.destroy_recursive(zvol_name(disk.path))
    return disk
