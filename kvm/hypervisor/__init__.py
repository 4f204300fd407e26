"""The hypervisor interface: everything the supervisor, stop, status/vmlist and vminfo ask of bhyve
(and later of another backend) goes through one object, `current()`.

Methods about one VM take `run`, where its run files are (kvm.host.runfiles.RunFiles: its name,
and the folder RUN_DIR/ROOT_ID/NAME/ of its install root). `host_wide_names` says whether the
hypervisor's VM names are the host's (bhyve: /dev/vmm/NAME, the nmdm console; one VM of a name per
host, whatever its root) or per root (qemu: its sockets are in the run folder).

`plan(cfg, ctx) -> Plan` builds what one launch runs from a validated VmConfig and a Context (the
install root for firmware, the VM's run files, the VNC port chosen, strict: whether missing firmware
is an error, as at a real launch, or shown as a placeholder, as in a dry run or vminfo). Pure apart from finding firmware
and, when strict, checking the host for the plan (qemu: passthru devices bound to vfio-pci).

`prepare_host(plan)` readies the host once per supervisor for what the plan needs (bhyve: load nmdm
for a serial console); `prepare_host_text(plan)` is what the dry run prints for it.

`start(plan, announce=None) -> process` writes the plan's files, runs its loader to the end (bhyve:
grub-bhyve), calls announce(line) with the command line as shown (see `shown`) and starts the
hypervisor process in its own session, so a terminal's Ctrl-C reaches only the supervisor; it
returns a process object (`pid`), or raises LaunchFailed when the loader failed.

`wait(process, timeout) -> observed` waits for the process (host.Timeout when the time runs out) and
returns what the backend observed of its end (bhyve: the exit status).

`classify(observed) -> Exit` turns that into an Exit: code (for the postRun hook's VMexit), reason
(reboot, poweroff, halt, triplefault, error, signal, unknown) and a human text.

`power_button(run, pid)` presses the guest's ACPI power button (bhyve: SIGTERM to bhyve);
`force_off(run, pid)` powers it off at once (bhyve: bhyvectl --force-poweroff). Both work on a
process the supervisor did not start (an orphan), knowing only the VM's run files and the pid.

`destroy(run)` frees what the hypervisor keeps allocated for a VM after its process ended (bhyve:
/dev/vmm/NAME through bhyvectl --destroy); `destroy_text(run)` is its dry-run line and
`cleanup_hint(run)` the command a user is told to run for a VM left allocated.
`is_allocated(run)` and `allocated(root_folder)` (every allocated name of the root's, or with
host-wide names of the host's, in one listing) read that state.

`is_own_process(args, run)` tells whether a process's arguments are this hypervisor running that
VM, exactly (bhyve: its process title `bhyve: NAME`; qemu: `-name` and its QMP socket);
`find_process(run)` scans for one.

`console_command(run) -> argv` attaches a terminal to the VM's serial console (bhyve: cu on the
nmdm B side); `console_device(run)` is the guest's side, shown by vminfo.

`accelerator()` names what runs the guest (bhyve: vmm; qemu: kvm or tcg, see accel.py).
`uefi_vars(root) -> (template, file name, hint)` is the UEFI vars file vmcreate copies into a
new VM, and what to say when there is none. `console_socket(run)` is the unix socket the
`console` command relays a terminal to (qemu), or None when console_command is exec'd (bhyve).

`shown(argv) -> str` is a command line as it may be printed or logged: secrets (a VNC password)
masked. The real process still gets them.

The qemu backend (qemu/backend.py, argv from the pure qemu/argv.py) follows the same contract: its
`plan` gives qemu's argv (`-name NAME,process=qemu:NAME`, QMP and serial sockets in the VM's run
folder)
with its own plan as `detail`; `start` spawns qemu and keeps a QMP session; `wait` returns
(the last SHUTDOWN reason, the exit status), which `classify` maps to the same reasons (plus
fault: a guest panic); `power_button`/`force_off` send system_powerdown/quit on that session,
or on a new one for an orphan; `destroy` removes the sockets left behind.
"""

import os
import shlex

from kvm.errors import KvmError

ENV = "KVM_HYPERVISOR"  # overrides the host's own backend (bhyve on FreeBSD, qemu on Linux)

from kvm.hypervisor.base import METHODS, Context, Exit, LaunchFailed, Plan  # noqa: F401


def default_name(system=None):
    """bhyve on FreeBSD, qemu on Linux (and anything else that is not FreeBSD)."""
    system = system or os.uname().sysname
    return "bhyve" if system == "FreeBSD" else "qemu"


def current():
    """The backend in use: KVM_HYPERVISOR=bhyve|qemu, else the host's own (default_name)."""
    name = os.environ.get(ENV) or default_name()
    if name == "bhyve":
        from kvm.hypervisor.bhyve import backend as bhyve
        return bhyve.Bhyve()
    if name == "qemu":
        from kvm.hypervisor.qemu import backend as qemu_backend
        return qemu_backend.Qemu()
    raise KvmError(f"{ENV}={shlex.quote(name)}: unknown hypervisor (known: bhyve, qemu)")


def firmware_names():
    """Every file name any backend pins into ROOT/firmware (what kvminst --uninstall may remove)."""
    from kvm.hypervisor.bhyve.backend import Bhyve
    from kvm.hypervisor.qemu.backend import Qemu
    return [name for backend in (Bhyve, Qemu) for name, _, _ in backend.firmware_files]
