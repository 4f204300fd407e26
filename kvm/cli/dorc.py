"""dorc [-r] NAME: write (or remove) the VM's rc.d script."""

import re

from kvm import platform
from kvm import vm as vmmod
from kvm.cli import common
from kvm.errors import KvmError, UsageError
from kvm.host import paths
from kvm.manage import rcinstall
from kvm.manage.rcinstall import Options
from kvm.platform import rcd
from kvm.platform.rcd import STOP_TIMEOUT

PROG = "dorc"
WORDS = re.compile(r"^[A-Za-z0-9_ ]*\Z")


# what dorc writes, by the service manager in use (KVM_INIT, else the platform's)
DESCRIPTIONS = {
    "rc.d": "Write an rc.d script for the VM into the rc.d folder (KVM_RCDIR, default "
            "/usr/local/etc/rc.d) and a copy NAME.rc in the VM folder, so that "
            "`service NAME start|stop|status|console` work and the VM can start at boot. "
            "On a Linux (qemu) host it writes the systemd unit NAME.service into KVM_UNITDIR "
            "(default /etc/systemd/system) instead. "
            "Asks REQUIRE, BEFORE, KEYWORD and whether to enable it.",
    "systemd": "Write a systemd unit NAME.service for the VM into the unit folder (KVM_UNITDIR, default "
               "/etc/systemd/system) and a copy in the VM folder, so that `service NAME start|stop|status` "
               "(systemctl) work and the VM can start at boot, after its pool is mounted. "
               "Asks REQUIRE (After= and Requires=), BEFORE, KEYWORD and whether to enable it.",
}


def _service():
    try:
        return platform.current().service
    except KvmError:
        return None  # an unknown KVM_PLATFORM or KVM_INIT: the command itself says so


def build_parser():
    p = common.parser(PROG, DESCRIPTIONS.get(_service(), DESCRIPTIONS["rc.d"]), dry_run=True)
    p.add_argument("name", help="VM name")
    p.add_argument("-r", "--remove", action="store_true", help="remove our script and its rc.conf variable")
    p.add_argument("--require", help="REQUIRE: (default NETWORKING)")
    p.add_argument("--before", help="BEFORE: (default empty)")
    p.add_argument("--keyword", help="KEYWORD: (default shutdown: stopped at host shutdown)")
    p.add_argument("--enable", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="set NAME_enable=YES in rc.conf; systemd: link the unit into "
                        "multi-user.target.wants (--no-enable: leave it)")
    p.add_argument("--timeout", type=int, default=None,
                   help="seconds a graceful stop waits (default 80, inside rc.shutdown's 90)")
    p.add_argument("--rcdir", help="rc.d folder (overrides KVM_RCDIR); systemd: the unit folder (KVM_UNITDIR)")
    p.add_argument("-y", "--yes", action="store_true", help="ask nothing: defaults for what flags omit")
    return p


def words(value, what, vm):
    if not WORDS.match(value):
        raise UsageError(f"{what} '{value}' must be rc.d names separated by spaces", vm=vm)
    return " ".join(value.split())


def answer(args, flag, question, default):
    given = getattr(args, flag)
    if given is not None:
        return given
    if args.yes:
        return default
    got = common.ask(f"{question} [{default}]: ", default,
                     flag=f"--{flag} answers it, -y takes the defaults")
    return got if got is not None else default


def body(args):
    at = rcd.where(args.rcdir)
    if args.remove:  # the VM need not exist: our script of a name no VM has is removed all the same
        vmmod.check_name(args.name)
        root = common.get_root(args)
        common.need_root_user(args.name)
        with rcinstall.hold_unless_running(vmmod.Vm(root, args.name), "dorc -r"):
            removed = rcinstall.remove(root, args.name, at)
            if removed is None:
                what = "systemd unit" if rcinstall.systemd.in_use() else "rc.d script"
                common.info(f"{args.name}: has no {what} ({rcd.script_path(args.name, at)}): nothing to remove")
                return 0
            common.said(args, f"removed {removed}", f"would remove {removed}")
        return 0
    vm = common.get_vm(args, root_user=True)
    with rcinstall.hold_unless_running(vm, "dorc"):
        return write(args, vm, at)


def options(args, vm):
    """The answers, from flags or asked; UsageError for a bad one."""
    require = words(answer(args, "require", "REQUIRE (NETWORKING advised)", "NETWORKING"), "REQUIRE", vm.name)
    before = words(answer(args, "before", "BEFORE", ""), "BEFORE", vm.name)
    keyword = words(answer(args, "keyword", "KEYWORD (shutdown: stop it at host shutdown)", "shutdown"),
                    "KEYWORD", vm.name)
    timeout = args.timeout if args.timeout is not None else STOP_TIMEOUT
    if not 1 <= timeout <= 3600:
        raise UsageError(f"timeout {timeout} is out of range (1..3600)", vm=vm.name)
    enable = args.enable
    if enable is None:
        enable = False if args.yes else (common.ask(
            "Enable it at boot (y/N)? ", "n", flag="--enable or --no-enable answers it, -y takes the defaults")
            or "n").lower().startswith("y")
    return Options(require, before, keyword, timeout), enable


def write(args, vm, at):
    vm.check_files()   # a VM whose set.conf or run is a link: refused, as every other command does
    vm.config()
    rcinstall.check_slot(vm.name, at)  # before asking anything
    opts, enable = options(args, vm)
    path = rcinstall.install(vm, opts, enable, at)
    common.said(args, f"wrote {path}", f"{vm.name}: would install the {platform.current().service_noun} {path}"
                + (" and enable it" if enable else ""))
    rcname = rcd.rc_name(vm.name)
    unit = rcinstall.systemd.in_use()
    if unit and not rcinstall.systemd.running():
        common.warn(PROG, f"systemd is not this host's init ({paths.current().systemd_run} is missing): "
                          f"nothing runs the unit, at boot or for `service {rcname} start`; start the VM "
                          f"with {vm.root.path}/start -b {vm.name}", vm=vm.name)
    if args.dry_run:
        return 0
    if unit and not rcinstall.systemd.running():
        return 0
    if unit:
        common.info(f"service {rcname} start|stop|status (systemctl start {rcname}); console: "
                    f"{vm.root.path}/console {vm.name}"
                    + ("" if enable else f"   (enable at boot: dorc {vm.name} --enable, or systemctl enable {rcname})"))
        return 0
    common.info(f"service {rcname} start|stop|status|console"
                + ("" if enable else f"   (enable at boot: sysrc {rcname}_enable=YES)"))
    for name, seconds in rcinstall.shutdown_overrun(vm.root, at):
        common.warn(PROG, f"{name}: a {seconds}s stop timeout does not fit rcshutdown_timeout (90 s by "
                          f"default): raise rcshutdown_timeout or lower the timeout", vm=vm.name)
    return 0
