"""stop [-f] [-t SECONDS] NAME: power the VM off, gracefully by default."""

import sys

from kvm import vm as vmmod
from kvm.cli import common, jsonout
from kvm.errors import NothingToDo, UsageError
from kvm.run.power import MAX_TIMEOUT, stop_vm, vm_timeout

PROG = "stop"
HOW = {"agent": "shut down by the guest (asked through the guest agent)",
       "acpi": "shut down by the guest (ACPI power button)",
       "forced": "forced off (the guest did not shut down in time)",
       "killed": "killed (bhyve ignored the forced power-off)",
       "terminated": "terminated (bhyve ended on SIGTERM before the guest had ACPI up)",
       "cleaned": "was not running; its leftover allocation was destroyed",
       "stopped": "stopped", "requested": "stop requested"}
# stop --json's "how": what stopped the guest, in the four words a caller branches on
HOW_WORD = {"agent": "agent", "acpi": "acpi", "terminated": "acpi", "stopped": "acpi", "requested": "acpi",
            "forced": "force", "killed": "force", "cleaned": "none"}
WOULD = {"acpi": "stop it: the ACPI power button, then the power forced off after {seconds} s",
         "forced": "force the power off (-f)",
         "cleaned": "destroy its leftover allocation (it is not running)"}


def build_parser():
    button = common.hypervisor_text("power_button_text", "the hypervisor's")
    p = common.parser(PROG, f"Stop the VM: press the ACPI power button ({button}), wait for the "
                            "guest up to the timeout, then force the power off. postRun runs. Exit 0 "
                            "once the VM is off.", dry_run=True)
    p.add_argument("-f", "--force", action="store_true", help="force the power off at once")
    p.add_argument("-t", "--timeout", type=int, metavar="SECONDS",
                   help="how long to wait for the guest (default: StopTimeout in set.conf, else 60)")
    p.add_argument("--json", action="store_true",
                   help="print the result as a JSON object; a VM not running is \"changed\": false with "
                        "exit 0 (kvm(8) JSON OUTPUT)")
    p.add_argument("name", help="VM name")
    return p


def body(args):
    vmmod.check_name(args.name)  # before the -t check: a bad name is the first thing to say
    if args.timeout is not None and not 1 <= args.timeout <= MAX_TIMEOUT:
        raise UsageError(f"timeout {args.timeout} is out of range (1..{MAX_TIMEOUT} seconds)", vm=args.name)
    vm = common.get_vm(args, root_user=True)
    was = vmmod.runtime(vm).state
    # on a terminal, say what it waits for (up to the timeout: a minute by default)
    try:
        how = stop_vm(vm, timeout=args.timeout, force=args.force,
                      progress=common.info if common.is_terminal(sys.stderr) else None)
    except NothingToDo:
        if not args.json:
            raise
        # --json: a VM not running is a result, not an error (the text form exits 9)
        jsonout.emit(stopped_json(vm, was, "none", None, changed=False, dry_run=args.dry_run))
        return 0
    if args.json:
        word = "force" if args.force and how != "cleaned" else HOW_WORD.get(how, "acpi")
        jsonout.emit(stopped_json(vm, was, word, how, changed=True, dry_run=args.dry_run))
        return 0
    if args.dry_run:
        seconds = args.timeout if args.timeout is not None else vm_timeout(vm)
        print(f"{vm.name}: would " + WOULD["cleaned" if how == "cleaned" else "forced" if args.force else "acpi"]
              .format(seconds=seconds))
        return 0
    said = "forced off (-f)" if how == "forced" and args.force else HOW.get(how, how)
    print(f"{vm.name}: {said}")
    return 0


def stopped_json(vm, was, how, detail, changed, dry_run):
    """stop --json's object: the state before, how it was stopped (agent, acpi, force, none) and
    the supervisor's own word for it (detail: acpi, forced, killed, terminated, cleaned...)."""
    return {"vm": vm.name, "was": was, "how": how, "detail": detail, "changed": changed,
            "dry_run": bool(dry_run)}
