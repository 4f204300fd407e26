"""The per-VM loop behind `start`: lock, hooks, launch, classify the exit, clean up, signals.

Per launch: re-read set.conf -> preRun -> the hypervisor's plan (loader, then the VM process)
-> classify its exit -> destroy what stays allocated -> postRun; then loop on a guest reboot,
end otherwise. SIGTERM/SIGINT/SIGHUP stop the guest gracefully (power.sequence: ACPI power
button, then a forced power-off after the timeout), run postRun, and exit. The hypervisor's
processes run in sessions of their own, so a terminal's Ctrl-C reaches only the supervisor.
Everything the supervisor says goes through `write`, a callback the caller gives (write_line, or
the foreground start's, which warns first). A start -b runs it detached through kvm/run/detached.py.
"""

import collections
import os
import signal
import syslog
import time

from kvm import host, net, platform
from kvm import vm as vmmod
from kvm.conf import edit, hooks
from kvm.errors import KvmError, NothingToDo, Refused, StateError
from kvm.host import lock as lockmod
from kvm.host import runfiles
from kvm.host.files import remove_file
from kvm.hypervisor import Exit, LaunchFailed
from kvm.hypervisor import current as hypervisor
from kvm.run import launch as launchmod
from kvm.run import ports, power, swtpm
from kvm.run.power import HOOK_GRACE

EXIT_STATUS = {"poweroff": 0, "halt": 0, "stopped": 0, "triplefault": 3, "fault": 3, "error": 4, "unknown": 5,
               "signal": 5}
HOOK_REFUSED = 126       # a hook not run for safety counts as sh's "found but cannot execute"
KILLED_HOOK_WAIT = 3600  # after SIGKILL the hook's group must end; wait for it without a real limit
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def write_line(line):
    """The supervisor's output: stdout (NAME.log when detached). A line that cannot be written (the
    log on a full pool) is dropped: syslog has it, and the VM must not die of it."""
    try:
        print(line, flush=True)
    except OSError:
        pass


class _Wake(Exception):
    """Raised by the signal handler to break a blocking wait."""


def acquire_lock(vm, inherited_fd=None):
    """The VM's exclusive lock (held for the supervisor's life), or StateError naming the holder.
    With inherited_fd: the lock `start -b` took and handed over (the same open file, so the
    flock is already ours); refused unless it is the VM's lock file."""
    name, path = vm.name, vm.run.lock
    vm.run.make_folder()
    if inherited_fd is not None:
        got = lockmod.adopt(path, inherited_fd, f"{os.getpid()}\n")
        if got is None:
            raise StateError(f"descriptor {inherited_fd} is not the lock {path} held for it", vm=name)
        return got
    got = lockmod.try_acquire(path, f"{os.getpid()}\n")
    if got is None:
        found = lockmod.holder(path) or (0, "")
        if found[1]:
            raise Refused(f"is busy: {lockmod.describe_holder(found)} holds {path}; try again when it "
                             f"is done", vm=name)
        raise NothingToDo(f"already running ({lockmod.describe_holder(found)} holds {path})", vm=name,
                          hint=f"stop {name} first to start it again")
    return got


class Supervisor:
    """Runs one VM until it powers off, is stopped, or fails."""

    def __init__(self, vm, write, lock=None):
        self.vm = vm
        self.name = vm.name
        self.write = write        # takes one line of output (the CLI prints it)
        self.hv = hypervisor()
        self.stop = None          # None, or {"timeout": s, "force": bool} once a stop is requested
        self.in_wait = False
        self.state = {}
        self.faults = collections.deque()
        self.host_ready = False
        self.stop_method = None
        self.lock = lock          # the VM's lock when the caller took it already
        self.nics_attached = False
        self.limited = None       # (hypervisor pid, limits) while Limits are applied

    # ------------------------------------------------------------------ output
    def log(self, message, level=syslog.LOG_NOTICE):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if level <= syslog.LOG_ERR:  # the last error, for `start -b` (kept with the state, not the log)
            self.state.update(error=message, error_pid=os.getpid())
        self.write(f"{stamp} {self.name}: {message}")
        syslog.syslog(level, f"{self.name}: {message}")

    def save(self, **changes):
        self.state.update(changes)
        vmmod.write_state(self.vm, self.state)

    # ----------------------------------------------------------------- signals
    def on_signal(self, signum, frame):
        req = power.read_request(self.vm)
        if self.stop is None:
            self.stop = {"timeout": req.get("timeout"), "force": bool(req.get("force"))}
        elif signum == signal.SIGINT or req.get("force"):
            self.stop["force"] = True  # a second Ctrl-C (or stop -f) forces the power-off
        if self.in_wait:
            raise _Wake()

    # -------------------------------------------------------------------- main
    def run(self):
        """Supervise until the end; returns the exit status."""
        syslog.openlog("kvm", syslog.LOG_PID, syslog.LOG_DAEMON)
        if self.lock is None:
            self.lock = acquire_lock(self.vm)
        try:
            rt = vmmod.runtime(self.vm)
            vmmod.check_not_running_elsewhere(self.vm, rt)  # bhyve: another root's VM of this name runs
            if rt.bhyve:
                raise Refused(f"{self.hv.name} pid {rt.bhyve} still runs this VM without a supervisor: "
                                 f"`stop {self.name}` powers it off", vm=self.name)
            power.clear_request(self.vm)
            # root: whose VM this is (for the legacy run dir of earlier versions, shared by all roots)
            self.state = {"supervisor": os.getpid(), "started": time.time(), "bhyve": 0, "boots": 0,
                          "root": str(self.vm.root.path)}
            self.save()
            for sig in STOP_SIGNALS:
                signal.signal(sig, self.on_signal)
            self.drop_secrets(leftover=True)   # a killed supervisor's (or an earlier version's)
            self.hv.destroy(self.vm.run)
            return self.loop()
        except KvmError as exc:
            # kept in the state file (the run dir), which a full pool does not stop: `start -b` reads it
            self.state.update(error=exc.message, error_pid=os.getpid())
            raise
        finally:
            self.finish()

    def finish(self):
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        power.clear_request(self.vm)
        self.detach_nics()
        if "started" in self.state:
            self.drop_secrets()
            self.save(supervisor=0, bhyve=0, vnc_port=0, ended=time.time(), stop_method=self.stop_method)
        else:  # refused before taking over (an orphan runs): leave its record, add only why
            self.state = {**vmmod.read_state(self.vm), **self.state}
            self.save()
        self.lock.release()

    def loop(self):
        while True:
            if self.stop:
                self.log("stop requested before the launch: not starting")
                return 0
            cfg = self.load_config()
            self.attach_nics(cfg)
            plan = self.prepare(cfg)
            refused = self.pre_run()
            if refused is not None:
                return refused
            if not self.lock_kept():
                return 1
            ended = self.launch(plan, cfg)
            self.hv.destroy(self.vm.run)
            self.save(bhyve=0, last_exit=ended.reason, last_code=ended.code)
            self.hook("postRun", {"VMexit": "" if ended.code is None else str(ended.code),
                                  "VMreason": ended.reason})
            if self.stop:
                self.log(f"stopped ({self.stop_method or 'shut down'})")
                return 0
            if ended.reason == "reboot":
                continue
            if ended.reason in ("poweroff", "halt"):
                return 0
            if not self.may_restart(cfg):
                return EXIT_STATUS.get(ended.reason, 5)

    def attach_nics(self, cfg):
        """Once per supervisor: the NICs set.conf puts on switches (Switch): each switch brought up
        when down, the tap made and put on it; the taps made are kept in the state, removed at the end."""
        if self.nics_attached or not cfg.nics:
            return
        self.nics_attached = True
        taps = net.attach(self.vm.root, cfg.nics, self.name)
        self.save(taps=taps)
        for nic in cfg.nics:
            self.log(f"NIC {nic.tap} on switch {nic.switch}" + (f" (VLAN {nic.vlan})" if nic.vlan else ""))

    def detach_nics(self):
        taps = self.state.get("taps") or []
        if taps:
            try:
                net.detach(taps)
            except KvmError as exc:
                self.log(f"cannot remove taps {' '.join(taps)}: {exc.message}", syslog.LOG_WARNING)
            self.state["taps"] = []

    def pre_run(self):
        """preRun; None to go on, else (after postRun) the exit status: it failed, or a stop came."""
        status = self.hook("preRun")
        if status == 0 and not self.stop:
            return None
        why = f"preRun failed (exit {status})" if status else "stop requested during preRun"
        self.log(f"{why}: not launching {self.hv.name}", syslog.LOG_ERR if status else syslog.LOG_NOTICE)
        self.hook("postRun", {"VMexit": "", "VMreason": "prerun-failed" if status else "stopped"})
        return 1 if status else 0

    def lock_kept(self):
        """Before each launch: is the lock file still ours? Someone may have removed it (or the whole
        run dir) meanwhile, which would let a second start in: take it again, or give way."""
        if not self.lock.lost():
            return True
        again = lockmod.try_acquire(self.lock.path, f"{os.getpid()}\n", tries=1)
        if again is None:
            found = lockmod.holder(self.lock.path) or (0, "")
            self.log(f"lock file {self.lock.path} was removed and {lockmod.describe_holder(found)} holds a new "
                     f"one: not launching a second {self.hv.name}", syslog.LOG_ERR)
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
            cfg = self.vm.config(evaluate=True)
        except KvmError as exc:
            self.log(f"cannot launch: {exc.message}", syslog.LOG_ERR)
            raise
        for path in edit.tighten_secrets(self.vm, cfg):  # a password written by hand, readable by all
            self.log(f"{path.name} holds a VNC password: made it 0640", syslog.LOG_WARNING)
        return cfg

    def prepare(self, cfg):
        """Check files, prepare the host, choose the VNC port; the launch plan."""
        for line in launchmod.check_files(cfg):  # a refusal is the start's one error line
            self.log(f"warning: {line}", syslog.LOG_WARNING)
        port = None
        if cfg.vnc:
            port = self.state.get("vnc_port") or ports.reserve(self.vm, lambda p: self.save(vnc_port=p))
        plan = launchmod.plan(self.vm, cfg, vnc_port=port, hv=self.hv)
        if plan.needs and not self.host_ready:
            self.hv.prepare_host(plan)
            self.host_ready = True
        if cfg.vnc and not self.state.get("boots"):
            self.log(f"VNC on {cfg.vnc_addr}:{port}")
        return plan

    def launch(self, plan, cfg):
        """swtpm (TPM=swtpm), the loader if any, then the VM's process; how it ended (an Exit).
        swtpm is stopped once the hypervisor ended, whatever happened."""
        tpm = None
        if cfg.tpm and cfg.tpm.kind == "swtpm":
            tpm = swtpm.Swtpm(self.vm, self.hv)
            try:
                self.log(f"swtpm pid {tpm.start()} (TPM state in {swtpm.state_dir(self.vm)})")
            except KvmError as exc:
                tpm.stop()
                self.log(exc.message, syslog.LOG_ERR)
                return Exit(code=None, reason="error", text=exc.message)
        try:
            return self.launch_hypervisor(plan, cfg)
        finally:
            self.drop_secrets()   # read by the hypervisor at its start; written again before the next
            if tpm is not None:
                tpm.stop()

    def drop_secrets(self, leftover=False):
        """Remove the launch's file of secrets (bhyve's -k file with the VNC password) once the
        hypervisor ended: a password must not outlive the run on disk. leftover: at the start, also
        what a killed supervisor left, in the legacy place too (RUN_DIR/NAME.bhyve.conf) unless an
        earlier version's supervisor holds that place (another root's VM of this name)."""
        paths_ = [runfiles.secrets_file(self.vm.run)]
        old = runfiles.legacy(self.name)
        if leftover and old != self.vm.run and lockmod.holder(old.lock) is None:
            paths_.append(runfiles.secrets_file(old))
        for path in paths_:
            try:
                if os.path.lexists(path):
                    remove_file(path)
                    if leftover:
                        self.log(f"removed {path}, left by an earlier run (it holds the VNC password)")
            except OSError as exc:
                self.log(f"cannot remove {path} (it holds the VNC password): {exc.strerror}", syslog.LOG_ERR)

    def launch_hypervisor(self, plan, cfg):
        try:
            proc = self.hv.start(plan, announce=self.write, ready=self.ready(cfg))
        except LaunchFailed as exc:
            self.log(exc.message, syslog.LOG_ERR)
            return Exit(code=None, reason="error", text=exc.message)
        boots = self.state.get("boots", 0) + 1
        pinned = getattr(proc, "pinned", None) or {}   # qemu: {vcpu: thread id} (bhyve pins its own)
        self.save(bhyve=proc.pid, booted=time.time(), boots=boots,
                  vcpu_threads={str(v): t for v, t in pinned.items()})
        self.log(f"launched {self.hv.name} pid {proc.pid} (boot {boots})")
        try:
            ended = self.wait_vm(proc)
        finally:
            self.unlimit()
        if ended.code is not None and ended.code < 0 and self.stop_method == "acpi":
            self.stop_method = "terminated"  # SIGTERM ended bhyve before the guest had ACPI up
        self.log(ended.text, syslog.LOG_NOTICE if ended.reason in ("reboot", "poweroff", "halt")
                 else syslog.LOG_CRIT)
        return ended

    def limits_key(self):
        """The VM's name in host-wide places (its cgroup): ROOT_ID.NAME, unique on the host."""
        folder = self.vm.run.root_folder
        return f"{folder.name}.{self.name}" if folder is not None else self.name

    def ready(self, cfg):
        """What runs on the hypervisor's pid before its guest runs: the host's limits (Limits)."""
        if not cfg.limits:
            return None

        def apply(pid):
            for line in platform.current().apply_limits(self.name, self.limits_key(), pid, cfg.limits):
                self.log(f"limits: {line}")
            self.limited = (pid, cfg.limits)
        return apply

    def unlimit(self):
        """The limits undone once the hypervisor ended (its cgroup removed)."""
        if self.limited:
            pid, limits = self.limited
            self.limited = None
            platform.current().remove_limits(self.name, self.limits_key(), pid, limits)

    def wait_vm(self, proc):
        """Wait for the VM's process, carrying out a stop request (power.sequence) meanwhile."""
        steps, deadline = None, None
        while True:
            if self.stop and steps is None:
                steps = power.sequence(self.hv, self.vm.run, proc.pid,
                                       self.stop.get("timeout") or power.vm_timeout(self.vm, fresh=True),
                                       self.stop.get("force"), agent=power.vm_agent(self.vm, fresh=True))
                deadline = self.next_step(steps)
            self.in_wait = True
            try:
                timeout = None if deadline is None else max(0.0, deadline - time.time())
                return self.hv.classify(self.hv.wait(proc, timeout))
            except _Wake:
                continue
            except host.Timeout:
                deadline = self.next_step(steps)
            finally:
                self.in_wait = False

    def next_step(self, steps):
        """Take the stop's next step; the time to wait for the exit after it (None: for ever)."""
        try:
            self.stop_method, seconds, said = next(steps)
        except StopIteration:
            return None
        self.log(said, syslog.LOG_ERR if self.stop_method == "killed" else syslog.LOG_NOTICE)
        return time.time() + seconds

    def hook(self, which, extra=None):
        """Run a hook; a stop request gives it HOOK_GRACE seconds, then kills its process group."""
        try:
            hooks.check_safe(self.vm)
        except KvmError as exc:
            self.log(exc.message, syslog.LOG_ERR)
            return HOOK_REFUSED
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
                host.kill_group(proc.pid)
                deadline = time.time() + KILLED_HOOK_WAIT
            finally:
                self.in_wait = False

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
