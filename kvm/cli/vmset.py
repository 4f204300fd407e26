"""vmset NAME KEY=VALUE ... [-u KEY]...: change set.conf settings without an editor."""

from kvm import vm as vmmod
from kvm.cli import common, jsonout
from kvm.conf import edit
from kvm.conf.config import sh_quote
from kvm.errors import ConfigError, UsageError
from kvm.run import launch

PROG = "vmset"
SECRETS = ("VNCpassword",)   # never printed: the report shows *** instead


def build_parser():
    p = common.parser(PROG, "Set or remove set.conf settings in one edit: the whole result is validated "
                            "before anything is written, the write is atomic, the old file is kept as "
                            "set.conf.sav, and every other line (comments too) stays as it was. A running "
                            "VM uses the change from its next guest reboot.", dry_run=True, intermixed=True)
    p.add_argument("name", help="VM name")
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help="a setting and its new value")
    p.add_argument("-u", "--unset", action="append", default=[], metavar="KEY",
                   help="remove KEY's assignment (back to its default); repeatable")
    p.add_argument("--force", action="store_true",
                   help="also set or remove keys kvm does not know (your own variables for run)")
    p.add_argument("--json", action="store_true",
                   help="print what changed as a JSON object (keys, old and new values, restart_required)")
    return p


def parse_assignments(vm, words):
    """[(key, value)] from KEY=VALUE words."""
    out = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"{word!r} is not KEY=VALUE", vm=vm.name)
        out.append((key, value))
    return out


def check_args(vm, sets, unsets, force):
    """Usage errors before set.conf is read: keys, values, a key both set and removed. Returns
    the pairs to write: a size typed otherwise than bhyve takes it converted (Mem=2GB -> 2G,
    config.typed_value), each conversion said on stderr."""
    if not sets and not unsets:
        raise UsageError("nothing to change: give KEY=VALUE or -u KEY", vm=vm.name)
    edit.check_keys(vm, [k for k, _ in sets] + list(unsets), force)
    written = []
    for key, value in sets:
        edit.check_value(vm, key, value)
        if key == "CPUPin" and launch.offline_pin_text(value):
            raise ConfigError(f"set.conf: {launch.offline_pin_text(value)}", vm=vm.name)
        typed = value
        value, how = edit.typed_value(key, value)
        if how:
            common.info(f"{vm.name}: {key} '{typed}' {how}")
        written.append((key, value))
    both = sorted({k for k, _ in sets} & set(unsets))
    if both:
        raise UsageError(f"{both[0]} is both set and removed (-u)", vm=vm.name)
    return written


def shown(key, value):
    """A value as the report prints it: sh-quoted, a password masked."""
    if value is None:
        return "unset"
    return '"***"' if key in SECRETS and value else sh_quote(value)


def body(args):
    vm = common.get_vm(args, root_user=True)
    sets = check_args(vm, parse_assignments(vm, args.assignments), args.unset, args.force)
    changes = edit.set_values(vm, sets, args.unset)
    running = bool(changes or args.json) and vmmod.runtime(vm).active
    if args.json:
        jsonout.emit(changes_json(vm, changes, running, args.dry_run))
    if not changes:
        common.info(f"{vm.name}: set.conf already says so; nothing changed")
        return 0
    would = common.would(args)
    for key, old, new in changes if not args.json else ():
        what = f"unset {key}" if new is None else f"set {key}={shown(key, new)}"
        print(f"{vm.name}: {would}{what} (was {shown(key, old)})")
    if running and not args.dry_run:  # (changes made)
        common.info(f"{vm.name} is running: the change applies at its next guest reboot "
                    f"(the supervisor re-reads set.conf), or the next start.")
    return 0


def json_value(key, value):
    """A value as --json gives it: the text, null when unset, "***" for a password."""
    if value is None:
        return None
    return "***" if key in SECRETS and value else value


def changes_json(vm, changes, running, dry_run):
    """vmset --json: the keys changed (or that would be, -n), each with its old and new value, and
    whether the running VM needs a restart (a guest reboot) to use them."""
    return {"name": vm.name, "changed": [k for k, _, _ in changes],
            "changes": [{"key": k, "old": json_value(k, old), "new": json_value(k, new)} for k, old, new in changes],
            "running": running, "restart_required": running and bool(changes), "dry_run": bool(dry_run)}
