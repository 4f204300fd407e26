"""swtpm per VM, under the supervisor: started before each launch of the hypervisor, stopped
after it ends (TPM="swtpm", issue 22).

Its state lives in the VM's dataset, VM_FOLDER/tpm (0700, root's), so a snapshot, a rollback, a
vmsend and a vmclone carry it with the disk (vmclone then empties the clone's: a fresh TPM, as a
clone gets a fresh UUID and MAC). swtpm makes the state on its first start. Its socket, pid file
and log are the VM's run files (runfiles.helper_file). The channel is the hypervisor's: qemu
talks to swtpm's control socket (`emulator` backend), bhyve to its data socket (-l tpm,swtpm).
swtpm runs with --terminate: it ends when the hypervisor closes its connection, and is made to
end (SIGTERM, then SIGKILL) if it did not.
"""

import os
import shutil
import signal
import stat
import time

from kvm import host, platform
from kvm.conf.guestconf import TPM_DIR, TPM_DIR_MODE
from kvm.errors import ConfigError, NotFound, PermissionDenied
from kvm.host.runfiles import TPM_LOG, TPM_PID, TPM_SOCKET, helper_file

BINARY = "swtpm"
READY_WAIT = 10     # seconds for swtpm to make its socket
END_WAIT = 5        # seconds for swtpm to end after the hypervisor (then SIGTERM, then SIGKILL)
POLL = 0.05


def state_dir(vm):
    return vm.dir / TPM_DIR


def check_state_dir(vm):
    """VM_FOLDER/tpm made 0700 when missing; refused when it is a link, no folder, or someone
    else's (its keys would be another user's to read or replace); made 0700 when it is looser."""
    folder = state_dir(vm)
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        host.make_dirs(folder, mode=TPM_DIR_MODE)
        return folder
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionDenied(f"TPM state folder {folder} is not a folder (a link?): refusing it "
                               f"(remove it; swtpm makes a new TPM there at the next start)", vm=vm.name)
    if st.st_uid != os.geteuid():
        raise PermissionDenied(f"TPM state folder {folder} is owned by uid {st.st_uid}, not by uid {os.geteuid()}: "
                               f"refusing to use its keys (chown -R {os.geteuid()} {folder})", vm=vm.name)
    if stat.S_IMODE(st.st_mode) != TPM_DIR_MODE:
        host.tighten_folder(folder, TPM_DIR_MODE)
    return folder


def find_binary(vm):
    path = shutil.which(BINARY)
    if path is None:
        install = platform.current().install_command(["swtpm", "swtpm-tools"]
                                                     if platform.current().name == "linux" else ["swtpm"])
        raise NotFound(f"TPM=swtpm but swtpm is not installed: {install}", vm=vm.name)
    return path


def argv(vm, channel, binary=BINARY):
    """swtpm's command line: TPM 2.0, its state in VM_FOLDER/tpm, `channel` (the hypervisor's
    tpm_channel: --ctrl or --server on the socket), pid file and log in the run folder."""
    run = vm.run
    return [binary, "socket", "--tpm2", "--tpmstate", f"dir={state_dir(vm)},mode=0600", *channel,
            "--pid", f"file={helper_file(run, TPM_PID)}", "--log", f"file={helper_file(run, TPM_LOG)},level=1",
            "--terminate"]


class Swtpm:
    """One swtpm for one launch."""

    def __init__(self, vm, hv):
        self.vm, self.hv, self.proc = vm, hv, None
        self.socket = helper_file(vm.run, TPM_SOCKET)

    def start(self):
        """Start swtpm and wait for its socket; LaunchFailed-worthy problems raise KvmError."""
        binary = find_binary(self.vm)
        check_state_dir(self.vm)
        self.remove_socket()
        cmd = argv(self.vm, self.hv.tpm_channel(str(self.socket)), binary)
        self.proc = host.spawn_quiet(cmd)
        end = time.monotonic() + READY_WAIT
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise ConfigError(f"swtpm exited {self.proc.returncode} before making its socket "
                                  f"(see {helper_file(self.vm.run, TPM_LOG)})", vm=self.vm.name)
            if time.monotonic() > end:
                self.stop()
                raise ConfigError(f"swtpm made no socket {self.socket} within {READY_WAIT}s", vm=self.vm.name)
            time.sleep(POLL)
        return self.proc.pid

    def stop(self):
        """After the hypervisor ended: swtpm ends by itself (--terminate); else SIGTERM, SIGKILL."""
        if self.proc is not None:
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    host.send_signal(self.proc.pid, sig)
                try:
                    host.wait_process(self.proc, END_WAIT)
                    break
                except host.Timeout:
                    continue
            self.proc = None
        self.remove_socket()
        for kind in (TPM_PID,):
            path = helper_file(self.vm.run, kind)
            if os.path.lexists(path):
                host.remove_file(path)

    def remove_socket(self):
        if os.path.lexists(self.socket):
            host.remove_file(self.socket)


def fresh_identity(folder):
    """vmclone: the clone's TPM state removed (its own TPM is made at its first start), the
    folder kept, 0700."""
    if not os.path.isdir(folder) or os.path.islink(folder):
        return
    for entry in os.listdir(folder):
        host.remove_file(os.path.join(folder, entry))
