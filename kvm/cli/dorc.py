"""dorc [-r] NAME: write (or remove) the VM's rc.d script."""

import re
import sys

from ..errors import UsageError
from . import common

PROG = "dorc"
WORDS = re.compile(r"^[A-Za-z0-9_ ]*\Z")


def build_parser():
    p = common.parser(PROG, "Write an rc.d script for the VM into the rc.d folder (KVM_RCDIR, default "
                            "/usr/local/etc/rc.d) and a copy NAME.rc in the VM folder, so that "
                            "`service NAME start|stop|status|console` work and the VM can start at boot. "
                            "Asks REQUIRE, BEFORE, KEYWORD and whether to enable it.", dry_run=True)
    p.add_argument("name", help="VM name")
    p.add_argument("-r", "--remove", action="store_true", help="remove our script and its rc.conf variable")
    p.add_argument("--require", help="REQUIRE: (default NETWORKING)")
    p.add_argument("--before", help="BEFORE: (default empty)")
    p.add_argument("--keyword", help="KEYWORD: (default shutdown: stopped at host shutdown)")
    p.add_argument("--enable", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="set NAME_enable=YES in rc.conf (--no-enable: leave it)")
    p.add_argument("--timeout", type=int, default=None,
                   help="seconds a graceful stop waits (default 80, inside rc.shutdown's 90)")
    p.add_argument("--rcdir", help="rc.d folder (overrides KVM_RCDIR)")
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
    got = common.ask(f"{question} [{default}]: ", default)
    return got if got is not None else default


def body(args):
    import os
    if args.rcdir:
        os.environ["KVM_RCDIR"] = args.rcdir
    from .. import host, rcd
    vm = common.get_vm(args, root_user=True)
    if args.remove:
        return remove(vm)
    path = rcd.check_writable_slot(vm.name)
    require = words(answer(args, "require", "REQUIRE (NETWORKING advised)", "NETWORKING"), "REQUIRE", vm.name)
    before = words(answer(args, "before", "BEFORE", ""), "BEFORE", vm.name)
    keyword = words(answer(args, "keyword", "KEYWORD (shutdown: stop it at host shutdown)", "shutdown"),
                    "KEYWORD", vm.name)
    timeout = args.timeout if args.timeout is not None else rcd.STOP_TIMEOUT
    if not 1 <= timeout <= 3600:
        raise UsageError(f"timeout {timeout} is out of range (1..3600)", vm=vm.name)
    enable = args.enable
    if enable is None:
        enable = False if args.yes else (common.ask("Enable it at boot (y/N)? ", "n") or "n").lower().startswith("y")
    text = rcd.render(vm.name, vm.root.path, require=require, before=before, keyword=keyword, timeout=timeout)
    host.write_file(path, text, mode=0o555)
    host.write_file(vm.dir / f"{vm.name}.rc", text, mode=0o444)
    rcvar = f"{rcd.rc_name(vm.name)}_enable"
    if enable:
        rcd.sysrc(f"{rcvar}=YES")
    if not args.dry_run:
        print(f"wrote {path}")
        common.info(f"service {rcd.rc_name(vm.name)} start|stop|status|console"
                    + ("" if enable else f"   (enable at boot: sysrc {rcvar}=YES)"))
        if timeout > 85 and "shutdown" in keyword.split():
            common.warn(PROG, f"a {timeout}s stop timeout may not fit rcshutdown_timeout (90 s by default)",
                        vm=vm.name)
    return 0


def remove(vm):
    from .. import host, rcd
    from ..errors import NotFound, StateError
    path = rcd.script_path(vm.name)
    script = rcd.our_script(vm.name)
    if script is None:
        if path.exists():
            raise StateError(f"{path} is not a kvm script of this VM: not removing it", vm=vm.name)
        raise NotFound(f"has no rc.d script ({path})", vm=vm.name)
    rcd.remove_script(script)
    copy = vm.dir / f"{vm.name}.rc"
    if copy.exists():
        host.remove_file(copy)
    print(f"removed {path}")
    return 0


def main(argv=None, launcher_dir=None):
    return common.run(PROG, build_parser, body, sys.argv[1:] if argv is None else argv, launcher_dir)
