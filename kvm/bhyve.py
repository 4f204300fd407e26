"""Pure: a VmConfig -> the grub-bhyve argv, device.map text and bhyve argv; bhyve's exit codes.

The order of bhyve's arguments is the shell toolkit's, item for item:
  bhyve -OPTS -c CORES -m MEM -s 0,hostbridge [-s 1,DRIVER,DISK] [-s 2,ahci-cd,ISO]
        -s 31,lpc [-l com1,/dev/nmdmNAMEA] [-s 29,xhci,tablet] [-s 30,fbuf,...]
        [-s DEVICE ...] [-l bootrom,ROM,VARS] NAME
Slots: 0 hostbridge, 1 main disk, 2 ISO, 3-28 user devices, 29 tablet, 30 fbuf, 31 lpc.
Another hypervisor backend would provide the same `plan()` shape.
"""

import signal
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

VARS_FILE = "UEFI_VARS.fd"
DEVICE_MAP = "device.map"

EXIT_REASONS = {0: "reboot", 1: "poweroff", 2: "halt", 3: "triplefault", 4: "error"}
EXIT_TEXT = {"reboot": "guest rebooted", "poweroff": "powered off", "halt": "halted",
             "triplefault": "crashed: triple fault", "error": "crashed: bhyve error",
             "unknown": "exited for an unknown reason", "signal": "killed by a signal"}


@dataclass(frozen=True)
class Plan:
    """What one launch runs."""

    bhyve: list
    grub: list = None
    device_map: str = None
    nmdm: str = None       # the VM's console device (A side), when COM is on


def classify(returncode):
    """bhyve's exit status -> reason: reboot, poweroff, halt, triplefault, error, signal, unknown."""
    if returncode < 0:
        return "signal"
    return EXIT_REASONS.get(returncode, "unknown")


def describe(returncode):
    """A human line for an exit status."""
    reason = classify(returncode)
    if reason == "signal":
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    text = EXIT_TEXT[reason]
    return text if reason != "unknown" else f"{text} (exit {returncode})"


def nmdm_a(name, dev_dir="/dev"):
    return f"{dev_dir}/nmdm{name}A"


def nmdm_b(name, dev_dir="/dev"):
    return f"{dev_dir}/nmdm{name}B"


def disk_args(cfg):
    return ["-s", f"1,{cfg.disk_driver},{cfg.disk}"] if cfg.disk else []


def iso_args(cfg):
    return ["-s", f"2,ahci-cd,{cfg.iso}"] if cfg.iso else []


def com_args(cfg, dev_dir):
    return ["-l", f"com1,{nmdm_a(cfg.name, dev_dir)}"] if cfg.com else []


def vnc_args(cfg, port):
    if not cfg.vnc:
        return []
    if port is None:
        raise ConfigError("VNC is on but no port was chosen", vm=cfg.name)
    out = ["-s", "29,xhci,tablet"] if cfg.tablet else []
    host = f"[{cfg.vnc_addr}]" if ":" in cfg.vnc_addr else cfg.vnc_addr
    fbuf = f"30,fbuf,tcp={host}:{port}"
    if cfg.vnc == "wait":
        fbuf += ",wait"
    if cfg.vnc_size:
        fbuf += f",w={cfg.vnc_size[0]},h={cfg.vnc_size[1]}"
    if cfg.vnc_password:
        fbuf += f",password={cfg.vnc_password}"
    return out + ["-s", fbuf]


def device_args(cfg):
    out = []
    for dev in cfg.devices:
        out += ["-s", dev.arg()]
    return out


def bootrom_args(cfg, rom):
    if cfg.loader != "uefi":
        return []
    return ["-l", f"bootrom,{rom},{Path(cfg.vmdir) / VARS_FILE}"]


def bhyve_argv(cfg, rom=None, vnc_port=None, dev_dir="/dev"):
    """The bhyve command line for a config."""
    argv = ["bhyve"]
    if cfg.options:
        argv.append(f"-{cfg.options}")
    argv += ["-c", str(cfg.cores), "-m", cfg.mem, "-s", "0,hostbridge"]
    argv += disk_args(cfg) + iso_args(cfg) + ["-s", "31,lpc"] + com_args(cfg, dev_dir)
    argv += vnc_args(cfg, vnc_port) + device_args(cfg) + bootrom_args(cfg, rom)
    return argv + [cfg.name]


def device_map(cfg):
    """grub-bhyve's device.map: (hd0) the disk, (cd0) the ISO."""
    lines = []
    if cfg.disk:
        lines.append(f"(hd0) {cfg.disk}")
    if cfg.iso:
        lines.append(f"(cd0) {cfg.iso}")
    return "".join(line + "\n" for line in lines)


def grub_argv(cfg, grub, dev_dir="/dev"):
    """grub-bhyve's command line; -M must equal bhyve's -m."""
    argv = [str(grub)]
    if "S" in cfg.options:
        argv.append("-S")
    argv += ["-c", nmdm_a(cfg.name, dev_dir), "-m", str(Path(cfg.vmdir) / DEVICE_MAP), "-M", cfg.mem,
             "-r", cfg.boot, cfg.name]
    return argv


def plan(cfg, rom=None, grub=None, vnc_port=None, dev_dir="/dev"):
    """Everything one launch runs, for a validated config."""
    if not cfg.loader:
        raise ConfigError("VMrom is not set in set.conf (uefi, grub or a loader path)", vm=cfg.name)
    if cfg.loader == "grub":
        return Plan(bhyve=bhyve_argv(cfg, None, vnc_port, dev_dir), grub=grub_argv(cfg, grub, dev_dir),
                    device_map=device_map(cfg), nmdm=nmdm_a(cfg.name, dev_dir))
    return Plan(bhyve=bhyve_argv(cfg, rom, vnc_port, dev_dir),
                nmdm=nmdm_a(cfg.name, dev_dir) if cfg.com else None)
