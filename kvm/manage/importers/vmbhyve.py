"""vm-bhyve's guest settings (DIR/NAME.conf) mapped onto set.conf, run hooks and a report.

The file is read as vm-bhyve reads it (lib/vm-config's config::load): only lines starting with
a lower-case letter count, everything after a `#` is dropped (even inside quotes), trailing
spaces and every `"` are removed, and the first line of a key wins. Nothing is run.

The guest keeps the PCI layout vm-bhyve gave it (lib/vm-run): devices from `start_slot` (4)
on, disks first (one slot each with UEFI, functions of one slot otherwise), then the NICs
(functions of one slot), virtio-rnd, passthru, the frame buffer and mouse, sound and the virtio
consoles. Linux guests name NICs after their slot (enp0s5), so a moved NIC would lose its
network. Only disk0 moves: it becomes kvm's main disk (slot 1), which grub-bhyve's device.map
needs; the frame buffer and tablet go to kvm's own slots 30 and 29.
"""

import os
import stat
from pathlib import Path

from kvm import platform
from kvm.conf import config, guestconf
from kvm.errors import ConfigError, NotFound, Refused, StateError
from kvm.manage.importers import trust
from kvm.manage.importers import vmbhyve_devices as devs
from kvm.manage.importers.plan import Plan
from kvm.manage.importers.vmbhyve_devices import read_conf

LOADERS = ("uefi", "uefi-csm", "uefi-devel", "uefi-custom", "grub")
FIRMWARE = "/usr/local/share/uefi-firmware"
# vm-bhyve's own firmware files for its loader names (vm::uefi)
ROMS = {"uefi-csm": f"{FIRMWARE}/BHYVE_UEFI_CSM.fd", "uefi-devel": f"{FIRMWARE}/BHYVE_UEFI_CODE-devel.fd"}
DEFAULT_OPTIONS = "AHPw"   # vm-bhyve always runs bhyve -AHPw
PRESTART = "prestart"      # the copy of vm-bhyve's prestart script in the VM folder
# keys that only mean something when vm-bhyve creates a guest from a template
TEMPLATE_ONLY = ("zfs_dataset_opts", "zfs_zvol_opts")
# keys kvm has no counterpart for, and what the guest or the admin will notice
NO_COUNTERPART = {
    "uuid": "kvm gives bhyve no -U: the guest gets the UUID bhyve derives from the VM name",
    "cpu_sockets": "kvm has no CPU topology setting: the guest sees Cores single-core sockets",
    "cpu_cores": "kvm has no CPU topology setting: the guest sees Cores single-core sockets",
    "cpu_threads": "kvm has no CPU topology setting: the guest sees Cores single-core sockets",
    "graphics_port": "kvm takes the first free VNC port from 5900 (no fixed port)",
    "loader_timeout": "kvm passes no timeout to grub-bhyve (grub's own default applies)",
    "grub_run_dir": "kvm runs grub-bhyve without -d: write a grub.cfg in the guest instead",
    "grub_run_file": "kvm runs grub-bhyve without -g: write a grub.cfg in the guest instead",
    "bhyveload_args": "kvm has no bhyveload loader", "bhyveload_loader": "kvm has no bhyveload loader",
    "priority": "kvm sets no nice value",
    "nulliso_fix": "kvm attaches no null.iso", "fwcfg": "kvm sets no lpc fwcfg",
    "ahci_device_limit": "kvm gives each ahci disk a slot of its own",
    "guest": "an old vm-bhyve key kvm does not use",
}


def yesno(value):
    """vm-bhyve's util::yesno: yes, on, true or 1 (any case) are true."""
    return value.lower() in ("yes", "on", "true", "1")


class Mapping:
    """The conf's values, what has been used, and what goes into set.conf, run and the report."""

    def __init__(self, name, conf, values, vmdir, host_os, named=()):
        self.name, self.conf, self.values, self.vmdir, self.host_os = name, Path(conf), values, vmdir, host_os
        self.guest_dir = self.conf.parent
        self.used, self.report, self.settings = set(), [], {}
        self.pre, self.post, self.devices, self.files = [], [], [], []
        self.texts, self.allow_paths, self.disks = {}, [], []
        self.kind, self.dataset = "", ""
        self.system = None  # vm-bhyve's system.conf, read when a NIC names a switch
        self.nics, self.switches = [], {}  # Switch entries (TAP=SWITCH); kvm switches made from system.conf
        self.named_paths = {os.path.realpath(p) for p in named}  # --allow-path: what may stay outside

    def named(self, path):
        """The command line named this path (--allow-path), as it is written or where it leads."""
        return os.path.realpath(path) in self.named_paths

    def allow(self, path):
        """A path kept in place, outside the new VM folder: AllowPath names it; returns it."""
        if str(path) not in self.allow_paths:
            self.allow_paths.append(str(path))
        return str(path)

    def get(self, key, default=""):
        self.used.add(key)
        return self.values.get(key, default)

    def yes(self, key, default=""):
        return yesno(self.get(key, default))

    def bad(self, key, why):
        raise ConfigError(f"{self.conf.name}: {key}={self.values.get(key, '')!r} {why}", vm=self.name)

    def missing(self, key, why):
        raise NotFound(f"{self.conf.name}: {key}={self.values.get(key, '')!r}: {why}", vm=self.name)

    def skip(self, key, why):
        """Report a key that is set but not mapped."""
        self.used.add(key)
        if self.values.get(key, "") != "":
            self.report.append(f"{key}={self.values[key]}: {why}")

    def check(self, key, checker, *args):
        try:
            return checker(*args, self.get(key))
        except config.Invalid as exc:
            self.bad(key, str(exc))


def _loader(m):
    loader = m.get("loader")
    if not loader:
        raise ConfigError(f"{m.conf.name}: no loader= (vm-bhyve cannot start it either)", vm=m.name)
    if loader == "bhyveload":
        m.bad("loader", "is not a loader kvm has (uefi or grub): a FreeBSD guest with an EFI partition "
                        "boots with loader=\"uefi\"; change it and import again")
    if loader not in LOADERS:
        m.bad("loader", f"is not a vm-bhyve loader ({', '.join(LOADERS)})")
    m.kind = "grub" if loader == "grub" else "uefi"
    rom = ROMS.get(loader) or (str(m.guest_dir.parent / ".config" / "BHYVE_UEFI.fd")
                               if loader == "uefi-custom" else loader)
    if rom.startswith("/") and not os.path.isfile(rom):
        m.missing("loader", f"its firmware {rom} does not exist")
    m.settings["VMrom"] = rom
    if m.kind == "grub":
        _grub(m)


def _grub(m):
    """Boot as vm-bhyve's normal run does: hd0,1, or the partition the conf names."""
    part = m.get("grub_run_partition")
    m.settings["Boot"] = "hd0" if m.yes("grub_run_no_partition") else f"hd0,{part or '1'}"
    for kind in ("run", "install"):
        n = 0
        while m.values.get(f"grub_{kind}{n}"):
            m.skip(f"grub_{kind}{n}", "kvm runs no grub commands of its own: put them in the guest's grub.cfg")
            n += 1


def _cpu_mem(m):
    if not m.values.get("cpu"):
        raise ConfigError(f"{m.conf.name}: no cpu= (vm-bhyve cannot start it either)", vm=m.name)
    m.settings["Cores"] = str(m.check("cpu", config.whole_number, "Cores"))
    if not m.values.get("memory"):
        raise ConfigError(f"{m.conf.name}: no memory= (vm-bhyve cannot start it either)", vm=m.name)
    m.check("memory", config.memory)
    m.settings["Mem"] = m.get("memory")


def _options(m):
    """-AHPw always, u unless utctime is off, S for wired memory or passthru, and any one-letter
    flags of bhyve_options; what else bhyve_options holds is reported."""
    flags = DEFAULT_OPTIONS
    m.get("ignore_bad_msr"), m.get("ignore_msr")  # w: always on here
    if m.yes("utctime", "yes"):
        flags += "u"
    if m.yes("wired_memory") or m.values.get("passthru0"):
        flags += "S"
    extra = m.get("bhyve_options").split()
    if extra and all(w.startswith("-") and w[1:] and set(w[1:]) <= config.BHYVE_FLAGS for w in extra):
        flags += "".join(w[1:] for w in extra)
    else:
        m.skip("bhyve_options", "only one-letter bhyve flags map onto VMoptions")
    m.settings["VMoptions"] = "".join(dict.fromkeys(flags))
    if m.get("hostbridge") not in ("", "standard"):
        m.skip("hostbridge", "kvm always gives the guest the standard hostbridge")


def _console(m):
    """comports (default com1) -> COM; graphics (UEFI only, as vm-bhyve) -> VNC."""
    ports = m.get("comports", "com1").split()
    m.settings["COM"] = "1" if "com1" in ports else "0"
    if [p for p in ports if p != "com1"]:
        m.skip("comports", "kvm connects com1 only")
    if not m.yes("graphics"):
        return
    if m.kind != "uefi":
        return m.skip("graphics", "vm-bhyve gives a grub guest no frame buffer either")
    m.settings["VNC"] = "wait" if m.get("graphics_wait") == "yes" else "1"
    res = m.get("graphics_res")
    if res:
        w, _, h = res.partition("x")
        if not (w.isdigit() and h.isdigit()):
            m.bad("graphics_res", "is not WIDTHxHEIGHT")
        m.settings["wVNC"], m.settings["hVNC"] = w, h
    if m.get("graphics_listen"):
        m.settings["VNCaddr"] = m.get("graphics_listen")
    else:  # vm-run's default is every address; kvm keeps its own, safer one and says so
        m.report.append("graphics_listen (unset): vm-bhyve's VNC listened on every address, kvm's on "
                        "127.0.0.1: set VNCaddr=\"0.0.0.0\" in set.conf to keep that")
    if m.get("vnc_password"):
        m.settings["VNCpassword"] = m.get("vnc_password")
    if not m.yes("xhci_mouse"):
        m.settings["Tablet"] = "0"
    if m.get("graphics_vga") not in ("", "io"):
        m.skip("graphics_vga", "kvm's frame buffer takes bhyve's default (io)")


def _behaviour(m):
    """on_fault, prestart and debug: what vm-bhyve did around the run."""
    if m.get("on_fault") == "restart":
        m.settings["RestartOnFault"] = "1"
    if m.get("on_restart") not in ("", "restart"):
        m.skip("on_restart", "kvm always boots again after a guest reboot")
    script = m.get("prestart")
    if script:
        _prestart(m, script)
    if m.yes("debug"):
        m.skip("debug", "kvm logs every run to NAME.log already")


LIMIT_KEYS = ("pcpu", "rbps", "wbps", "riops", "wiops")   # vm-bhyve's limit_NAME: Limits' NAME=


def _limits(m):
    """vm-bhyve's limit_pcpu, limit_rbps ... (its lib/vm-rctl) -> Limits, checked as set.conf's."""
    words = [f"{name}={m.get(f'limit_{name}')}" for name in LIMIT_KEYS if m.get(f"limit_{name}")]
    if not words:
        return
    try:
        guestconf.limits(" ".join(words), os.cpu_count() or 1)
    except config.Invalid as exc:
        raise ConfigError(f"{m.conf.name}: limits {' '.join(words)!r} {exc}", vm=m.name) from None
    m.settings["Limits"] = " ".join(words)


def _prestart(m, script):
    """vm-bhyve's prestart script, which root runs at every start: read only when it is root's and
    writable by root only, in a folder of root's (as set.conf and run: importers/trust.py), and
    copied into the VM folder (0700), which every start checks, so that what runs is what was
    checked; run from preRun in the guest folder with the name and dataset, status ignored."""
    path = Path(script if script.startswith("/") else m.guest_dir / script)
    trust.check_folder(m.name, os.path.dirname(os.path.abspath(path)))
    text = trust.read(m.name, path, "prestart script", trust.HOOK_MAX)
    m.texts[PRESTART] = (text, 0o700)
    folder = config.sh_quote(str(m.guest_dir))
    m.pre.append(f'(cd {folder} && exec "$VMdir/{PRESTART}" "$VMname" {config.sh_quote(m.dataset)}) || :')
    lines = text.count(b"\n")
    m.report.append(f"prestart={script}: copied into the VM folder as {PRESTART} ({lines} lines: read it), run "
                    f"from preRun at every start, given the kvm dataset")


def _uefi_vars(m, vars_name):
    """The guest's own UEFI variables when vm-bhyve kept them (uefi_vars=yes)."""
    if m.kind != "uefi" or not m.yes("uefi_vars"):
        return
    old = m.guest_dir / "uefi-vars.fd"
    if not os.path.lexists(old):
        return  # vm-bhyve ran without persistent vars: a fresh copy of the template does the same
    if not stat.S_ISREG(os.lstat(old).st_mode):  # a link would copy any file of the host into the VM
        return m.skip("uefi_vars", f"{old} is not a regular file (a link?): fresh ones")
    if vars_name != "UEFI_VARS.fd":
        return m.skip("uefi_vars", "bhyve's UEFI variables do not fit this host's firmware: fresh ones")
    m.files.append((old, vars_name, False))


def _leftovers(m):
    for key in TEMPLATE_ONLY:
        m.used.add(key)
    for key in sorted(m.values):
        if key in NO_COUNTERPART:
            m.skip(key, NO_COUNTERPART[key])
        elif key not in m.used and not (key.startswith("disk") and key.endswith("_size")):
            m.skip(key, "kvm does not map it")


def plan(vm, guest_dir, move=False, host_os=None, vars_name="UEFI_VARS.fd", allow_paths=()):
    """The Plan that imports the vm-bhyve guest in guest_dir as the new Vm `vm`; allow_paths: what
    the command line named (--allow-path), the only disks outside the guest folder it may use."""
    name = vm.name
    guest_dir = Path(guest_dir).absolute()  # every path set.conf gets from it is absolute
    conf = guest_dir / f"{guest_dir.name}.conf"
    if not os.path.lexists(conf):
        raise NotFound(f"no vm-bhyve guest in {guest_dir}: {conf} does not exist", vm=name)
    if (guest_dir / "run.lock").exists():  # vm-bhyve's own lock, held while its guest runs
        raise Refused(f"vm-bhyve runs it ({guest_dir / 'run.lock'} exists): stop it first "
                         f"(vm stop {guest_dir.name})", vm=name)
    trust.check_folder(name, guest_dir)
    values = read_conf(name, conf)
    for key, value in values.items():
        if any(ord(ch) < 32 for ch in value):
            raise ConfigError(f"{conf.name}: {key}={value!r} holds a control character (a DOS line end?)",
                              vm=name)
    m = Mapping(name, conf, values, vm.dir, host_os or platform.current(), allow_paths)
    m.dataset = vm.dataset()
    for step in (_loader, _cpu_mem, _options, _console, _behaviour, _limits):
        step(m)
    devs.layout(m, move)
    _uefi_vars(m, vars_name)
    _leftovers(m)
    if m.allow_paths:
        m.settings["AllowPath"] = " ".join(m.allow_paths)
    return Plan(name=name, origin=f"vm-bhyve {conf}", settings=m.settings, pre=m.pre, post=m.post,
                files=m.files, texts=m.texts, disks=m.disks, report=m.report, fresh_vars=m.kind == "uefi",
                allow_paths=list(m.allow_paths), switches=dict(m.switches))
