"""vmedit NAME: edit set.conf with $EDITOR on a copy, validated before it replaces the file."""

import argparse
import re
import sys

from kvm import vm as vmmod
from kvm.cli import common
from kvm.conf import edit
from kvm.errors import KvmError

PROG = "vmedit"


def build_parser():
    p = common.parser(PROG, "Edit the VM's set.conf: $EDITOR (else $VISUAL, else vi) runs on a private copy; "
                            "the result is validated, and on an error you are asked to edit it again. Only "
                            "a valid file replaces set.conf (atomically; the old one is kept as "
                            "set.conf.sav). A running VM uses it from its next guest reboot.", dry_run=True)
    p.add_argument("name", help="VM name")
    p.add_argument("--edit-again", action=argparse.BooleanOptionalAction, default=None,
                   help="when the edited file does not validate, run the editor again without asking "
                        "(--no-edit-again: give up at once, nothing changed); default: ask")
    return p


def edit_until_valid(vm, copy, again=None):
    """Run the editor until the copy validates; None when unchanged or the user gives up.
    again: edit an invalid result again without asking (True), give up at once (False), or ask
    (None). Without asking, an editor that leaves an invalid file as it was is given up on."""
    refused = None
    while True:
        edit.run_editor(vm, copy.path)
        text = copy.text()
        if text == copy.original:
            common.info(f"{vm.name}: no change; set.conf left as it was")
            return None
        try:
            cfg = edit.check_text(vm, text)
        except KvmError as exc:
            print(exc.line(PROG), file=sys.stderr)
            if again is None and _ask_again():
                continue
            if not again or text == refused:
                common.info(f"{vm.name}: nothing changed")
                raise GaveUp() from None
            refused = text
            continue
        for line in cfg.warnings:
            common.warn(PROG, line, vm=vm.name)
        return text


def _ask_again():
    return common.ask("edit again? [Y/n] ", "y",
                      flag="--edit-again or --no-edit-again answers it").lower().startswith("y")


class GaveUp(Exception):
    """The user did not want to fix an invalid edit."""


def body(args):
    vm = common.get_vm(args, root_user=True)
    with edit.Copy(vm) as copy:
        try:
            text = edit_until_valid(vm, copy, args.edit_again)
        except GaveUp:
            return 1
        if text is None:
            return 0
        if args.dry_run:
            print_diff(copy.original, text)
        edit.replace(vm, copy.original, text)
    print(f"{vm.name}: {'would replace' if args.dry_run else 'replaced'} set.conf "
          f"(the old one {'would be' if args.dry_run else 'is'} kept as set.conf.sav)")
    if not args.dry_run and vmmod.runtime(vm).active:
        common.info(f"{vm.name} is running: the change applies at its next guest reboot, or the next start.")
    return 0


def print_diff(old, new):
    """What a dry run would change, as a unified diff of set.conf."""
    import difflib
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), "set.conf", "set.conf (edited)",
                                     lineterm=""):
        print(re.sub(r"(VNCpassword=).*", r"\1***", line))  # a password is never printed
