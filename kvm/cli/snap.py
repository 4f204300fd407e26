"""snap create|destroy|rollback|list|prune|auto NAME [SNAP]: the verb exactly, or its one-letter alias
(c, d, r, l as the shell kvm had them; p, a)."""

from kvm import vm as vmmod
from kvm.cli import common, jsonout
from kvm.cli.snapauto import add_args, do_auto
from kvm.errors import ConfigError, Refused, UsageError
from kvm.manage import info
from kvm.manage.destroy import check_free, destroy_dependents
from kvm.storage import snap

PROG = "snap"
# the one-letter aliases (the shell kvm's `snap c|d|r|l`, and p, a) -> the verbs; nothing else is
# taken: a verb matched by its first letter turned `snap remove web s1` into a rollback
VERBS = {"c": "create", "d": "destroy", "r": "rollback", "l": "list", "p": "prune", "a": "auto"}


def build_parser():
    # the description is printed as is; only help strings go through %-formatting
    p = common.parser(PROG, "Snapshots of a VM (its dataset and every dataset or zvol its set.conf "
                            "points at, taken together). Verbs: create NAME [SNAP] (default: a "
                            "timestamp), destroy NAME SNAP|A%B, rollback NAME [SNAP], list NAME, "
                            "prune NAME --keep N, auto NAME|--all [--keep-hourly N ...] (the scheduled "
                            "auto-YYYYmmdd-HHMM sets, pruned by the keep rules). Each verb also goes by its "
                            "first letter, as in the shell kvm: snap c myVM s1; any other word is refused.",
                      dry_run=True, intermixed=True)  # `snap r -r web s1`: NAME is optional (auto --all)
    p.add_argument("verb", help="create, destroy, rollback, list, prune or auto (or c, d, r, l, p, a)")
    p.add_argument("name", nargs="?", help="VM name (auto: or --all)")
    p.add_argument("snap", nargs="?", help="snapshot name (destroy: also a range A%%B, %%B, A%%)")
    p.add_argument("-r", dest="older", action="store_true",
                   help="rollback: allow an older snapshot, destroying the newer ones")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("-R", dest="recursive", action="store_true",
                   help="destroy: also the VMs and images cloned from the snapshot (asks first)")
    p.add_argument("-H", dest="scripted", action="store_true", help="list: no header, tab-separated")
    p.add_argument("-p", dest="parsable", action="store_true", help="list: exact numbers")
    p.add_argument("--json", action="store_true",
                   help="list: JSON; create: the snapshot made as JSON; destroy, rollback, prune: the snapshots "
                        "destroyed as JSON; any verb: an error as a JSON object")
    p.add_argument("--keep", type=int, metavar="N", help="prune: how many of the newest snapshots to keep; "
                                                        "auto --export-to: how many export files of each VM")
    add_args(p)
    return p


def body(args):
    verb = verb_of(args.verb)
    if verb == "auto":
        return do_auto(args)
    if args.all or not args.name:
        raise UsageError(f"{verb} needs one VM name" + (" (--all is for auto only)" if args.all else ""))
    vm = common.get_vm(args, root_user=verb != "list")
    return DO[verb](vm, args)


def verb_of(word):
    """The verb a word names: a verb itself or its one-letter alias, exactly; else a usage error."""
    if word in VERBS.values():
        return word
    if word in VERBS:
        return VERBS[word]
    shown = word.encode("unicode_escape").decode()
    raise UsageError(f"unknown verb '{shown}' (verbs: {', '.join(VERBS.values())}; "
                     f"or {', '.join(VERBS)})")


def do_create(vm, args):
    name = args.snap if args.snap is not None else snap.default_name()
    snap.check_snap_name(vm.name, name)
    cfg = vm.config()
    if vmmod.runtime(vm).active:
        common.warn(PROG, "the VM is running: this snapshot is crash-consistent (like pulling the plug); "
                          "stop the VM for a clean one", vm=vm.name)
    names = snap.create(vm, cfg, name)
    if args.json:
        jsonout.emit(created_json(vm, cfg, name, names, args.dry_run))
        return 0
    for full in names:
        common.said(args, full, f"would create snapshot {full}")
    return 0


def set_json(s):
    """One snapshot set as snap list --json and snap create --json give it."""
    return {"name": s.name, "used": int(s.props.get("used") or 0), "referenced": int(s.props.get("referenced") or 0),
            "creation": int(s.props.get("creation") or 0), "complete": s.complete, "missing": s.missing}


def created_json(vm, cfg, name, names, dry_run):
    """snap create --json: the set made (as snap list has it), its VM and its snapshots' full names;
    in a dry run only what it would make."""
    made = {"vm": vm.name, "name": name, "snapshots": list(names), "dry_run": bool(dry_run)}
    if dry_run:
        return made
    found = [s for s in snap.listing(snap.datasets_of(vm, cfg)).sets if s.name == name]
    return {**(set_json(found[0]) if found else {}), **made}


def do_destroy(vm, args):
    if not args.snap:
        raise UsageError("destroy needs a snapshot name or range", vm=vm.name)
    with snap.hold(vm, "snap destroy", running_ok=True):
        cfg = vm.config()
        if args.recursive:
            users = snap.clones_of_sets(vm, snap.select(vm, snap.listing(snap.datasets_of(vm, cfg)), args.snap))
            if users:
                check_free(vm, users)
                common.info(f"This destroys the clones too: {', '.join(users)}.")
                if not common.confirm("Go on", args.yes or args.dry_run):
                    common.info("Nothing done.")
                    return 1
        names = snap.destroy(vm, cfg, args.snap, destroy_dependents if args.recursive else None)
    if args.json:
        jsonout.emit({"vm": vm.name, "destroyed": list(names), "dry_run": bool(args.dry_run)})
        return 0
    for name in names:
        common.said(args, f"destroyed {vm.name}@{name}", f"would destroy {vm.name}@{name}")
    return 0


def do_rollback(vm, args):
    # the running check and the rollback under the VM's lock: a start cannot slip in between
    with snap.hold(vm, "snap rollback"):
        if vmmod.runtime(vm).active:
            raise Refused("is running: stop it before rolling back", vm=vm.name)
        have, target, newer = snap.rollback_plan(vm, vm.config(), args.snap, args.older)
        if newer:
            common.info(f"Rolling back to '{target.name}' destroys the newer snapshots: "
                        f"{', '.join(s.name for s in newer)}")
            if not common.confirm("Go on", args.yes or args.dry_run):
                common.info("Nothing done.")
                return 1
        snap.rollback(vm, have, target, newer)
    if args.json:
        jsonout.emit({"vm": vm.name, "name": target.name, "destroyed": [s.name for s in newer],
                      "dry_run": bool(args.dry_run)})
        return 0
    common.said(args, f"{vm.name}: rolled back to {target.name}", f"{vm.name}: would roll back to {target.name}")
    return 0


def do_list(vm, args):
    try:
        dsets = snap.datasets_of(vm, vm.config())
    except ConfigError as exc:  # listing must not need a valid set.conf: show the VM dataset's
        common.warn(PROG, f"{exc.message}: listing the VM dataset only", vm=vm.name)
        dsets = [vm.dataset()]
    have = snap.listing(dsets)
    for s in have.sets:
        if not s.complete:
            common.warn(PROG, f"snapshot '{s.name}' is incomplete (missing on {', '.join(s.missing)}): "
                              f"snap c {vm.name} {s.name} takes it again, snap d {vm.name} {s.name} "
                              f"removes it", vm=vm.name)
    if args.json:
        jsonout.emit([set_json(s) for s in have.sets])
        return 0
    size = (lambda v: str(int(v or 0))) if args.parsable else (lambda v: info.human_size(int(v or 0)))
    table = [(s.name, size(s.props.get("used")), size(s.props.get("referenced")),
              snap.fmt_when(s.props.get("creation") or 0, args.parsable)) for s in have.sets]
    common.print_table(("NAME", "USED", "REFER", "CREATION"), table, args.scripted)
    return 0


def do_prune(vm, args):
    if args.keep is None or args.keep < 0:
        raise UsageError("prune needs --keep N (N >= 0)", vm=vm.name)
    with snap.hold(vm, "snap prune", running_ok=True):
        _, doomed = snap.prune_plan(vm, vm.config(), args.keep)
        said = {"vm": vm.name, "destroyed": [s.name for s in doomed], "kept": args.keep, "dry_run": bool(args.dry_run)}
        if not doomed:
            common.info(f"{vm.name}: nothing to prune (keeping {args.keep})")
            return jsonout.emit(said) if args.json else 0
        for s in doomed if not args.json else ():
            print(f"would destroy {vm.name}@{s.name}" if args.dry_run else f"destroy {vm.name}@{s.name}")
        if args.dry_run:
            return jsonout.emit(said) if args.json else 0
        if not common.confirm(f"Destroy these {len(doomed)} snapshots", args.yes):
            common.info("Nothing done.")
            return 1
        snap.destroy_sets(vm, doomed)
    return jsonout.emit(said) if args.json else 0


DO = {"create": do_create, "destroy": do_destroy, "rollback": do_rollback, "list": do_list, "prune": do_prune}
