"""vm-bhyve's PCI layout (lib/vm-run's bhyve_device_* order) as set.conf Disk and Devices items,
and its switches (lib/vm-switch-*) as the bridge lines of the run hooks."""

import os
import re
import stat
from pathlib import Path

from kvm import zfs
from kvm.conf.config import under
from kvm.conf.devices import NIC_EMULATIONS
from kvm.errors import ConfigError, KvmError, UsageError
from kvm.manage.create import derived_tap
from kvm.manage.importers import trust

BLOCK = ("nvme", "virtio-blk", "ahci-hd", "ahci-cd")  # vm-bhyve's disk types kvm maps
MAIN = ("nvme", "virtio-blk", "ahci-hd")     # what kvm's DiskDriver takes
IFNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}\Z")  # FreeBSD's 15 characters
MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}\Z")
MAX_FUNC = 8


class Slots:
    """The next slot and function vm-bhyve would give a device."""

    def __init__(self, slot):
        self.slot, self.func = slot, 0

    def wrap(self):
        if self.func >= MAX_FUNC:
            self.slot, self.func = self.slot + 1, 0

    def next_slot(self):
        self.slot, self.func = self.slot + 1, 0



def read_conf(name, path, what="vm-bhyve conf"):
    """{key: value} of a vm-bhyve conf file (root's, writable by root only, at most
    trust.CONF_MAX: importers/trust.py), read exactly as config::load reads it."""
    return parse_conf(trust.read(name, path, what).decode(errors="replace"))


def parse_conf(text):
    """{key: value} of a vm-bhyve conf text, as config::load reads it."""
    values = {}
    # split on \n only, as grep does: a DOS line end stays in the value (and is refused)
    for line in text.split("\n"):
        if not ("a" <= line[:1] <= "z"):
            continue
        line = line.split("#", 1)[0].rstrip(" ").replace('"', "")
        key, eq, value = line.partition("=")
        if eq and key not in values:
            values[key] = value
    return values


def at(m, key, slot, func=0):
    """slot[:func] as Devices writes it; kvm's free slots are 3-28."""
    if not 3 <= slot <= 28:
        m.bad(key, f"lands at PCI slot {slot} in vm-bhyve's layout; kvm's devices take slots 3-28")
    return f"{slot}:{func}" if func else str(slot)


def _guest_dataset(m, key):
    dataset = zfs.dataset_of_path(m.guest_dir)
    if not dataset:
        m.missing(key, f"a zvol, but {m.guest_dir} is no mounted ZFS dataset")
    return dataset


def _disk_source(m, n):
    """(path, the guest's own?) of disk N, resolved as vm::get_disk_path does. The guest's own:
    a file in its folder (no '..' leading out, no link leading out) or a zvol of its dataset."""
    key, dev_key = f"disk{n}_name", f"disk{n}_dev"
    name, dev = m.get(key), m.get(dev_key) or "file"
    if dev == "file":
        src = m.guest_dir / name
        return src, not name.startswith("/") and ".." not in Path(name).parts and _inside(m, src)
    if dev in ("zvol", "sparse-zvol"):
        if name.startswith("/") or ".." in Path(name).parts:
            m.bad(key, "must name a zvol of the guest's dataset (no '/' at the start, no '..')")
        return Path(f"/dev/zvol/{_guest_dataset(m, dev_key)}/{name}"), True
    if dev == "custom":
        if not name.startswith("/"):
            m.bad(key, "must be an absolute path with disk_dev=custom")
        return Path(name), _inside(m, Path(name))
    m.bad(dev_key, "cannot be imported (file, zvol, sparse-zvol or custom)")


def _inside(m, src):
    return under(os.path.realpath(src), os.path.realpath(m.guest_dir))


def disk_path(m, n, move):
    """The disk's path in set.conf: kept in place (its path then in AllowPath), or (--move) a file
    of the new VM folder. A disk outside the guest folder is never copied, moved or removed, and
    referenced in place only when the command line names it (--allow-path)."""
    key = f"disk{n}_name"
    src, own = _disk_source(m, n)
    if any(ch in str(src) for ch in ", \t\n"):
        m.bad(key, "holds a comma or a space, which bhyve's -s cannot take")
    if not src.exists():
        m.missing(key, f"disk {src} does not exist")
    if not own:
        real = os.path.realpath(src)
        if not m.named(src):
            m.bad(key, f"leads to {real}, outside the guest folder {m.guest_dir}: never copied, moved or removed; "
                       f"to use it in place, name it: --allow-path {real}")
        m.report.append(f"{key}={m.values[key]}: kept in place ({real} is outside the guest folder; named by "
                        f"--allow-path)")
        return m.allow(src)
    if not move:
        return m.allow(src)
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode):
        m.report.append(f"{key}={m.values[key]}: kept in place ({src} is not a file)")
        return m.allow(src)
    if any(f[1] == src.name for f in m.files):
        m.bad(key, "has the file name of another disk: both cannot move into one folder")
    m.files.append((src, src.name, True))
    m.disks.append(src.name)
    return src.name if n == 0 else str(m.vmdir / src.name)


def _disks(m, s, uefi, move):
    n = 0
    while m.get(f"disk{n}_name") and m.get(f"disk{n}_type"):
        kind, opts = m.get(f"disk{n}_type"), m.get(f"disk{n}_opts")
        if kind not in BLOCK:
            m.bad(f"disk{n}_type", f"is not a disk emulation ({', '.join(BLOCK)})")
        s.wrap()
        path = disk_path(m, n, move)
        if n == 0 and kind in MAIN:
            m.settings["Disk"], m.settings["DiskDriver"] = path, kind
            if opts:
                m.skip("disk0_opts", "kvm's main disk takes no options")
            if uefi and m.yes("uefi_vars"):
                m.report.append(f"disk0_name={m.values['disk0_name']}: now at PCI slot 1 (was {s.slot}): "
                                "a UEFI boot entry naming the old slot falls back to the default loader")
        else:
            m.devices.append(",".join(x for x in (at(m, f"disk{n}_type", s.slot, s.func), kind, path, opts) if x))
        if uefi:
            s.slot += 1
        else:
            s.func += 1
        n += 1
    if n and not uefi:
        s.next_slot()


def _tap(m, n):
    own = m.get(f"network{n}_device")
    if own or m.get(f"network{n}_name"):
        key = f"network{n}_device" if own else f"network{n}_name"
        tap = m.values[key]
        if not IFNAME_RE.match(tap):
            m.bad(key, "is not an interface name (1-15 of letters, digits, '.', '_', '-')")
        return tap, not own
    # a lower-case n never occurs in a default tap name (tapNAME is upper-case): no clash
    try:
        return derived_tap(m.name, f"n{n}" if n else ""), True
    except UsageError as exc:
        raise ConfigError(f"{m.conf.name}: network{n}_type={m.values.get(f'network{n}_type', '')!r} needs a tap: "
                          f"{exc.message}", vm=m.name) from None


def _nics(m, s):
    n = 0
    while m.get(f"network{n}_type"):
        key = f"network{n}_type"
        kind = m.get(key)
        if kind not in NIC_EMULATIONS:
            m.bad(key, "is not a NIC emulation (virtio-net, e1000)")
        s.wrap()
        tap, ours = _tap(m, n)
        mac = m.get(f"network{n}_mac")
        if mac and not MAC_RE.match(mac):
            m.bad(f"network{n}_mac", "is not a MAC address (like 58:9c:fc:01:02:03)")
        m.devices.append(f"{at(m, key, s.slot, s.func)},{kind},{tap}" + (f",mac={mac}" if mac else ""))
        sw = kvm_switch(m, n) if ours else None
        if sw:
            m.nics.append(f"{tap}={sw.name}")
        else:
            bridge, ports = bridge_of(m, n)
            hooks(m, tap, bridge, ports, ours)
        if m.yes(f"network{n}_span"):
            m.skip(f"network{n}_span", "kvm adds the tap as an ordinary bridge member")
        s.func += 1
        n += 1
    if n:
        s.next_slot()


def system_conf(m):
    """vm-bhyve's switches: VM_DIR/.config/system.conf beside the guest folder ({} when absent)."""
    if m.system is None:
        path = m.guest_dir.parent / ".config" / "system.conf"
        if os.path.lexists(path):
            trust.check_folder(m.name, path.parent)
            m.system = read_conf(m.name, path, "vm-bhyve system.conf")
        else:
            m.system = {}
        if not m.system:
            m.report.append(f"{path}: not found: the switches' uplink ports are not known")
    return m.system


def kvm_switch(m, n):
    """NIC N's vm-bhyve switch as a kvm switch (a SwitchConfig), or None when kvm's switches cannot
    say it (a type other than standard or manual, a name kvm refuses, values it refuses): that NIC
    then gets preRun lines as before. Maps system.conf's ports_X (Uplinks), vlan_X, mtu_X, addr_X
    (Address), private_X and, for a manual switch, bridge_X (Manual)."""
    from kvm.conf import switchconf
    switch = m.values.get(f"network{n}_switch", "")
    sysconf = system_conf(m) if switch else {}
    if not switch or not sysconf or switch not in sysconf.get("switch_list", "").split():
        return None
    kind = sysconf.get(f"type_{switch}", "standard")
    if kind == "manual":
        values = {"Manual": sysconf.get(f"bridge_{switch}", "")}
    elif kind == "standard":
        values = {"Uplinks": sysconf.get(f"ports_{switch}", ""), "Vlan": sysconf.get(f"vlan_{switch}", ""),
                  "Mtu": sysconf.get(f"mtu_{switch}", ""), "Address": sysconf.get(f"addr_{switch}", ""),
                  "Private": "1" if sysconf.get(f"private_{switch}", "").lower() in ("yes", "on", "true", "1") else ""}
    else:
        return None
    try:
        cfg = switchconf.validate(switch, {k: v for k, v in values.items() if v})
    except (KvmError, ValueError) as exc:
        m.report.append(f"switch {switch}: not made a kvm switch ({getattr(exc, 'message', exc)}): preRun lines "
                        f"instead")
        return None
    m.used.add(f"network{n}_switch")
    if switch not in m.switches:
        m.switches[switch] = cfg
        shown = " ".join(f"{k}={v}" for k, v in cfg.values().items() if v) or "no uplink"
        m.report.append(f"network{n}_switch={switch}: the NIC is on kvm switch {switch} ({shown}), written to "
                        f"ROOT/switches/{switch}.conf unless the root has it; it comes up at the VM's first start "
                        f"(vm-bhyve's bridge vm-{switch} must be gone by then: vm switch destroy {switch})")
    return cfg


def bridge_of(m, n):
    """(bridge, uplink ports) of NIC N's switch, or (None, []) when it has no named bridge."""
    key = f"network{n}_switch"
    switch = m.get(key)
    if not switch:
        m.report.append(f"{key} (unset): the tap is on no bridge, as in vm-bhyve")
        return None, []
    sysconf = system_conf(m)
    if sysconf and switch not in sysconf.get("switch_list", "").split():
        m.skip(key, "not a switch of vm-bhyve's system.conf (vm-bhyve left the tap on no bridge too)")
        return None, []
    kind = sysconf.get(f"type_{switch}", "standard")
    bridge, ports = None, []
    if kind == "manual":
        bridge = sysconf.get(f"bridge_{switch}")
    elif kind == "standard" and len(switch) <= 12:  # longer names get no interface name (a descr only)
        bridge, ports = f"vm-{switch}", sysconf.get(f"ports_{switch}", "").split()
    if not bridge or not IFNAME_RE.match(bridge):
        m.skip(key, f"a {kind} switch without a bridge name kvm can create: the tap is on no bridge")
        return None, []
    for port in ports:  # they go into preRun, which root runs
        if not IFNAME_RE.match(port):
            raise ConfigError(f"system.conf: ports_{switch}={' '.join(ports)!r}: '{port}' is not an interface "
                              f"name (1-15 of letters, digits, '.', '_', '-')", vm=m.name)
    for opt in ("vlan", "mtu", "addr", "addr6", "private"):
        line = f"switch {switch}: {opt}_{switch}={sysconf.get(f'{opt}_{switch}')}: not set up by kvm's hooks"
        if sysconf.get(f"{opt}_{switch}") and line not in m.report:
            m.report.append(line)
    return bridge, ports


def hooks(m, tap, bridge, ports, ours):
    """preRun/postRun lines in vmcreate's shape: ifconfig on FreeBSD, the iproute2 helpers on Linux."""
    up, addm = m.host_os.link_up, (lambda i: m.host_os.bridge_add(bridge, i))
    lines = [f"CreateIF bridge {bridge}"] if bridge else []
    lines += [f"CreateIF tap {tap}"] if ours else []
    lines.append(up(tap))
    if bridge:
        lines.append(addm(tap))
        lines += [f"{addm(p)} 2>/dev/null  # already a member is fine" for p in ports]
        lines.append(up(bridge))
    m.pre.extend(x for x in lines if x not in m.pre)  # a second NIC on the same bridge
    if ours:
        m.post.append(f"DestroyIF {tap}")  # vm-bhyve destroys the taps it made, not a given device


def _passthru(m, s):
    n, last, func = 0, None, 0
    while m.get(f"passthru{n}"):
        key = f"passthru{n}"
        bsf, forced, where = m.get(key).partition("=")
        if forced:  # B/S/F=SLOT:FUNC: the guest slot the admin chose
            slot, _, fn = where.partition(":")
            if not (slot.isdigit() and (fn or "0").isdigit()):
                m.bad(key, "is not B/S/F=SLOT:FUNC")
            where = at(m, key, int(slot), int(fn or 0))
        else:  # functions of one host device stay together on one guest slot
            if last is not None and last != bsf.split("/")[0]:
                s.slot, func = s.slot + 1, 0
            where, last, func = at(m, key, s.slot, func), bsf.split("/")[0], func + 1
        m.devices.append(",".join(x for x in (where, "passthru", bsf, m.get(f"passthru{n}_options")) if x))
        n += 1
    if n:
        s.slot += 1


def _extras(m, s, uefi):
    """virtio-rnd, passthru, (frame buffer, mouse), sound and virtio consoles, in vm-run's order."""
    if m.yes("virt_random"):
        m.devices.append(f"{at(m, 'virt_random', s.slot)},virtio-rnd")
        s.slot += 1
    _passthru(m, s)
    if uefi and m.yes("graphics"):
        s.slot += 1  # the frame buffer: kvm's slot 30
    if m.yes("xhci_mouse"):
        s.slot += 1  # the tablet: kvm's slot 29, with VNC only
        if "VNC" not in m.settings:
            m.skip("xhci_mouse", "kvm adds the tablet with VNC only")
    if m.yes("sound"):
        rec = m.get("sound_rec")
        m.devices.append(f"{at(m, 'sound', s.slot)},hda,play={m.get('sound_play') or '/dev/dsp0'}"
                         + (f",rec={rec}" if rec else ""))
        s.slot += 1
    ports, n = [], 0
    while m.get(f"virt_console{n}") and n < 16:
        port = m.get(f"virt_console{n}")
        port = str(n) if port.lower() in ("yes", "on", "1") else port
        ports.append(f"{port}={m.vmdir}/vtcon.{port}")
        n += 1
    if ports:
        m.devices.append(f"{at(m, 'virt_console0', s.slot)},virtio-console," + ",".join(ports))


def layout(m, move):
    """Fill m.settings' Disk, DiskDriver and Devices, and the network hooks."""
    uefi = m.kind == "uefi"
    start = m.get("start_slot") or "4"
    if not start.isdigit():
        m.bad("start_slot", "is not a slot number")
    m.get("install_slot")  # the installer's CD: kvm's ISO has slot 2
    s = Slots(int(start))
    _disks(m, s, uefi, move)
    _nics(m, s)
    _extras(m, s, uefi)
    if m.devices:
        m.settings["Devices"] = " ".join(m.devices)
    if m.nics:
        m.settings["Switch"] = " ".join(m.nics)
