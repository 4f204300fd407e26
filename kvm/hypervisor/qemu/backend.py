"""qemu behind the hypervisor interface (see __init__.py): the launch, the QMP session the
supervisor keeps for a running VM, stop through QMP, the process title, the serial socket.

The argv comes from argv.py (pure). Here: firmware lookup, the accelerator, spawning qemu,
QMP (the SHUTDOWN event gives the exit reason, since qemu exits 0 for a reset and a power
off alike), VNC password and VNC=wait through QMP, and console.log's cap. Run files: `qmp` and
`console` in the VM's run folder (RUN_DIR/ROOT_ID/NAME/, kvm/host/runfiles.py: per install root,
so two roots may each run a VM of the same name), removed by `destroy` once qemu is gone.

console.log is written by qemu itself (the chardev's logfile=): it stays written with nobody
attached and costs no process or thread; its cap is kept by the supervisor while it waits
(copy to console.log.0, then truncate: qemu appends, so it goes on at the new end).
"""

import os
import shlex
import signal
import time
from pathlib import Path

from kvm import host
from kvm.conf import firmware
from kvm.errors import ConfigError, NotFound
from kvm.host import lock, paths
from kvm.hypervisor.base import Exit, LaunchFailed, Plan
from kvm.hypervisor.qemu import accel
from kvm.hypervisor.qemu import argv as qemu
from kvm.hypervisor.qemu import qmp as protocol
from kvm.hypervisor.qemu.passthru import check_passthru
from kvm.hypervisor.qemu.qmp import Qmp, QmpError, shutdown_reason

CONSOLE_LOG = "console.log"
LOG_CAP = 1 << 20         # bytes of console.log before it is rotated (one rotation: console.log.0)
TICK = 1.0                # seconds between console.log size checks while waiting for qemu
QMP_CONNECT = 10          # seconds for qemu to make its QMP socket
EXIT_TEXT = {"reboot": "guest rebooted", "poweroff": "powered off", "fault": "crashed: guest panic",
             "error": "qemu failed", "unknown": "exited for an unknown reason", "signal": "killed by a signal"}


class Running:
    """A qemu the supervisor started: its process, QMP session and the last SHUTDOWN reason."""

    def __init__(self, proc, qmp, log, wait_vnc):
        self.proc, self.pid, self.qmp, self.log = proc, proc.pid, qmp, log
        self.reason, self.wait_vnc = "", wait_vnc


def run_file(run, what):
    """The VM's QMP socket (what="qmp") or COM1 socket (what="console"); run: its RunFiles."""
    return run.path(qemu.SOCKETS[what])


def check_socket_paths(run, name):
    """A unix socket's path takes at most 107 bytes: refuse a launch whose would not fit."""
    for what in qemu.SOCKETS:
        path = str(run_file(run, what))
        if len(path.encode()) > qemu.SOCKET_MAX:
            raise ConfigError(f"qemu's {what} socket {path} is {len(path.encode())} bytes long, over the "
                              f"{qemu.SOCKET_MAX} a unix socket's path takes: set KVM_RUN_DIR to a shorter "
                              f"folder", vm=name)


def console_log(vmdir):
    return Path(vmdir) / CONSOLE_LOG


def find_code(cfg, root, strict):
    """OVMF's code file (VMrom as a path, else the pinned/host one) and the VM's own vars copy."""
    code = cfg.vmrom if cfg.vmrom.startswith("/") else firmware.ovmf_code(root)
    if not strict:
        return str(code or firmware.OVMF_CODE)
    if code is None or not os.path.isfile(code):
        raise NotFound(f"OVMF firmware {code or firmware.OVMF_CODE} not found: apt-get install "
                       f"qemu-system-x86 ovmf and run kvminst", vm=cfg.name)
    vars_file = Path(cfg.vmdir) / qemu.VARS_FILE
    if not vars_file.is_file():
        raise NotFound(f"UEFI vars file {vars_file} not found (the VM was made for another hypervisor?): "
                       f"cp {firmware.ovmf_vars(root) or firmware.OVMF_VARS} {vars_file}", vm=cfg.name)
    return str(code)


LOG_MODE = 0o640   # console.log: what the guest printed is for root and its group only


def open_console_log(path):
    """console.log as qemu will append to it: made 0640 before qemu creates it with its umask's
    0644 (never through a link), and an older one made 0640 at most."""
    try:
        os.close(lock.open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE))
    except OSError as exc:
        raise LaunchFailed(f"cannot open {path}: {exc.strerror}") from None
    host.tighten_mode(path, LOG_MODE)


def rotate_log(path, cap=LOG_CAP):
    """Keep console.log under its cap: copy it to console.log.0, then truncate it in place."""
    try:
        if os.path.getsize(path) <= cap:
            return
        host.copy_file(path, f"{path}.0", mode=LOG_MODE)
        os.truncate(path, 0)
    except (OSError, host.WriteFailed):
        pass  # a full pool must not end the VM: the log just stays as it is


class Qemu:
    """The qemu backend (methods documented in __init__.py)."""

    name = "qemu"
    host_wide_names = False   # its run files are per install root: two roots may run a `web` each
    # what kvminst pins into ROOT/firmware: OVMF from Debian's ovmf package, code and vars template
    firmware_files = ((firmware.OVMF_CODE, "ovmf", "ovmf"), (firmware.OVMF_VARS, "ovmf", "ovmf"))
    # the packages that install qemu and OVMF, by platform name
    PACKAGES = {"linux": ("qemu-system-x86", "ovmf"), "freebsd": ("qemu", "edk2-qemu-x64")}

    # what commands, set.conf and run say of this hypervisor (TEXTS in kvm/hypervisor/base.py)
    # the exit reasons the log calls a crash (vmlist, vminfo, status: `crashed` once the supervisor ended)
    crash_reasons = tuple(r for r, text in EXIT_TEXT.items() if text.startswith("crashed"))
    shows_accelerator = True  # vminfo's text: kvm, or tcg (slow) when /dev/kvm does not work
    power_button_text = "QMP system_powerdown"
    boot_comment = "grub only (mandatory there): cd... boots the ISO, any other the disk (SeaBIOS)."
    options_help = "VMoptions letters without dash: S locks the memory, u keeps the RTC in UTC"
    options_prompt = "Options without dash (S: locked memory, u: RTC in UTC) [none]: "
    options_comment = ("One-letter flags, without the dash (default none). qemu reads two:",
                       "S: locked memory (-overcommit mem-lock=on), u: RTC in UTC (else local",
                       "time). The others (A, H, P, w ...) mean nothing to qemu and are ignored.")
    options_example = "u"
    exit_status_text = "qemu's exit status"
    reasons_text = "reboot, poweroff, fault\n(a guest panic), error, signal, unknown"

    @staticmethod
    def console_comment(name):
        return ("Serial console (always on with grub): ./console " + name + " (quit with ~.);",
                f"what the guest printed: ./console --log {name} (console.log in this folder).")

    def firmware_warning(self, missing, host_os):
        """kvminst's line when OVMF or qemu itself is missing, else None; host_os (the Platform)
        says how packages are installed there."""
        import shutil
        if not missing and shutil.which(qemu.BINARY):
            return None
        install = host_os.install_command(self.PACKAGES.get(host_os.name, self.PACKAGES["linux"]))
        return f"qemu or OVMF not installed on this host: {install}; then run kvminst again to pin OVMF"

    def firmware_here(self, root):
        """Which loaders this host can boot from `root`: UEFI with OVMF (pinned, else the host's, as
        a launch finds it); grub VMs with qemu's own SeaBIOS."""
        return {"uefi": firmware.ovmf_code(root) is not None, "grub": True}

    def __init__(self):
        self._live = {}  # VM name -> Running, for the supervisor's own stop (one QMP client at a time)

    def accelerator(self):
        return accel.chosen(qemu.BINARY)

    def uefi_vars(self, root):
        """(template, file name in the VM folder, what to do when it is missing) for vmcreate."""
        return (firmware.ovmf_vars(root), qemu.VARS_FILE,
                "no OVMF vars template found: apt-get install qemu-system-x86 ovmf, then run kvminst")

    def plan(self, cfg, ctx):
        code = find_code(cfg, ctx.root, ctx.strict) if cfg.loader == "uefi" else None
        if ctx.strict:
            check_socket_paths(ctx.run, cfg.name)
        sockets = (run_file(ctx.run, "qmp"), run_file(ctx.run, "console"))
        detail = qemu.plan(cfg, sockets=sockets, code=code, accel=self.accelerator(),
                           vnc_port=ctx.vnc_port, console_log=console_log(cfg.vmdir) if cfg.com else None)
        if ctx.strict:  # a launch: the host must be ready (a dry run and vminfo show the plan all the same)
            check_passthru(cfg)
        return Plan(argv=detail.argv, firmware=code if cfg.loader == "uefi" else "SeaBIOS",
                    console=detail.console, detail=detail)

    def prepare_host(self, plan_):
        pass

    def prepare_host_text(self, plan_):
        return []

    def start(self, plan_, announce=None):
        detail = plan_.detail
        shown = self.shown(plan_.argv)
        if announce:
            announce(shown)
        if detail.log:
            open_console_log(detail.log)
        proc = host.spawn_quiet(plan_.argv, shown=shown)
        try:
            qmp = Qmp.connect(detail.qmp, timeout=QMP_CONNECT)
            if detail.vnc_password:
                qmp.execute(protocol.SET_VNC_PASSWORD, {"password": detail.vnc_password})
            if detail.paused and not detail.wait_vnc:
                qmp.execute(protocol.CONT)
        except QmpError as exc:
            host.send_signal(proc.pid, signal.SIGKILL)
            code = host.wait_process(proc)
            raise LaunchFailed(f"qemu did not start (exit {code}): {exc.message}") from None
        run = Running(proc, qmp, detail.log, detail.wait_vnc)
        self._live[detail.name] = run
        return run

    def wait(self, run, timeout=None):
        """(SHUTDOWN reason, exit status) once qemu ended; host.Timeout when the time ran out.
        State lives in `run`, so a wait broken by the supervisor's signal handler resumes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while run.qmp is not None:
            left = TICK if deadline is None else min(TICK, deadline - time.monotonic())
            if left <= 0:
                raise host.Timeout()
            try:
                event = run.qmp.wait_event((protocol.SHUTDOWN, protocol.VNC_CONNECTED), timeout=left)
            except QmpError:
                if run.log:
                    rotate_log(run.log)
                continue
            if event is None:  # qemu closed QMP: it is ending
                run.qmp.close()
                run.qmp = None
            elif event["event"] == protocol.VNC_CONNECTED:
                self._vnc_connected(run)
            else:
                run.reason = shutdown_reason(event)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        code = host.wait_process(run.proc, left)
        self._live = {k: v for k, v in self._live.items() if v is not run}
        return run.reason, code

    def _vnc_connected(self, run):
        """VNC=wait: the guest starts running when the first VNC client came."""
        if run.wait_vnc:
            run.wait_vnc = False
            try:
                run.qmp.execute(protocol.CONT)
            except QmpError:
                pass

    def classify(self, observed):
        reason, code = observed
        kind = qemu.classify(reason, code)
        if kind == "signal":
            try:
                return Exit(code=code, reason=kind, text=f"killed by {signal.Signals(-code).name}")
            except ValueError:
                return Exit(code=code, reason=kind, text=f"killed by signal {-code}")
        why = f"SHUTDOWN {reason}" if reason else "no SHUTDOWN event"
        return Exit(code=code, reason=kind, text=f"{EXIT_TEXT[kind]} ({why}, exit {code})")

    def _qmp(self, run, command):
        """Run a QMP command on the supervisor's session, or (an orphan) on a new one."""
        live = self._live.get(run.name)
        if live is not None and live.qmp is not None:
            return live.qmp.execute(command)
        with Qmp.connect(run_file(run, "qmp"), timeout=2) as session:
            return session.execute(command)

    def power_button(self, run, pid):
        """QMP system_powerdown: the ACPI power button."""
        try:
            self._qmp(run, protocol.POWERDOWN)
        except QmpError:
            pass  # qemu is ending or does not answer: the forced steps follow after the timeout

    def force_off(self, run, pid):
        """QMP quit: qemu ends at once (SIGKILL follows if it does not)."""
        try:
            self._qmp(run, protocol.QUIT)
        except QmpError:
            pass

    def destroy(self, run):
        """Remove the sockets a qemu that is gone left behind."""
        for what in qemu.SOCKETS:
            if os.path.lexists(run_file(run, what)):
                host.remove_file(run_file(run, what))

    def destroy_text(self, run):
        return shlex.join(["rm", "-f", *(str(run_file(run, w)) for w in qemu.SOCKETS)])

    def cleanup_hint(self, run):
        return self.destroy_text(run)

    def is_allocated(self, run):
        """Its QMP socket exists (qemu runs, or died without cleaning up)."""
        return os.path.lexists(run_file(run, "qmp"))

    def allocated(self, root_folder):
        """The names of the root's VMs (root_folder: RUN_DIR/ROOT_ID) with a QMP socket, and of
        those with one in the legacy place (RUN_DIR/NAME.qmp: an earlier version's)."""
        out = set()
        try:
            for name in os.listdir(root_folder):
                if os.path.lexists(os.path.join(root_folder, name, qemu.SOCKETS["qmp"])):
                    out.add(name)
        except OSError:
            pass
        try:
            suffix = f".{qemu.SOCKETS['qmp']}"
            out |= {e[:-len(suffix)] for e in os.listdir(paths.current().run_dir) if e.endswith(suffix)}
        except OSError:
            pass
        return out

    def is_own_process(self, args, run):
        return is_qemu_of(args, run.name, run_file(run, "qmp"))

    def find_process(self, run):
        qmp_socket = run_file(run, "qmp")
        for pid, args in host.list_processes():
            if is_qemu_of(args, run.name, qmp_socket):
                return pid
        return None

    def console_command(self, run):
        return ["console", run.name]

    def console_device(self, run):
        return str(run_file(run, "console"))

    def console_socket(self, run):
        return str(run_file(run, "console"))

    def shown(self, argv):
        return shlex.join(argv)  # no secret on qemu's command line: the VNC password goes by QMP


def is_qemu_of(args, name, qmp_socket=None):
    """True when a process's arguments are qemu running VM `name`: qemu-system-* with
    `-name NAME,process=qemu:NAME` exactly (a VM called `web` is not `web2`) and, given its QMP
    socket, `-qmp unix:SOCKET,...` (the VM of that name of this root, not another root's)."""
    if not args or not os.path.basename(args[0]).startswith("qemu-system"):
        return False
    want = qemu.process_name(name)
    if not any(a == "-name" and i + 1 < len(args) and args[i + 1] == want for i, a in enumerate(args)):
        return False
    if qmp_socket is None:
        return True
    prefix = f"unix:{qmp_socket},"
    return any(a == "-qmp" and i + 1 < len(args) and args[i + 1].startswith(prefix) for i, a in enumerate(args))
