"""What every backend shares: the records a plan, a launch and an exit are, and the list of methods a
backend offers (documented in __init__.py). Backends import this module, never the package's face,
so that bhyve/ and qemu/ stay independent of each other."""

from kvm.errors import KvmError
from kvm.host.record import record

# Records, immutable and compared by value: kvm.host.record, kvm's one record style (dataclasses
# would cost status and vmlist, which import this module, about 20 ms at each start: inspect, ast).


class LaunchFailed(KvmError):
    """The loader (grub-bhyve) failed before the hypervisor could start."""


# What a plan needs beside the config: root, the install root (pinned firmware); run, where the
# VM's run files are (kvm.host.runfiles.RunFiles: qemu's sockets); vnc_port, the
# port chosen for VNC, when VNC is on; strict, a real launch (missing firmware raises, as does a
# passthru device the host has not readied for qemu; else a placeholder is shown, nothing checked).
@record(frozen=True)
class Context:
    root: object
    run: object = None
    vnc_port: object = None
    strict: bool = True

# What one launch runs: argv, the hypervisor process; loader, run to its end before argv
# (grub-bhyve), or None; files, ((path, text), ...) written before the loader runs (device.map);
# firmware, the boot ROM or loader binary in use; console, the guest's side of the serial
# console, when it has one; needs, host facilities to prepare (kernel modules); detail, what a
# backend keeps for start() beyond argv (qemu: its own plan).
@record(frozen=True)
class Plan:
    argv: list
    loader: object = None
    files: tuple = ()
    firmware: object = None
    console: object = None
    needs: tuple = ()
    detail: object = None

# How a hypervisor process ended: code, the exit status (negative: killed by that signal; None
# when it never ran); reason, reboot, poweroff, halt, triplefault, error, signal, unknown (qemu
# adds fault); text, for the log.
@record(frozen=True)
class Exit:
    code: object
    reason: str
    text: str


# every method a backend offers (documented above); a backend is a class with all of them
METHODS = ("plan", "prepare_host", "prepare_host_text", "start", "wait", "classify", "power_button",
           "force_off", "destroy", "destroy_text", "cleanup_hint", "is_allocated", "allocated",
           "is_own_process", "find_process", "console_command", "console_device", "shown",
           "accelerator", "uefi_vars", "console_socket", "firmware_warning", "firmware_here")

# every text a backend gives for what commands and files say (class attributes, console_comment(name)):
# the exit reasons its log calls crashes (crash_reasons), whether vminfo's text names the
# hypervisor and its accelerator (shows_accelerator), stop's help (power_button_text), set.conf's
# comments on Boot, VMoptions and COM (boot_comment, options_comment, options_example,
# console_comment), vmcreate's --options help and question (options_help, options_prompt), and
# run's on postRun's VMexit and VMreason (exit_status_text, reasons_text)
TEXTS = ("crash_reasons", "shows_accelerator", "power_button_text", "boot_comment", "options_help",
         "options_prompt", "options_comment", "options_example", "exit_status_text", "reasons_text",
         "console_comment")
