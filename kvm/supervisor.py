"""The per-VM loop behind `start`: lock, hooks, launch, classify the exit, clean up, signals.

Per launch: re-read set.conf -> preRun -> (grub-bhyve with a fresh device.map) ->
bhyve -> classify its exit -> bhyvectl --destroy -> postRun; then loop on a guest
reboot, end otherwise. SIGTERM/SIGINT/SIGHUP stop the guest gracefully (ACPI power
button, then a forced power-off after the timeout), run postRun, and exit.
"""

import collections
import json
import os
import shlex
import signal
import sys
import syslog
import time

from . import bhyve, firmware, host, hooks, lock as lockmod, paths, ports, vm as vmmod
from .errors import KvmError, NotFound, StateError

EXIT_STATUS = {"poweroff": 0, "halt": 0, "stopped": 0, "triplefault": 3, "error": 4, "unknown": 5,
               "signal": 5}
HOOK_GRACE = 10        # seconds a hook may go on after a stop request, before it is killed
FORCE_GRACE = 10       # seconds after a forced power-off before bhyve is killed


class _Wake(Exception):
    """Raised by the signal handler to break a blocking wait."""


def stop_request_path(name):
    return paths.current().run_dir / f"{name}.stop"


def acquire_lock(name):
    """The VM's exclusive lock (held for the supervisor's life), or StateError naming the holder."""
    lockmod.run_dir()
    path = vmmod.lock_path(name)
    got = lockmod.try_acquire(path, f"{os.getpid()}\n")
    if got is None:
        found = lockmod.holder(path) or (0, "")
        if found[1]:
            raise StateError(f"is busy: {lockmod.describe_holder(found)} holds {path}; try again when it "
                             f"is done", vm=name)
        raise StateError(f"already running ({lockmod.describe_holder(found)} holds {path})", vm=name)
    return got


class Supervisor:
    """Runs one VM until it powers off, is stopped, or fails."""

    def __init__(self, vm, out=None):
        self.vm = vm
        self.name = vm.name
        self.out = out or sys.stdout
        self.stop = None          # None, or {"timeout": s, "force": bool} once a stop is requested
        self.in_wait = False
        self.state = {}
        self.faults = collections.deque()
        self.nmdm_ok = False
        self.stop_method = None

    # ------------------------------------------------------------------ output
    def log(self, message, level=syslog.LOG_NOTICE):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} {self.name}: {message}", file=self.out, flush=True)
        syslog.syslog(level, f"{self.name}: {message}")

    def save(self, **changes):
        self.state.update(changes)
        vmmod.write_state(self.name, self.state)

    # ----------------------------------------------------------------- signals
    def on_signal(self, signum, frame):
        first = self.stop is None
        req = {}
        try:
            req = json.loads(stop_request_path(self.name).read_text())
        except (OSError, ValueError):
            pass
        if first:
            self.stop = {"timeout": req.get("timeout"), "force": bool(req.get("force")), "since": time.time()}
        elif signum == signal.SIGINT or req.get("force"):
            self.stop["force"] = True  # a second Ctrl-C (or stop -f) forces the power-off
        if self.in_wait:
            raise _Wake()

    def install_signals(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)

    # -------------------------------------------------------------------- main
    def run(self):
        """Supervise until the end; returns the exit status."""
        syslog.openlog("kvm", syslog.LOG_PID, syslog.LOG_DAEMON)
        lock = self.lock = acquire_lock(self.name)
        try:
            rt = vmmod.runtime(self.vm)
            if rt.bhyve:
                raise StateError(f"bhyve pid {rt.bhyve} still runs this VM without a supervisor: "
                                 f"`stop {self.name}` powers it off", vm=self.name)
            stop_request_path(self.name).unlink(missing_ok=True)
            now = time.time()
            self.state = {"supervisor": os.getpid(), "started": now, "bhyve": 0, "boots": 0}
            self.save()
            self.install_signals()
            self.destroy_allocated()
            return self.loop()
        finally:
            self.finish(lock)

    def finish(self, lock):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        stop_request_path(self.name).unlink(missing_ok=True)
        self.save(supervisor=0, bhyve=0, vnc_port=0, ended=time.time(), stop_method=self.stop_method)
        lock.release()

    def loop(self):
        while True:
            if self.stop:
                self.log("stop requested before the launch: not starting")
                return 0
            cfg = self.load_config()
            launch = self.prepare(cfg)
            hook_status = self.hook("preRun")
            if hook_status != 0 or self.stop:
                why = f"preRun failed (exit {hook_status})" if hook_status else "stop requested during preRun"
                self.log(f"{why}: not launching bhyve")
                self.hook("postRun", {"VMexit": "", "VMreason": "prerun-failed" if hook_status else "stopped"})
                return 1 if hook_status else 0
            if not self.lock_kept():
                return 1
            code = self.launch(cfg, launch)
            reason = bhyve.classify(code) if code is not None else "error"
            self.destroy_allocated()
            self.save(bhyve=0, last_exit=reason, last_code=code)
            self.hook("postRun", {"VMexit": "" if code is None else str(code), "VMreason": reason})
            if self.stop:
                self.log(f"stopped ({self.stop_method or 'shut down'})")
                return 0
            if reason == "reboot":
                continue
            if reason in ("poweroff", "halt"):
                return 0
            if not self.may_restart(cfg):
                return EXIT_STATUS.get(reason, 5)

    def lock_kept(self):
        """Before each launch: is the lock file still ours? Someone may have removed it (or the whole
        run dir) meanwhile, which would let a second start in: take it again, or give way."""
        if not self.lock.lost():
            return True
        again = lockmod.try_acquire(self.lock.path, f"{os.getpid()}\n", tries=1)
        if again is None:
            found = lockmod.holder(self.lock.path) or (0, "")
            self.log(f"lock file {self.lock.path} was removed and {lockmod.describe_holder(found)} holds a new "
                     f"one: not launching a second bhyve", syslog.LOG_ERR)
            return False
        self.lock.release()
        self.lock.fd = again.fd
        again.fd = None
        self.log(f"lock file {self.lock.path} was removed: made it again", syslog.LOG_WARNING)
        self.save()
        return True

    # -------------------------------------------------------------- per launch
    def load_config(self):
        try:
            return self.vm.config(evaluate=True)
        except KvmError as exc:
            self.log(f"cannot launch: {exc.message}", syslog.LOG_ERR)
            raise

    def prepare(self, cfg):
        """Check files, load nmdm, choose the VNC port; the launch plan."""
        rom = None
        if cfg.loader == "uefi":
            rom = cfg.vmrom if cfg.vmrom.startswith("/") else firmware.uefi_code(self.vm.root.path)
            if rom is None or not os.path.isfile(rom):
                raise NotFound(f"UEFI firmware {rom or 'BHYVE_UEFI.fd'} not found: pkg install edk2-bhyve "
                               f"and run kvminst", vm=self.name)
            vars_file = self.vm.dir / bhyve.VARS_FILE
            if not vars_file.is_file():
                raise NotFound(f"UEFI vars file {vars_file} not found", vm=self.name)
        grub = None
        if cfg.loader == "grub":
            grub = cfg.vmrom if cfg.vmrom.startswith("/") else firmware.grub(self.vm.root.path)
            if grub is None or not os.path.isfile(grub):
                raise NotFound(f"grub-bhyve {grub or ''} not found: pkg install grub2-bhyve and run kvminst",
                               vm=self.name)
        check_files(cfg)
        if cfg.com and not self.nmdm_ok:
            ensure_nmdm()
            self.nmdm_ok = True
        port = None
        if cfg.vnc:
            port = self.state.get("vnc_port") or ports.reserve(self.name, lambda p: self.save(vnc_port=p))
            if not self.state.get("boots"):
                self.log(f"VNC on {cfg.vnc_addr}:{port}")
        return bhyve.plan(cfg, rom=rom, grub=grub, vnc_port=port, dev_dir=str(paths.current().dev_dir))

    def launch(self, cfg, plan):
        """grub-bhyve if needed, then bhyve; returns bhyve's exit status (negative: signal)."""
        if plan.grub:
            host.write_file(self.vm.dir / bhyve.DEVICE_MAP, plan.device_map)
            res = host.run(plan.grub, check=False, capture=False)
            if res.status != 0:
                self.log(f"grub-bhyve failed (exit {res.status})", syslog.LOG_ERR)
                return None
        print(shlex.join(plan.bhyve), file=self.out, flush=True)
        proc = host.spawn_quiet(plan.bhyve)
        boots = self.state.get("boots", 0) + 1
        self.save(bhyve=proc.pid, booted=time.time(), boots=boots)
        self.log(f"launched bhyve pid {proc.pid} (boot {boots})")
        code = self.wait_bhyve(proc)
        if code < 0 and self.stop_method == "acpi":
            self.stop_method = "terminated"  # SIGTERM ended bhyve before the guest had ACPI up
        self.log(bhyve.describe(code) + f" (exit {code})" if code >= 0 else bhyve.describe(code),
                 syslog.LOG_NOTICE if code in (0, 1, 2) else syslog.LOG_CRIT)
        return code

    def wait_bhyve(self, proc):
        """Wait for bhyve, carrying out a stop request (ACPI, then forced) meanwhile."""
        phase, deadline = None, None
        while True:
            if self.stop and phase is None:
                phase, deadline = self.begin_stop(proc)
            self.in_wait = True
            try:
                timeout = None if deadline is None else max(0.0, deadline - time.time())
                return host.wait_process(proc, timeout)
            except _Wake:
                continue
            except host.Timeout:
                phase, deadline = self.escalate(proc, phase)
            finally:
                self.in_wait = False

    def begin_stop(self, proc):
        timeout = self.stop.get("timeout") or self.vm_stop_timeout()
        if self.stop.get("force"):
            return self.escalate(proc, "acpi")
        self.log(f"stopping: ACPI power button, waiting up to {timeout}s")
        self.stop_method = "acpi"
        host.send_signal(proc.pid, signal.SIGTERM)
        return "acpi", time.time() + timeout

    def escalate(self, proc, phase):
        if phase == "acpi":
            self.log("forcing the power off")
            self.stop_method = "forced"
            host.run(["bhyvectl", f"--vm={self.name}", "--force-poweroff"], check=False)
            return "forced", time.time() + FORCE_GRACE
        self.log("bhyve did not exit after the forced power-off: killing it", syslog.LOG_ERR)
        self.stop_method = "killed"
        host.send_signal(proc.pid, signal.SIGKILL)
        return "killed", None

    def vm_stop_timeout(self):
        try:
            return self.vm.config().stop_timeout
        except KvmError:
            return 60

    def hook(self, which, extra=None):
        """Run a hook; a stop request gives it HOOK_GRACE seconds, then kills its process group."""
        try:
            hooks.check_safe(self.vm)
        except KvmError as exc:
            self.log(exc.message, syslog.LOG_ERR)
            return 126
        proc = hooks.start_hook(self.vm, which, extra)
        if proc is None:
            return 0
        deadline = None
        while True:
            if self.stop and deadline is None:
                deadline = time.time() + HOOK_GRACE
            self.in_wait = True
            try:
                status = host.wait_process(proc, None if deadline is None else max(0.0, deadline - time.time()))
                if status != 0:
                    self.log(f"{which} exited {status}", syslog.LOG_WARNING)
                return status
            except _Wake:
                continue
            except host.Timeout:
                self.log(f"{which} still runs {HOOK_GRACE}s after the stop request: killing it",
                         syslog.LOG_WARNING)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.time() + 3600
            finally:
                self.in_wait = False

    def destroy_allocated(self):
        if (paths.current().vmm_dir / self.name).exists():
            host.run(["bhyvectl", f"--vm={self.name}", "--destroy"], check=False)

    def may_restart(self, cfg):
        """After a fault: restart when the VM asks for it, unless it faulted too often lately."""
        if not cfg.restart_on_fault:
            return False
        now = time.time()
        self.faults.append(now)
        while self.faults and self.faults[0] < now - cfg.restart_window:
            self.faults.popleft()
        if len(self.faults) > cfg.restart_max:
            self.log(f"{len(self.faults)} faults in {cfg.restart_window}s (RestartMax={cfg.restart_max}): "
                     f"giving up", syslog.LOG_CRIT)
            return False
        self.log(f"restarting after the fault ({len(self.faults)}/{cfg.restart_max} in {cfg.restart_window}s)")
        return True


def check_files(cfg):
    """The disk and ISO must exist before a launch."""
    if cfg.disk and not os.path.exists(cfg.disk):
        raise NotFound(f"disk {cfg.disk} not found", vm=cfg.name)
    if cfg.iso and not os.path.exists(cfg.iso):
        raise NotFound(f"ISO {cfg.iso} not found (eject it, or insert another)", vm=cfg.name)


def ensure_nmdm():
    """kldstat -qm nmdm || kldload nmdm."""
    if host.run(["kldstat", "-qm", "nmdm"], mutating=False, check=False).status != 0:
        host.run(["kldload", "nmdm"])


def dry_run(vm, out):
    """Print every command a start would run, change nothing."""
    cfg = vm.config()
    rom = firmware.uefi_code(vm.root.path) if cfg.loader == "uefi" and not cfg.vmrom.startswith("/") else cfg.vmrom
    grub = firmware.grub(vm.root.path) if cfg.loader == "grub" and not cfg.vmrom.startswith("/") else cfg.vmrom
    check_files(cfg)
    port = None
    if cfg.vnc:
        taken = ports.listening_ports() | ports.reserved_ports(vm.name)
        port = next(p for p in range(ports.FIRST, ports.LAST + 1) if p not in taken)
    plan = bhyve.plan(cfg, rom=rom or "BHYVE_UEFI.fd", grub=grub or "grub-bhyve", vnc_port=port,
                      dev_dir=str(paths.current().dev_dir))
    if (paths.current().vmm_dir / vm.name).exists():
        host.run(["bhyvectl", f"--vm={vm.name}", "--destroy"])
    if cfg.com:
        print("kldstat -qm nmdm || kldload nmdm", file=out)
    print(f"preRun    (sh: . {vm.root.path}/functions; . {vm.conf_path}; . {vm.run_path}; preRun)", file=out)
    if plan.grub:
        print(f"write {vm.dir / bhyve.DEVICE_MAP}:", file=out)
        for line in plan.device_map.splitlines():
            print(f"    {line}", file=out)
        print(shlex.join(plan.grub), file=out)
    print(shlex.join(plan.bhyve), file=out)
    print(f"bhyvectl --vm={vm.name} --destroy", file=out)
    print("postRun   (VMexit, VMreason set); loop on reboot", file=out)
