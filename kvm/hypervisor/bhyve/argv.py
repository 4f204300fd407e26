"""bhyve's command lines, pure: argv from a validated VmConfig (bhyve's own, grub-bhyve's, the
device.map), with the names bhyve gives a VM's files and consoles. No process, no host state:
backend.py runs them.

The order of bhyve's arguments is the shell toolkit's, item for item:
  bhyve -OPTS -c CORES -m MEM [-p VCPU:HOSTCPU ...] -s 0,hostbridge [-s 1,DRIVER,DISK] [-s 2,ahci-cd,ISO]
        -s 31,lpc [-l com1,/dev/nmdmNAMEA] [-s 29,xhci,tablet] [-s 30,fbuf,...]
        [-s DEVICE ...] [-s 27,virtio-console,org.qemu.guest_agent.0=AGENT] [-l bootrom,ROM,VARS]
        [-l tpm,swtpm|passthru,PATH] [-k SECRETS] NAME
(-p, the agent's -s and -l tpm are kvm's own: CPUPin, Agent and TPM, issue 22.)
Slots: 0 hostbridge, 1 main disk, 2 ISO, 3-28 user devices, 29 tablet, 30 fbuf, 31 lpc.
The VNC password is never on the command line (ps shows it): it goes in SECRETS, a 0600 bhyve
config file (`-k`: `pci.0.30.0.password=...`), after the -s that makes slot 30 (bhyve refuses an
-s whose slot a config file already made, "already occupied").
"""

from pathlib import Path

from kvm.errors import ConfigError
from kvm.hypervisor.base import Plan

VARS_FILE = "UEFI_VARS.fd"    # the VM's own UEFI variables, in its folder (the shell toolkit's name)
DEVICE_MAP = "device.map"     # grub-bhyve's disk map, in the VM folder
NMDM_MODULE = "nmdm"          # the null-modem driver behind serial consoles
FBUF_NODE = "pci.0.30.0"      # bhyve's config node of the fbuf at slot 30
SECRETS_SUFFIX = ".bhyve.conf"  # bhyve's -k file holding the VNC password: RUN_DIR/ROOT_ID/NAME/bhyve.conf
                                # (runfiles.secrets_file); RUN_DIR/NAME.bhyve.conf without a VM's run files
SECRETS_MODE = 0o600


def secrets_file(run_dir, name):
    """The -k file of VM `name` in the run folder."""
    return str(Path(run_dir) / f"{name}{SECRETS_SUFFIX}")


def secrets_text(cfg):
    """The -k file's text: the fbuf's password (bhyve's config syntax, one `path=value` a line)."""
    return f"{FBUF_NODE}.password={cfg.vnc_password}\n"


def nmdm_a(name, dev_dir="/dev"):
    """The guest's side of the VM's null-modem pair."""
    return f"{dev_dir}/nmdm{name}A"


def nmdm_b(name, dev_dir="/dev"):
    """The side a terminal attaches to."""
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
    return out + ["-s", fbuf]


def secrets_args(cfg, secrets):
    """-k SECRETS when the fbuf has a password (after every -s)."""
    return ["-k", secrets] if cfg.vnc and cfg.vnc_password else []


def device_args(cfg):
    """Each Devices item as written, but a disk or CD file given relative to the VM folder made
    absolute (bhyve would open it relative to its own working folder)."""
    out = []
    for dev in cfg.devices:
        out += ["-s", absolute_item(cfg, dev)]
    return out


def absolute_item(cfg, dev):
    path = dev.path
    if dev.kind not in ("disk", "cdrom") or not path or path.startswith("/"):
        return dev.arg()
    full = str(Path(cfg.vmdir) / path)
    conf = dev.conf.replace(path, full, 1)
    return ",".join(x for x in (dev.slot, dev.emulation, conf) if x)


def bootrom_args(cfg, rom):
    if cfg.loader != "uefi":
        return []
    return ["-l", f"bootrom,{rom},{Path(cfg.vmdir) / VARS_FILE}"]


AGENT_SLOT = 27   # config.AGENT_SLOT
AGENT_PORT = "org.qemu.guest_agent.0"   # the port name a guest agent looks for


def pin_args(cfg):
    """CPUPin: one -p VCPU:HOSTCPU each."""
    out = []
    for vcpu, host_cpu in cfg.cpu_pin:
        out += ["-p", f"{vcpu}:{host_cpu}"]
    return out


def agent_args(cfg, agent):
    """Agent=yes: a virtio-console at slot 27 whose port org.qemu.guest_agent.0 is a unix socket
    bhyve makes (kvm connects to it)."""
    if not cfg.agent:
        return []
    if not agent:
        raise ConfigError("Agent=yes but no socket was given for the guest agent", vm=cfg.name)
    return ["-s", f"{AGENT_SLOT},virtio-console,{AGENT_PORT}={agent}"]


def tpm_args(cfg, tpm_socket):
    """TPM: -l tpm,swtpm,SOCKET (swtpm's socket) or -l tpm,passthru,/dev/tpmN."""
    if not cfg.tpm:
        return []
    if cfg.tpm.kind == "passthru":
        return ["-l", f"tpm,passthru,{cfg.tpm.path}"]
    if not tpm_socket:
        raise ConfigError("TPM=swtpm but no socket was given for swtpm", vm=cfg.name)
    return ["-l", f"tpm,swtpm,{tpm_socket}"]


def bhyve_argv(cfg, rom=None, vnc_port=None, dev_dir="/dev", secrets=None, guest=None):
    """The bhyve command line for a config (secrets: the -k file, with a VNC password; guest:
    (swtpm socket, agent socket), with TPM=swtpm or Agent=yes)."""
    tpm_socket, agent = guest or (None, None)
    argv = ["bhyve"]
    if cfg.options:
        argv.append(f"-{cfg.options}")
    argv += ["-c", str(cfg.cores), "-m", cfg.mem] + pin_args(cfg) + ["-s", "0,hostbridge"]
    argv += disk_args(cfg) + iso_args(cfg) + ["-s", "31,lpc"] + com_args(cfg, dev_dir)
    argv += vnc_args(cfg, vnc_port) + device_args(cfg) + agent_args(cfg, agent) + bootrom_args(cfg, rom)
    argv += tpm_args(cfg, tpm_socket)
    if cfg.vnc and cfg.vnc_password and not secrets:
        raise ConfigError("VNCpassword is set but no file was given to pass it to bhyve", vm=cfg.name)
    return argv + secrets_args(cfg, secrets) + [cfg.name]


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


def plan(cfg, rom=None, grub=None, vnc_port=None, dev_dir="/dev", run_dir="/var/run/kvm", guest=None,
         secrets_path=None):
    """Everything one launch runs, for a validated config and the firmware found. Plan.files:
    (path, text, mode) written before the launch (the -k file with the VNC password, 0600, at
    secrets_path: the VM's run folder's; RUN_DIR/NAME.bhyve.conf without one); guest: (swtpm
    socket, agent socket) in the VM's run folder."""
    if not cfg.loader:
        raise ConfigError("VMrom is not set in set.conf (uefi, grub or a loader path)", vm=cfg.name)
    nmdm = nmdm_a(cfg.name, dev_dir)
    secrets = (secrets_path or secrets_file(run_dir, cfg.name)) if cfg.vnc and cfg.vnc_password else None
    files = ((secrets, secrets_text(cfg), SECRETS_MODE),) if secrets else ()
    if cfg.loader == "grub":
        return Plan(argv=bhyve_argv(cfg, None, vnc_port, dev_dir, secrets, guest), loader=grub_argv(cfg, grub, dev_dir),
                    files=((str(Path(cfg.vmdir) / DEVICE_MAP), device_map(cfg), 0o644),) + files,
                    firmware=str(grub), console=nmdm, needs=(NMDM_MODULE,))
    return Plan(argv=bhyve_argv(cfg, rom, vnc_port, dev_dir, secrets, guest), files=files,
                firmware=str(rom) if rom else None,
                console=nmdm if cfg.com else None, needs=(NMDM_MODULE,) if cfg.com else ())
