"""Switches: the files in ROOT/switches, bringing a switch up or down (idempotently, under one
host-wide lock), a VM's NICs put on their switches at its start and removed at its end, checks.

The platform's network code (platform.current().network(): freebsd_net, linux_net) says which
commands make the host match a switch from what it saw; this module reads the host, runs those
steps, and owns what both platforms share: the config files, the lock, kvm's dnsmasq per switch
(its files under RUN_DIR/switch/NAME, see run_path), who uses a switch.

`up` makes the host match the config: run again after a kill, it makes only what is missing; run
on a switch already up, it runs no command beyond reading the host's state (bench/bench_switch.py).
"""

import os
import shutil

from kvm import host, platform
from kvm import vm as vmmod
from kvm.conf import switchconf
from kvm.conf.switchconf import FOLDER, SUFFIX
from kvm.errors import ConfigError, KvmError, NotFound, Refused, StateError, UsageError
from kvm.host import lock as lockmod
from kvm.host import paths, runfiles
from kvm.platform.netbase import dnsmasq_argv, dnsmasq_conf, read_leases

LOCK = "switch.lock"        # RUN_DIR/host/switch.lock: one `up`, `down` or attach at a time
WAIT = 30.0                 # seconds a switch operation waits for that lock (an `up` starting dnsmasq,
WAIT_ENV = "KVM_SWITCH_WAIT"  # a boot starting many VMs: each holds it for well under a second)
RUN_FOLDER = runfiles.SWITCH_DIR   # RUN_DIR/switch/NAME/: kvm's dnsmasq of the switch
RUN_FILES = {"conf": "dnsmasq.conf", "pid": "dnsmasq.pid", "leases": "dnsmasq.leases"}


def net():
    return platform.current().network()


# ------------------------------------------------------------------------ files

def folder(root):
    return root.path / FOLDER


def conf_path(root, name):
    return folder(root) / f"{name}{SUFFIX}"


def run_path(name, kind):
    """The one place naming a switch's run-time files: RUN_DIR/switch/NAME/{dnsmasq.conf,
    dnsmasq.pid, dnsmasq.leases} (kind: conf, pid, leases)."""
    return runfiles.switch_file(name, RUN_FILES[kind])


def names(root):
    try:
        entries = os.listdir(folder(root))
    except FileNotFoundError:
        return []
    return sorted(e[:-len(SUFFIX)] for e in entries if e.endswith(SUFFIX) and not e.startswith("."))


def read_text(root, name):
    path = conf_path(root, name)
    if not path.exists():
        known = names(root)
        raise NotFound(f"no switch {name} (switches: {', '.join(known) or 'none; kvm switch create makes one'})")
    return host.read_bounded(path, 65536, f"switch {name}'s file", follow=False).decode(errors="replace")


def load(root, name):
    switchconf.check_name(name)
    return switchconf.parse(name, read_text(root, name))


def load_all(root):
    out = []
    for name in names(root):
        try:
            out.append(load(root, name))
        except KvmError:
            continue  # a broken file is `switch info`'s and `list`'s to show; it clashes with nothing
    return out


def save(root, cfg, old_text=""):
    from kvm.host.files import make_dirs, write_file
    make_dirs(folder(root))
    write_file(conf_path(root, cfg.name), switchconf.render(cfg, old_text))


# ------------------------------------------------------------------------ who uses a switch

def users(root, name):
    """[(vm, nic)] of every VM of the root with a NIC on switch `name` (set.conf's Switch)."""
    out = []
    for vm in vmmod.list_vms(root):
        try:
            cfg = vm.config()
        except KvmError:
            continue
        out += [(vm, nic) for nic in cfg.nics if nic.switch == name]
    return out


# ------------------------------------------------------------------------ checks before writing

def check_new(root, cfg, seen=None, facts=None, new=True):
    """Refuse a switch config that cannot work here: a clash with a host interface or another
    switch's subnet, an uplink that does not exist or carries the host's address where that
    breaks it, a tool missing. One line each, before anything is written."""
    n = net()
    seen = n.observe() if seen is None else seen
    facts = n.facts() if facts is None else facts
    others = [o for o in load_all(root) if o.name != cfg.name]
    if new and not cfg.manual and cfg.bridge in seen:
        raise StateError(f"switch {cfg.name}: a host interface is called {cfg.bridge} already: choose another "
                         f"name (or use that bridge with --manual {cfg.bridge})")
    if cfg.manual and cfg.manual not in seen:
        raise NotFound(f"switch {cfg.name}: bridge {cfg.manual} (--manual) does not exist")
    if cfg.manual and seen[cfg.manual].get("kind") not in ("bridge", ""):
        raise UsageError(f"switch {cfg.name}: {cfg.manual} (--manual) is not a bridge")
    for other in others:
        if other.bridge == cfg.bridge:
            raise StateError(f"switch {cfg.name}: switch {other.name} uses bridge {cfg.bridge} already")
    clash = switchconf.overlapping(cfg, others)
    if clash:
        raise StateError(f"switch {cfg.name}: subnet {cfg.network} overlaps switch {clash.name}'s {clash.network}")
    if cfg.network:
        for ifname, info in seen.items():
            if ifname == cfg.bridge:
                continue
            for addr in info.get("addrs", []):
                import ipaddress
                if ipaddress.IPv4Interface(addr).network.overlaps(cfg.network):
                    raise StateError(f"switch {cfg.name}: subnet {cfg.network} overlaps {ifname}'s {addr}")
    for uplink in cfg.uplinks:
        if cfg.bridge in seen and (uplink in seen[cfg.bridge]["members"]
                                   or f"{uplink}.{cfg.vlan}" in seen[cfg.bridge]["members"]):
            continue
        why = n.uplink_problem(cfg, uplink, seen, facts)
        if why:
            raise StateError(f"switch {cfg.name}: {why}")
    need_tools(cfg)


def need_tools(cfg):
    """One line naming the package when a program the switch needs is missing."""
    n = net()
    wanted = (["dnsmasq"] if cfg.dhcp else []) + ([n.nat_tool] if cfg.nat else [])
    for tool in wanted:
        if not shutil.which(tool):
            raise NotFound(f"switch {cfg.name}: {tool} is not installed ({n.package(tool)})")


# ------------------------------------------------------------------------ up, down

def wait_seconds():
    """How long a switch operation waits for another's lock: KVM_SWITCH_WAIT, default WAIT."""
    text = os.environ.get(WAIT_ENV, "")
    try:
        seconds = float(text) if text else WAIT
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise UsageError(f"{WAIT_ENV}={text!r} is not a number of seconds from 0 to 3600")
    return seconds


def hold(what, names, vm=None):
    """The host-wide switch lock, held while the host is changed (two `up` never interleave; a
    VM's start waits for it), `what` (`switch up lan`, `start web`) written in it for whoever
    waits. The wait is bounded: a holder that hangs (a dnsmasq or pfctl that never answers, a
    stopped process) would otherwise hang every start; Refused names the switches and the holder."""
    if host.dry_run():
        return lockmod.NotTaken()
    path = lockmod.host_dir() / LOCK
    seconds = wait_seconds()
    got = lockmod.acquire_waiting(path, f"{os.getpid()} {what}\n", seconds)
    if got is None:
        found = lockmod.holder(path) or (0, "")
        raise Refused(f"switch {', '.join(names)}: busy: {lockmod.describe_holder(found)} holds {path}; waited "
                      f"{seconds:g} s ({WAIT_ENV}): try again when it is done", vm=vm,
                      hint="try again when it is done")
    return got


def _run(steps, done):
    from kvm.errors import CommandFailed
    for s in steps:
        if host.dry_run():
            host.plan(s.shown())
        else:
            try:
                host.run(list(s.argv), input=s.input)
            except CommandFailed as exc:
                if exc.status == 127:
                    raise NotFound(f"{s.argv[0]} is not installed ({net().package(s.argv[0])})") from None
                if s.why:
                    raise CommandFailed(s.argv, exc.status, f"{s.why}: {exc.stderr.strip()}") from None
                raise
        done.append(s)


def up(root, cfg, seen=None, done=None):
    """Make the host match switch cfg; the steps taken (none when it was up as configured)."""
    done = [] if done is None else done
    with hold(f"switch up {cfg.name}", [cfg.name]):
        _up_locked(root, cfg, seen, done)
    return done


def _up_locked(root, cfg, seen, done):
    n = net()
    seen = n.observe() if seen is None else seen
    facts = n.facts()
    if not cfg.manual:
        for uplink in cfg.uplinks:
            member = f"{uplink}.{cfg.vlan}" if cfg.vlan else uplink
            if cfg.bridge in seen and member in seen[cfg.bridge]["members"]:
                continue
            why = n.uplink_problem(cfg, uplink, seen, facts)
            if why:
                raise StateError(f"switch {cfg.name}: {why}")
    need_tools(cfg)
    _run(n.up_steps(cfg, seen, facts), done)
    _nat(cfg, done)
    _dhcp(cfg, done)


def _nat(cfg, done):
    n = net()
    if not cfg.nat:
        if shutil.which(n.nat_tool):
            _run(n.nat_remove_steps(cfg), done)  # Nat=0 since the last up: its rules go
        return
    out_if = cfg.nat_out or n.default_route_interface()
    if not out_if:
        raise StateError(f"switch {cfg.name}: NAT needs a way out: the host has no default route; "
                         f"kvm switch set {cfg.name} NatOut=IF names one")
    text = n.nat_rules(cfg, out_if)
    if not n.nat_loaded(cfg, text):
        _run(n.nat_steps(cfg, text), done)


def _dhcp(cfg, done):
    if not cfg.dhcp:
        pid = dnsmasq_pid(cfg.name)
        if pid:  # Dhcp removed since the last up
            _stop_dnsmasq(cfg.name, pid, done)
        return
    from kvm.host.files import make_dirs, write_file
    from kvm.platform.netbase import step
    files = {k: str(run_path(cfg.name, k)) for k in RUN_FILES}
    text = dnsmasq_conf(cfg, files)
    pid = dnsmasq_pid(cfg.name)
    conf = run_path(cfg.name, "conf")
    current = conf.read_text() if conf.is_file() else None
    if pid and current == text:
        return
    if pid:
        _stop_dnsmasq(cfg.name, pid, done)
    if host.dry_run():
        host.plan(f"would write {conf}")
    else:
        lockmod.run_dir()
        make_dirs(conf.parent)
        write_file(conf, text)
    _run([step(*dnsmasq_argv(conf), why="kvm's DHCP server for the switch")], done)


def dnsmasq_pid(name):
    """The pid of the switch's own dnsmasq when it runs (its pid file, and that process's command
    line naming our conf), else 0."""
    try:
        pid = int(run_path(name, "pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    args = host.process_args(pid) if host.pid_alive(pid) else None
    conf = str(run_path(name, "conf"))
    return pid if args and any(conf in a for a in args) else 0


def _stop_dnsmasq(name, pid, done):
    import signal
    from kvm.platform.netbase import step
    if host.dry_run():
        host.plan(f"kill {pid}  # the switch's dnsmasq")
    else:
        host.send_signal(pid, signal.SIGTERM)
    done.append(step("kill", pid, why="the switch's dnsmasq"))


def down(root, cfg, done=None):
    """Remove from the host what `up` made for switch cfg; refused while a VM runs on it."""
    done = [] if done is None else done
    running = [vm.name for vm, _ in users(root, cfg.name) if vmmod.runtime(vm).active]
    if running:
        raise StateError(f"switch {cfg.name} is used by running VMs: {', '.join(sorted(set(running)))} "
                         f"(stop them first)")
    n = net()
    with hold(f"switch down {cfg.name}", [cfg.name]):
        pid = dnsmasq_pid(cfg.name)
        if pid:
            _stop_dnsmasq(cfg.name, pid, done)
        if shutil.which(n.nat_tool):
            try:
                _run(n.nat_remove_steps(cfg), done)
            except KvmError:
                pass  # no NAT tool, no anchor: nothing of ours to remove
        _run(n.down_steps(cfg, n.observe()), done)
    return done


def remove_member(cfg, uplink):
    """Take an uplink off switch cfg's bridge (switch remove)."""
    done = []
    with hold(f"switch remove {cfg.name} {uplink}", [cfg.name]):
        _run(net().remove_member_steps(cfg, uplink, net().observe()), done)
    return done


def destroy(root, name):
    """Remove switch `name`: refused while a VM's set.conf names it; else down, its file and run files."""
    cfg = load(root, name)
    used = sorted({vm.name for vm, _ in users(root, name)})
    if used:
        raise Refused(f"switch {name} is used by VMs: {', '.join(used)} (remove their NICs from it first: "
                         f"vmset VM Switch=...)")
    done = down(root, cfg)
    from kvm.host.files import remove_file
    remove_file(conf_path(root, name))
    if not host.dry_run():
        for kind in RUN_FILES:
            remove_file(run_path(name, kind))
        try:
            run_path(name, "conf").parent.rmdir()
        except OSError:
            pass
    return done


# ------------------------------------------------------------------------ a VM's NICs

def attach(root, nics, vm_name=None):
    """At a VM's start: each NIC's switch brought up when down, the tap made and put on it.
    Returns the taps made (the supervisor removes them at the end)."""
    if not nics:
        return []
    n = net()
    made = []
    try:
        switches = list(dict.fromkeys(nic.switch for nic in nics))
        with hold(f"start {vm_name}" if vm_name else "attach", switches, vm=vm_name):
            _attach_locked(root, nics, vm_name, n, made)
    except BaseException:
        detach(made)  # a failed start leaves no tap of its own behind
        raise
    return made


def _attach_locked(root, nics, vm_name, n, made):
    for nic in nics:
        try:
            sw = load(root, nic.switch)
        except KvmError as exc:
            raise ConfigError(f"Switch names {nic.switch}: {exc.message}", vm=vm_name) from None
        done = []
        seen = n.observe(vlans=bool(nic.vlan))
        _up_locked(root, sw, seen, done)
        if done:
            seen = n.observe(vlans=bool(nic.vlan))
        steps = n.attach_steps(sw, nic, seen, n.facts())
        if nic.tap not in seen:
            made.append(nic.tap)
        _run(steps, [])


def detach(taps):
    """At a VM's end: remove the taps its start made (gone already is fine)."""
    if not taps:
        return
    n = net()
    seen = n.observe()
    for tap in taps:
        try:
            _run(n.detach_steps(tap, seen), [])
        except KvmError:
            pass


# ------------------------------------------------------------------------ reading

def state(root, cfg, seen=None):
    """What the host has of switch cfg: {up, members, address, dhcp, leases}."""
    n = net()
    seen = n.observe() if seen is None else seen
    bridge = seen.get(cfg.bridge)
    leases = []
    if cfg.dhcp:
        try:
            leases = read_leases(run_path(cfg.name, "leases").read_text())
        except OSError:
            leases = []
    return {"up": bool(bridge and bridge["up"]), "exists": bool(bridge),
            "members": sorted(bridge["members"]) if bridge else [],
            "addresses": bridge["addrs"] if bridge else [],
            "dhcp_pid": dnsmasq_pid(cfg.name) if cfg.dhcp else 0, "leases": leases}


def check(root, cfg):
    """[(problem, fix)]: what on this host defeats switch cfg."""
    n = net()
    seen = n.observe()
    facts = n.facts()
    out = []
    for tool in (["dnsmasq"] if cfg.dhcp else []) + ([n.nat_tool] if cfg.nat else []):
        if not shutil.which(tool):
            out.append((f"{tool} is not installed", n.package(tool)))
    if cfg.bridge not in seen:
        out.append((f"bridge {cfg.bridge} does not exist: the switch is down",
                    f"kvm switch up {cfg.name}" if not cfg.manual else f"make bridge {cfg.manual} (it is yours)"))
    elif not seen[cfg.bridge]["up"]:
        out.append((f"bridge {cfg.bridge} is down", f"kvm switch up {cfg.name}"))
    for uplink in cfg.uplinks:
        member = f"{uplink}.{cfg.vlan}" if cfg.vlan else uplink
        if cfg.bridge in seen and member in seen[cfg.bridge]["members"]:
            continue
        why = n.uplink_problem(cfg, uplink, seen, facts)
        if why:
            problem, _, fix = why.partition(": ")
            out.append((problem, fix or "see kvm(8) SWITCHES"))
    if cfg.dhcp and cfg.bridge in seen and not dnsmasq_pid(cfg.name):
        out.append(("kvm's dnsmasq for the switch is not running", f"kvm switch up {cfg.name}"))
    out += n.check(cfg, seen, facts)
    return out
