"""Creating a VM: answers checked first, then dataset, files, disk and vars under one transaction."""

import os
import re

from kvm import host, hypervisor, platform, zfs
from kvm import vm as vmmod
from kvm.conf import cloudinit, config, switchconf
from kvm.conf.templating import render
from kvm.errors import AlreadyExists, ConfigError, NotFound, StateError, UsageError
from kvm.host.record import field, record
from kvm.platform import rcd
from kvm.storage import images
from kvm.zfs.txn import CREATING, Transaction, clean_stale, stale

DISK_FILE = "disk"
IFNAME_MAX = 15
# what `vmcreate -y` gives when no --disk-size says otherwise: room for a usual server install
# (vm-bhyve's default too); the file is sparse, so it costs nothing until the guest writes
DEFAULT_DISK_SIZE = "20G"
DEFAULT_BRIDGE = "bridgeLOCAL"  # the shell toolkit's default bridge


@record()
class Answers:
    """Everything vmcreate needs, as given on flags or at the prompts."""

    loader: str = ""
    boot: str = ""
    cores: str = ""
    mem: str = ""
    options: str = ""
    disk_size: str = ""
    disk_driver: str = ""
    network: bool = False
    bridge: str = DEFAULT_BRIDGE
    tap: str = ""
    uplink: str = ""
    nics: list = field(default_factory=list)  # [(switch, vlan)]: NICs on kvm switches (vmcreate --switch)
    vnc: str = ""          # "", "1", "wait"
    vnc_addr: str = ""
    com: bool = False
    iso: str = ""
    image: str = ""        # vmcreate --from: the dataset is a clone of this image's @base
    disk_zvol: bool = False  # vmcreate --disk-zvol: the main disk is the zvol ROOT/vm/NAME/disk
    cloud_init: object = None  # a cloudinit.Seed to write as seed.iso, or None
    tpm: str = ""          # TPM, Limits, CPUPin as set.conf writes them; Agent=yes
    limits: str = ""
    cpu_pin: str = ""
    agent: bool = False
    nic: str = "virtio-net"   # the basic network's emulation (vmcreate --windows: e1000)
    warnings: list = field(default_factory=list)


def disk_size(text, what="disk size"):
    """(bytes, text to show, how it was read or None) of a disk size as typed (config.typed_size:
    20G, 20GB, 0.5G, 512 = MiB); a zero size is refused (--no-disk makes no disk)."""
    try:
        size, written, how = config.typed_size(text)
    except config.Invalid as exc:
        raise UsageError(f"{what} '{text}' {exc}") from None
    if not size:
        raise UsageError(f"{what} '{text}' is zero (--no-disk: no disk)")
    return size, written, how


def default_tap(name):
    """tapNAME: the shell toolkit's tap of a VM (NAME upper-cased, '.' and '-' as '_')."""
    return "tap" + name.upper().replace(".", "_").replace("-", "_")


def derived_tap(name, suffix=""):
    """The tap a VM named `name` gets (default_tap, then `suffix`), checked as every interface name
    kvm writes: vmcreate, vmclone and vmimport all derive taps here (a VM name may have 31
    characters, an interface name 15)."""
    tap = default_tap(name) + suffix
    if len(tap) > IFNAME_MAX:
        raise UsageError(f"its tap '{tap}' is longer than {IFNAME_MAX} characters (the interface name limit): "
                         f"choose a shorter VM name", vm=name)
    check_ifname(tap, "tap name")
    return tap


def check_derived_names(root, name, exclude=None):
    """Refuse a new VM name whose default tap or rc name another VM's maps to as well
    (web-1, web_1 and WEB.1 all make tapWEB_1: the second one's postRun would destroy the
    first one's tap), or the host-wide service's rc name."""
    if rcd.rc_name(name) == rcd.HOST_WIDE:
        raise UsageError(f"its rc name would be '{rcd.HOST_WIDE}', the host-wide kvm service's (rc.d/kvm, "
                         f"{rcd.HOST_WIDE}_enable): choose another name", vm=name)
    for other in vmmod.list_vms(root):
        if other.name in (name, exclude):
            continue
        for what, derive in (("tap", default_tap), ("rc name", rcd.rc_name)):
            if derive(other.name) == derive(name):
                raise StateError(f"its {what} would be '{derive(name)}', as for VM '{other.name}': "
                                 f"choose another name", vm=name)


def switch_taps(name, count):
    """The taps of a VM's NICs on switches: tapNAME, then tapNAMEn1, tapNAMEn2 (as vmimport names them)."""
    return [derived_tap(name, f"n{k}" if k else "") for k in range(count)]


def check_switches(root, name, nics):
    """Every switch --switch names exists in the root."""
    from kvm import net
    for switch, _vlan in nics:
        try:
            net.load(root, switch)
        except (NotFound, UsageError) as exc:
            raise exc.__class__(f"--switch {switch}: {exc.message}", vm=name) from None


def check_ifname(value, what):
    """Interface names: 1-15 characters, letters, digits and _ (ifconfig's limits)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,14}", value or ""):
        raise UsageError(f"{what} '{value}' is not an interface name (1-{IFNAME_MAX} letters, digits, _)")


def render_files(name, a, root_path):
    """(set.conf text, run text) for the answers; raises ConfigError when they do not validate."""
    pre, post = [], []
    devices = ""
    host_os = platform.current()
    if a.network:
        tap = a.tap or derived_tap(name)
        check_ifname(tap, "tap name")
        check_ifname(a.bridge, "bridge name")
        if a.uplink:
            check_ifname(a.uplink, "uplink interface")
        pre, post = host_os.network_hooks(a.bridge, tap, a.uplink)
        devices = f"3,{a.nic},{tap}"
    switch = ""
    if a.nics:
        taps = switch_taps(name, len(a.nics))
        devices = " ".join(f"{3 + k},{a.nic},{tap}" for k, tap in enumerate(taps))
        switch = switchconf.nics_text(switchconf.Nic(tap, sw, vlan) for tap, (sw, vlan) in zip(taps, a.nics))
    hv = hypervisor.current()  # its words in the comments (options, console, exit)
    conf = render("set.conf.j2", root_path, name=name, vmrom=a.loader, boot=a.boot, cores=a.cores,
                  mem=a.mem, options=a.options, disk=disk_value(name, a, root_path),
                  disk_driver=a.disk_driver, devices=devices, switch=switch, vnc=a.vnc, vnc_addr=a.vnc_addr,
                  com=a.com and config.loader_kind(a.loader) != "grub", iso=a.iso,
                  boot_comment=hv.boot_comment, options_comment=hv.options_comment, options_example=hv.options_example,
                  console_comment=hv.console_comment(name), tpm=a.tpm, limits=a.limits, cpu_pin=a.cpu_pin,
                  agent=a.agent)
    run = render("run.j2", root_path, name=name, pre=pre, post=post, hv=hv.name, helpers=host_os.helpers,
                 exit_status=hv.exit_status_text, reasons=hv.reasons_text)
    if a.cloud_init is not None:
        conf = cloudinit.attached(conf)   # validated with the seed's CD, as any edit of it
    values = config.parse_text(conf)
    cfg = config.validate(name, "/nonexistent", values, startable=True)
    return conf, run, cfg


def check_new(root, name, spare=None):
    """Refuse an invalid name or one already taken by a folder or dataset (or, with bhyve, by a VM
    of another root of this host: vm.check_free_on_host, with its `spare`); first destroy the
    half-made VMs a vmcreate and its watchdog both killed (power loss) left behind."""
    vmmod.check_name(name)
    vm = vmmod.Vm(root, name)
    parent = root.vm_dataset()
    try:  # one zfs call: which VM datasets exist, and which are marked as being created
        rows = zfs.get_props([parent], [CREATING], recursive=True, depth=1, with_source=True)
    except zfs.DatasetNotFound:
        rows = {}
    dead = stale(parent, rows)
    clean_stale(dead)
    if vm.dataset() in dead and not host.dry_run() and vm.dir.is_dir() and not any(vm.dir.iterdir()):
        vm.dir.rmdir()  # the mountpoint folder the destroyed dataset leaves
    if vm.dir.exists():
        raise AlreadyExists(f"already exists ({vm.dir})", vm=name, hint=f"vmdestroy {name} first, or another name")
    if vm.dataset() in rows and vm.dataset() not in dead:
        raise AlreadyExists(f"dataset {vm.dataset()} already exists", vm=name)
    check_derived_names(root, name)  # web-1, web_1 and WEB.1 would share tapWEB_1
    vmmod.check_free_on_host(root, name, spare)
    return vm


def image_origin(root, name, image, disk, text=""):
    """The @base snapshot to clone for --from; a --disk-size below the image's refused (never shrinks)."""
    try:
        ds, where = images.get(root, image)
    except NotFound as exc:
        exc.vm = name
        raise
    have = int(images.read_conf(where / images.CONF).get("size") or 0)
    if disk and disk < have:
        raise UsageError(f"disk size '{text}' is smaller than image '{image}' ({have} bytes): a disk never shrinks",
                         vm=name)
    return zfs.snapshot_name(ds, images.BASE)


def create(root, name, a):
    """Create the VM; any failure (or kill) leaves nothing behind. Returns the Vm."""
    vm = check_new(root, name)
    check_switches(root, name, a.nics)
    try:
        conf, run, cfg = render_files(name, a, root.path)
    except ConfigError as exc:
        exc.vm = name
        raise
    disk = disk_size(a.disk_size)[0] if a.disk_size else 0
    origin = image_origin(root, name, a.image, disk, a.disk_size) if a.image else None
    vars_src = vars_name = None
    if cfg.loader == "uefi":
        from kvm.hypervisor import current as hypervisor
        vars_src, vars_name, missing = hypervisor().uefi_vars(root.path)
        if vars_src is None:
            raise NotFound(missing, vm=name)
    if a.iso:
        if not a.iso.startswith("/"):
            raise UsageError(f"ISO '{a.iso}' must be an absolute path", vm=name)
        if not os.path.isfile(a.iso):
            raise NotFound(f"ISO '{a.iso}' does not exist", vm=name)
        refused = config.check_paths(config.validate(name, str(vm.dir), config.parse_text(conf)))[0]
        if refused:
            raise UsageError(f"{refused[0]}; insert it once the VM exists: insert --allow-path {name} ISO",
                             vm=name)
    with Transaction(vm.dataset(), origin=origin) as txn:
        if not host.dry_run() and not vm.dir.is_dir():
            raise StateError(f"dataset {vm.dataset()} is not mounted at {vm.dir}", vm=name)
        host.write_file(vm.conf_path, conf, mode=config.mode_for(conf))  # 0640 with a password
        host.write_file(vm.run_path, run, mode=0o644)
        if vars_src is not None:
            host.copy_file(vars_src, vm.dir / vars_name, mode=0o644)
        if origin:
            host.remove_file(vm.dir / "image.conf")
            host.tighten_mode(vm.dir / DISK_FILE, images.DISK_MODE)  # an image made by an earlier kvm: 0644
            if disk:
                host.grow_file(vm.dir / DISK_FILE, disk)
        elif disk and a.disk_zvol:
            from kvm.manage.disks import ZVOL_PROPS
            if disk % (1 << 20):
                raise UsageError(f"disk size '{a.disk_size}': a zvol's size must be a whole number of MiB", vm=name)
            zfs.create_volume(f"{vm.dataset()}/{DISK_FILE}", disk, props=ZVOL_PROPS)
        elif disk:
            host.make_sparse(vm.dir / DISK_FILE, disk)
        if a.cloud_init is not None:
            cloudinit.write_seed(vm, a.cloud_init)
        txn.commit()
    return vm, cfg


def disk_value(name, a, root_path):
    """Disk= of a new VM: the file `disk`, or the device of its zvol ROOT/vm/NAME/disk."""
    if not (a.disk_size or a.image):
        return ""
    if a.disk_zvol:
        return zfs.zvol_device(zvol_dataset(root_path, name))
    return DISK_FILE


def zvol_dataset(root_path, name):
    """ROOT/vm/NAME/disk: the zvol of --disk-zvol, by the root's dataset (its mountpoint's)."""
    from kvm.vm.root import Root
    return f"{Root(root_path).vm_dataset()}/{name}/{DISK_FILE}"


def summary(name, a, vm_dir):
    """The lines telling what create() will make of these answers (vmcreate shows them and asks)."""
    kind = config.loader_kind(a.loader) or a.loader
    disk = "none"
    if a.image:
        disk = f"clone of image {a.image}" + (f", grown to {a.disk_size}" if a.disk_size else "")
    elif a.disk_size and a.disk_zvol:
        disk = f"{a.disk_size}, sparse zvol {DISK_FILE} (volmode=dev)"
    elif a.disk_size:
        disk = f"{a.disk_size}, sparse file {DISK_FILE}"
    if disk != "none":
        disk += f" ({a.disk_driver or 'nvme'})"
    net = "none"
    if a.nics:
        net = ", ".join(f"{tap} ({a.nic}) on switch {sw}" + (f" VLAN {vlan}" if vlan else "")
                        for tap, (sw, vlan) in zip(switch_taps(name, len(a.nics)), a.nics))
    elif a.network:
        net = f"{a.tap or default_tap(name)} ({a.nic}) on bridge {a.bridge}" + \
            (f", uplink {a.uplink}" if a.uplink else "")
    consoles = []
    if a.vnc:
        consoles.append(f"VNC{' (boot waits for a viewer)' if a.vnc == 'wait' else ''} on "
                        f"{a.vnc_addr or '127.0.0.1'}, first free port from 5900")
    if a.com or kind == "grub":
        consoles.append(f"serial COM1 (./console {name})")
    rows = [("folder", str(vm_dir)), ("loader", kind + (f", boot {a.boot}" if a.boot else "")),
            ("cores", a.cores or "1"), ("memory", a.mem or "1G"), ("options", a.options or "none"),
            ("disk", disk), ("network", net), ("console", ", ".join(consoles) or "none")]
    if a.iso:
        rows.append(("ISO", a.iso))
    rows += [(key, value) for key, value in (("TPM", a.tpm), ("limits", a.limits), ("CPU pins", a.cpu_pin),
                                             ("agent", "yes" if a.agent else "")) if value]
    if a.cloud_init is not None:
        rows.append(("cloud-init", "seed.iso"))
    return [f"VM {name} will be created:"] + [f"  {k + ':':<9} {v}" for k, v in rows]
