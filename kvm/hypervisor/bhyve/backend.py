"""bhyve behind the hypervisor interface (see kvm/hypervisor/__init__.py): the exit-code table and
the bhyve-only host parts: bhyvectl, /dev/vmm, nmdm consoles, bhyve's process title. The command
lines come from argv.py."""

import os
import re
import shlex
import signal
from pathlib import Path

from kvm import host
from kvm.conf import firmware
from kvm.errors import ConfigError, KvmError, NotFound
from kvm.host import paths
from kvm.host.runfiles import AGENT, TPM_SOCKET, helper_file, secrets_file
from kvm.hypervisor.base import Exit, LaunchFailed
from kvm.hypervisor.bhyve.argv import VARS_FILE, nmdm_a, nmdm_b, plan

TITLE = "bhyve:"              # bhyve sets its process title to `bhyve: NAME`
PASSWORD = re.compile(r"(password=)[^,]*")

EXIT_REASONS = {0: "reboot", 1: "poweroff", 2: "halt", 3: "triplefault", 4: "error"}
EXIT_TEXT = {"reboot": "guest rebooted", "poweroff": "powered off", "halt": "halted",
             "triplefault": "crashed: triple fault", "error": "crashed: bhyve error",
             "unknown": "exited for an unknown reason", "signal": "killed by a signal"}


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


def find_rom(cfg, root, strict):
    """The UEFI code file: VMrom when a path, else the pinned one; NotFound at a real launch."""
    rom = cfg.vmrom if cfg.vmrom.startswith("/") else firmware.uefi_code(root)
    if not strict:
        return rom or "BHYVE_UEFI.fd"
    if rom is None or not os.path.isfile(rom):
        raise NotFound(f"UEFI firmware {rom or 'BHYVE_UEFI.fd'} not found: pkg install edk2-bhyve "
                       f"and run kvminst", vm=cfg.name)
    vars_file = Path(cfg.vmdir) / VARS_FILE
    if not vars_file.is_file():
        raise NotFound(f"UEFI vars file {vars_file} not found", vm=cfg.name)
    return rom


def find_grub(cfg, root, strict):
    """grub-bhyve: VMrom when a path, else the installed one; NotFound at a real launch."""
    grub = cfg.vmrom if cfg.vmrom.startswith("/") else firmware.grub(root)
    if not strict:
        return grub or "grub-bhyve"
    if grub is None or not os.path.isfile(grub):
        raise NotFound(f"grub-bhyve {grub or ''} not found: pkg install grub2-bhyve and run kvminst",
                       vm=cfg.name)
    return grub


SUN_PATH_MAX = 103   # FreeBSD's sun_path holds 104 bytes, its NUL included


def tpm_support(binary="bhyve"):
    """The TPM backends this host's bhyve has, probed from the binary itself (not its version):
    `bhyve -l help` lists `tpm` where it has TPM at all (passthru, FreeBSD 14.0 on); its swtpm
    emulation names itself `swtpm` inside the binary (14.2 on). A set of "passthru", "swtpm"."""
    import shutil
    path = shutil.which(binary)
    if path is None:
        return set()
    res = host.run([path, "-l", "help"], mutating=False, check=False)
    if res.status != 0 or "tpm" not in res.stdout.split():
        return set()
    try:
        with open(path, "rb") as fh:
            has_swtpm = b"swtpm" in fh.read()
    except OSError:
        has_swtpm = False
    return {"passthru", "swtpm"} if has_swtpm else {"passthru"}


def check_tpm(cfg, have):
    """A clear refusal when this bhyve lacks the TPM the VM asks for."""
    if not cfg.tpm or cfg.tpm.kind in have:
        return
    if cfg.tpm.kind == "swtpm" and "passthru" in have:
        raise ConfigError("TPM=swtpm but this host's bhyve has only TPM passthrough (swtpm came with "
                          "FreeBSD 14.2): use TPM=\"passthru:/dev/tpm0\" or upgrade", vm=cfg.name)
    raise ConfigError(f"TPM={cfg.tpm.text()} but this host's bhyve has no TPM support (`bhyve -l help` lists "
                      f"no tpm): upgrade FreeBSD (14.0 for passthrough, 14.2 for swtpm) or unset TPM", vm=cfg.name)


def check_socket_path(cfg, path, what):
    if len(str(path).encode()) > SUN_PATH_MAX:
        raise ConfigError(f"the {what} socket {path} is over the {SUN_PATH_MAX} bytes a unix socket's path "
                          f"takes: set KVM_RUN_DIR to a shorter folder", vm=cfg.name)


def _bhyvectl(name, op):
    return ["bhyvectl", f"--vm={name}", op]


class Bhyve:
    """The bhyve backend (methods documented in __init__.py)."""

    name = "bhyve"
    # bhyve's VM names are the kernel's (/dev/vmm/NAME), its title `bhyve: NAME` and the console
    # /dev/nmdmNAMEA as the shell toolkit has it: one VM of a name per host, whatever its root
    host_wide_names = True
    # what kvminst pins into ROOT/firmware: (file, where it comes from, the package that installs it)
    firmware_files = (("BHYVE_UEFI.fd", "uefi", "edk2-bhyve"), ("BHYVE_UEFI_VARS.fd", "uefi", "edk2-bhyve"),
                      ("grub-bhyve", "grub", "grub2-bhyve"))

    # what commands, set.conf and run say of this hypervisor (TEXTS in kvm/hypervisor/base.py)
    # the exit reasons the log calls a crash (vmlist, vminfo, status: `crashed` once the supervisor ended)
    crash_reasons = tuple(r for r, text in EXIT_TEXT.items() if text.startswith("crashed"))
    shows_accelerator = False  # vminfo's text: always vmm(4), nothing to tell
    power_button_text = "SIGTERM to bhyve"
    boot_comment = "grub only (mandatory there): the root device grub-bhyve boots from."
    options_help = "bhyve flags without dash, e.g. AHP"
    options_prompt = "bhyve options without dash (e.g. AHP) [none]: "
    options_comment = ("bhyve one-letter flags, without the dash (default none). A: ACPI tables,",
                       "H: yield on HLT, P: exit on PAUSE, S: wire memory (needed for passthru),",
                       "u: RTC in UTC, w: ignore unknown MSRs.")
    options_example = "AHP"
    exit_status_text = "bhyve's exit status"
    reasons_text = "reboot, poweroff, halt,\ntriplefault, error, unknown"

    @staticmethod
    def console_comment(name):
        return (f"Serial console on /dev/nmdm{name}A (always on with grub).",
                f"Attach with: cu -l /dev/nmdm{name}B   (or ./console {name}; quit with ~.)")

    def firmware_warning(self, missing, host_os):
        """kvminst's line when packages of firmware_files are missing, else None; host_os (the
        Platform) says how packages are installed there."""
        if not missing:
            return None
        return (f"firmware not installed on this host: {host_os.install_command(sorted(missing))}"
                "; then run kvminst again to pin it")

    def firmware_here(self, root):
        """Which loaders this host can boot from `root`: the pinned UEFI code, grub-bhyve."""
        return {"uefi": firmware.uefi_code(root) is not None, "grub": firmware.grub(root) is not None}

    def accelerator(self):
        return "vmm"  # bhyve always runs on the kernel's vmm(4)

    def uefi_vars(self, root):
        """(template, file name in the VM folder, what to do when it is missing) for vmcreate."""
        return (firmware.vars_template(root), VARS_FILE,
                "no UEFI vars template pinned: pkg install edk2-bhyve, then run kvminst")

    def console_socket(self, run):
        return None  # a terminal attaches with cu to the nmdm device (console_command)

    def plan(self, cfg, ctx):
        rom = find_rom(cfg, ctx.root, ctx.strict) if cfg.loader == "uefi" else None
        grub = find_grub(cfg, ctx.root, ctx.strict) if cfg.loader == "grub" else None
        guest = (str(helper_file(ctx.run, TPM_SOCKET)), str(helper_file(ctx.run, AGENT))) if ctx.run else None
        if ctx.strict:
            check_tpm(cfg, tpm_support() if cfg.tpm else set())
            if cfg.tpm and cfg.tpm.kind == "swtpm":
                check_socket_path(cfg, guest[0], "swtpm")
            if cfg.agent:
                check_socket_path(cfg, guest[1], "guest agent")
        return plan(cfg, rom=rom, grub=grub, vnc_port=ctx.vnc_port, dev_dir=str(paths.current().dev_dir),
                    run_dir=str(paths.current().run_dir), guest=guest,
                    secrets_path=str(secrets_file(ctx.run)) if ctx.run else None)

    @staticmethod
    def tpm_channel(socket):
        """swtpm's arguments for bhyve's `-l tpm,swtpm,SOCKET`: bhyve sends TPM commands on the data
        socket and sends no CMD_INIT, so swtpm starts the TPM itself."""
        return ["--server", f"type=unixio,path={socket}", "--flags", "not-need-init,startup-clear"]

    def prepare_host(self, plan_):
        """kldstat -qm nmdm || kldload nmdm."""
        for module in plan_.needs:
            if host.run(["kldstat", "-qm", module], mutating=False, check=False).status != 0:
                host.run(["kldload", module])

    def prepare_host_text(self, plan_):
        return [f"kldstat -qm {m} || kldload {m}" for m in plan_.needs]

    def start(self, plan_, announce=None, ready=None):
        """grub-bhyve when the loader is grub, then bhyve; ready(pid) once bhyve is spawned (the
        host's limits on its exact pid: bhyve has no paused start, so it runs as early as can be)."""
        proc = self._spawn(plan_, announce)
        if ready:
            try:
                ready(proc.pid)
            except KvmError as exc:
                host.send_signal(proc.pid, signal.SIGKILL)
                host.wait_process(proc)
                raise LaunchFailed(exc.message) from None
        return proc

    def _spawn(self, plan_, announce=None):
        for path, text, mode in plan_.files:
            host.write_file(path, text, mode=mode)
        if plan_.loader:
            res = host.run(plan_.loader, check=False, capture=False, new_session=True)
            if res.status != 0:
                raise LaunchFailed(f"grub-bhyve failed (exit {res.status})")
        if announce:
            announce(self.shown(plan_.argv))
        return host.spawn_quiet(plan_.argv, shown=self.shown(plan_.argv))

    def wait(self, proc, timeout=None):
        return host.wait_process(proc, timeout)

    def classify(self, code):
        text = describe(code) + f" (exit {code})" if code >= 0 else describe(code)
        return Exit(code=code, reason=classify(code), text=text)

    # ---------------------------------------------------------------- disks while the VM runs
    # bhyve (FreeBSD 13+) watches a disk's backing file (kevent, NOTE_ATTRIB) for nvme and
    # virtio-blk and tells the guest its new size (pci_nvme_resized, pci_vtblk_resized); ahci
    # does not, and bhyve has no PCI hot-plug.
    RESIZE_ONLINE = ("nvme", "virtio-blk")

    def disk_add_online(self, run, cfg, slot, driver, path):
        return "bhyve has no PCI hot-plug"

    def disk_grow_online(self, run, cfg, slot, driver, path, size):
        """nvme and virtio-blk: the file is grown and bhyve tells the guest (None: done)."""
        if driver not in self.RESIZE_ONLINE:
            return f"bhyve resizes nvme and virtio-blk disks online, not {driver}"
        host.grow_file(path, size)
        return None

    def power_button(self, run, pid):
        """bhyve turns SIGTERM into the ACPI power button."""
        host.send_signal(pid, signal.SIGTERM)

    def force_off(self, run, pid):
        host.run(_bhyvectl(run.name, "--force-poweroff"), check=False)

    def destroy(self, run):
        if self.is_allocated(run):
            host.run(_bhyvectl(run.name, "--destroy"), check=False)

    def destroy_text(self, run):
        return shlex.join(_bhyvectl(run.name, "--destroy"))

    def is_allocated(self, run):
        """/dev/vmm/NAME exists (an unreadable /dev/vmm counts as no)."""
        try:
            return os.path.lexists(paths.current().vmm_dir / run.name)
        except OSError:
            return False

    def allocated(self, root_folder=None):
        """Every VM name allocated on the host (/dev/vmm: host-wide, the root does not matter)."""
        try:
            return set(os.listdir(paths.current().vmm_dir))
        except OSError:
            return set()

    def is_own_process(self, args, run):
        return is_bhyve_of(args, run.name)

    def find_process(self, run):
        for pid, args in host.list_processes():
            if is_bhyve_of(args, run.name):
                return pid
        return None

    def console_command(self, run):
        return ["cu", "-l", nmdm_b(run.name, str(paths.current().dev_dir))]

    def console_device(self, run):
        return nmdm_a(run.name, str(paths.current().dev_dir))

    def cleanup_hint(self, run):
        return f"bhyvectl --vm={run.name} --destroy"

    def shown(self, argv):
        return shlex.join(PASSWORD.sub(r"\1***", a) for a in argv)


def is_bhyve_of(args, name):
    """True when a process's arguments are bhyve running VM `name` (exact name, not a substring):
    its title `bhyve: NAME` (one string from procfs, two words from ps, `(bhyve)` added by FreeBSD's
    ps), or a plain `bhyve ... NAME` command line."""
    if not args:
        return False
    words = " ".join(args).split()
    if len(words) > 1 and words[-1] == "(bhyve)":
        words = words[:-1]  # FreeBSD ps adds the command name when the title differs from it
    if words == [TITLE, name]:
        return True
    return len(words) >= 2 and words[-1] == name and os.path.basename(words[0]) == "bhyve"
