"""switch create|list|info|set|add|remove|destroy|up|down|check: the networks VMs' NICs are put on
(ROOT/switches/NAME.conf; kvm(8) SWITCHES)."""

import sys

from kvm import net
from kvm.cli import common, jsonout
from kvm.conf import switchconf
from kvm.errors import ConfigError, KvmError, StateError, UsageError

PROG = "switch"
VERBS = ("create", "list", "info", "set", "add", "remove", "destroy", "up", "down", "check")
USAGE = {
    "create": "NAME [--uplink IF]... [--vlan N] [--mtu N] [--address CIDR] [--nat [--out IF]] "
              "[--dhcp FIRST-LAST] [--private] [--manual BRIDGE]",
    "list": "[-H] [--json]", "info": "NAME [--json]", "set": "NAME KEY=VALUE...", "add": "NAME IF",
    "remove": "NAME IF", "destroy": "NAME", "up": "NAME... | --all", "down": "NAME... | --all",
    "check": "[NAME...]",
}


def build_parser():
    p = common.parser(PROG, "Switches: bridges kvm makes and keeps for VMs' NICs (vmcreate --switch), with "
                            "uplinks, VLANs, an address, NAT behind the host and kvm's own DHCP server. "
                            "create NAME [options] writes ROOT/switches/NAME.conf and brings it up; up/down "
                            "make the host match it (idempotent); check says what on the host defeats it.",
                      dry_run=True, intermixed=True)
    p.add_argument("verb", choices=VERBS)
    p.add_argument("args", nargs="*", help="the switch NAME, then: set KEY=VALUE...; add/remove IF")
    p.add_argument("--uplink", action="append", default=[], metavar="IF",
                   help="create: a host interface made a member (repeat for several)")
    p.add_argument("--vlan", metavar="N", help="create: the uplinks carry the switch tagged N (1-4094)")
    p.add_argument("--mtu", metavar="N", help="create: the MTU of the bridge and its members")
    p.add_argument("--address", metavar="CIDR", help="create: the bridge's address, the guests' gateway "
                                                     "(10.0.5.1/24)")
    p.add_argument("--nat", action="store_true", help="create: NAT of the address's subnet behind the host")
    p.add_argument("--out", metavar="IF", help="create: the interface NAT leaves by (default: the default "
                                               "route's)")
    p.add_argument("--dhcp", metavar="FIRST-LAST", help="create: kvm's dnsmasq hands out these addresses")
    p.add_argument("--private", action="store_true", help="create: the VMs' NICs cannot reach each other")
    p.add_argument("--manual", metavar="BRIDGE", help="create: put NICs on this existing bridge; kvm neither "
                                                      "makes nor removes it")
    p.add_argument("--all", action="store_true", help="up, down: every switch of the root")
    p.add_argument("-H", dest="scripted", action="store_true", help="list: no header, tab-separated")
    p.add_argument("--json", action="store_true", help="list, info, create: JSON")
    return p


def _want(args, low, high=None):
    n = len(args.args)
    if n < low or (high is not None and n > high):
        raise UsageError(f"usage: switch {args.verb} {USAGE[args.verb]}")
    return args.args


def _no_create_options(args):
    given = [flag for flag, value in (("--uplink", args.uplink), ("--vlan", args.vlan), ("--mtu", args.mtu),
                                      ("--address", args.address), ("--nat", args.nat), ("--out", args.out),
                                      ("--dhcp", args.dhcp), ("--private", args.private),
                                      ("--manual", args.manual)) if value]
    if given:
        raise UsageError(f"{given[0]} is an option of switch create, not of switch {args.verb}")


def _steps(args, steps):
    for s in steps:
        if not args.dry_run:
            common.info(f"switch: {s.shown()}")


def body(args):
    if args.verb != "create":
        _no_create_options(args)
    if args.verb not in ("up", "down") and args.all:
        raise UsageError(f"--all is an option of switch up and down, not of switch {args.verb}")
    root = common.get_root(args)
    verb = args.verb
    if verb == "list":
        _want(args, 0, 0)
        return _list(args, root)
    if verb == "info":
        (name,) = _want(args, 1, 1)
        return _info(args, root, name)
    if verb == "check":
        return _check(args, root, _want(args, 0) or net.names(root))
    common.need_root_user()
    if verb == "create":
        (name,) = _want(args, 1, 1)
        return _create(args, root, name)
    if verb in ("up", "down"):
        names = _want(args, 0)
        if args.all == bool(names):
            raise UsageError(f"usage: switch {verb} {USAGE[verb]}")
        status = 0
        for name in names or net.names(root):
            try:
                cfg = net.load(root, name)
                steps = net.up(root, cfg) if verb == "up" else net.down(root, cfg)
            except KvmError as exc:
                if not args.all:
                    raise
                status = exc.exit_status  # --all (at boot): one broken switch leaves the others up
                print(exc.line(PROG), file=sys.stderr)
                continue
            _steps(args, steps)
            state = "up" if verb == "up" else "down"
            common.said(args, f"switch {name} is {state}" + ("" if steps else " (nothing to do)"),
                        f"would bring switch {name} {state}" + ("" if steps else " (nothing to do)"))
        return status
    if verb == "destroy":
        (name,) = _want(args, 1, 1)
        _steps(args, net.destroy(root, name))
        common.said(args, f"destroyed switch {name}", f"would destroy switch {name}")
        return 0
    if verb == "set":
        name, *pairs = _want(args, 2)
        return _set(args, root, name, pairs)
    if verb in ("add", "remove"):
        name, ifname = _want(args, 2, 2)
        return _add_remove(args, root, name, ifname)
    raise UsageError(f"unknown verb {verb}")


def _create(args, root, name):
    switchconf.check_name(name)
    if net.conf_path(root, name).exists():
        raise StateError(f"switch {name} exists already (kvm switch set {name} KEY=VALUE changes it)")
    if args.out and not args.nat:
        raise UsageError("--out is the way out of --nat: give --nat too")
    values = {"Uplinks": " ".join(args.uplink), "Vlan": args.vlan or "", "Mtu": args.mtu or "",
              "Address": args.address or "", "Nat": "1" if args.nat else "", "NatOut": args.out or "",
              "Dhcp": args.dhcp or "", "Private": "1" if args.private else "", "Manual": args.manual or ""}
    cfg = _validated(name, {k: v for k, v in values.items() if v})
    net.check_new(root, cfg)
    net.save(root, cfg)
    steps = net.up(root, cfg)
    _steps(args, steps)
    if args.json:
        jsonout.emit(dict(_row(root, name, cfg), created=not args.dry_run, dry_run=bool(args.dry_run)), indent=2)
    else:
        common.said(args, f"created switch {name} (bridge {cfg.bridge}), up", f"would create switch {name} "
                                                                               f"(bridge {cfg.bridge})")
    if cfg.nat:
        for problem, fix in net.check(root, cfg) if not args.dry_run else []:
            common.warn(PROG, f"{problem}: {fix}")
    return 0


def _validated(name, values):
    try:
        return switchconf.validate(name, values)
    except ConfigError as exc:
        raise UsageError(exc.message.replace(f"{switchconf.FOLDER}/{name}{switchconf.SUFFIX}: ",
                                             f"switch {name}: ")) from None


def _set(args, root, name, pairs):
    text = net.read_text(root, name)
    old = switchconf.parse(name, text)
    values = {k: v for k, v in old.values().items() if v}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise UsageError(f"'{pair}' is not KEY=VALUE (keys: {', '.join(switchconf.KEYS)})")
        if key not in switchconf.KEYS:
            raise UsageError(f"'{key}' is not a switch setting (settings: {', '.join(switchconf.KEYS)})")
        if value:
            values[key] = value
        else:
            values.pop(key, None)
    cfg = _validated(name, values)
    if cfg.manual != old.manual:
        raise UsageError(f"switch {name}: Manual cannot change (destroy the switch and create it again)")
    net.check_new(root, cfg, new=False)
    net.save(root, cfg, text)
    steps = []
    if net.state(root, old)["exists"] and not args.dry_run:
        steps = net.up(root, cfg)
    _steps(args, steps)
    common.said(args, f"switch {name}: set {' '.join(pairs)}", f"would set {' '.join(pairs)} on switch {name}")
    return 0


def _add_remove(args, root, name, ifname):
    text = net.read_text(root, name)
    cfg = switchconf.parse(name, text)
    uplinks = list(cfg.uplinks)
    if args.verb == "add":
        if ifname in uplinks:
            raise StateError(f"switch {name}: {ifname} is an uplink already")
        uplinks.append(ifname)
    else:
        if ifname not in uplinks:
            raise StateError(f"switch {name}: {ifname} is not one of its uplinks ({' '.join(uplinks) or 'none'})")
        uplinks.remove(ifname)
    values = {k: v for k, v in cfg.values().items() if v}
    values["Uplinks"] = " ".join(uplinks)
    new = _validated(name, {k: v for k, v in values.items() if v})
    if args.verb == "add":
        net.check_new(root, new, new=False)
    net.save(root, new, text)
    steps = []
    if net.state(root, cfg)["exists"]:
        if args.verb == "add":
            steps = net.up(root, new)
        else:
            steps = net.remove_member(cfg, ifname)
    _steps(args, steps)
    what = "added" if args.verb == "add" else "removed"
    common.said(args, f"switch {name}: {what} uplink {ifname}", f"would {args.verb} uplink {ifname} "
                                                               f"({'to' if args.verb == 'add' else 'from'} "
                                                               f"switch {name})")
    return 0


def _row(root, name, cfg=None):
    """One switch as list/info/create --json give it (cfg: the one a dry run of create did not write)."""
    if cfg is None:
        try:
            cfg = net.load(root, name)
        except KvmError as exc:
            return {"name": name, "error": exc.message}
    st = net.state(root, cfg)
    users = sorted({vm.name for vm, _ in net.users(root, name)})
    return {"name": name, "bridge": cfg.bridge, "state": "up" if st["up"] else "down",
            "uplinks": list(cfg.uplinks), "vlan": cfg.vlan or None, "mtu": cfg.mtu or None,
            "address": str(cfg.address) if cfg.address else None, "nat": cfg.nat, "nat_out": cfg.nat_out or None,
            "dhcp": cfg.values()["Dhcp"] or None, "private": cfg.private, "manual": bool(cfg.manual),
            "vms": users, "members": st["members"], "leases": st["leases"]}


def _list(args, root):
    rows = [_row(root, name) for name in net.names(root)]
    if args.json:
        jsonout.emit(rows, indent=2)
        return 0
    common.print_table(["NAME", "BRIDGE", "STATE", "ADDRESS", "NAT", "DHCP", "UPLINKS", "VMS"],
                       [[r["name"], r.get("bridge", "-"), r.get("state", "error"), r.get("address") or "-",
                         "yes" if r.get("nat") else "no", r.get("dhcp") or "-",
                         ",".join(r.get("uplinks", [])) or "-", ",".join(r.get("vms", [])) or "-"] for r in rows],
                       args.scripted)
    return 0


def _info(args, root, name):
    cfg = net.load(root, name)
    row = _row(root, name)
    if args.json:
        jsonout.emit(row, indent=2)
        return 0
    lines = [("name", name), ("bridge", cfg.bridge + (" (manual)" if cfg.manual else "")), ("state", row["state"]),
             ("uplinks", " ".join(cfg.uplinks) or "-"), ("vlan", str(cfg.vlan or "-")),
             ("mtu", str(cfg.mtu or "-")), ("address", row["address"] or "-"),
             ("nat", f"yes (out {cfg.nat_out or 'the default route'})" if cfg.nat else "no"),
             ("dhcp", row["dhcp"] or "-"), ("private", "yes" if cfg.private else "no"),
             ("members", " ".join(row["members"]) or "-"), ("vms", " ".join(row["vms"]) or "-")]
    for key, value in lines:
        print(f"{key:<9}{value}")
    for lease in row["leases"]:
        print(f"lease    {lease['ip']} {lease['mac']} {lease['hostname'] or '-'}")
    return 0


def _check(args, root, names):
    status = 0
    for name in names:
        cfg = net.load(root, name)
        found = net.check(root, cfg)
        for problem, fix in found:
            print(f"{name}: {problem}\n{name}:   fix: {fix}")
        if not found:
            print(f"{name}: ok")
        status = status or (1 if found else 0)
    if not names:
        print("no switches (kvm switch create makes one)", file=sys.stderr)
    return status
