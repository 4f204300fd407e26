"""kvminst [-p POOL] [-y] [--repin] [--python PATH] [--uninstall] [--verify] [--root DIR]: install kvm
on a pool, or upgrade it."""

from pathlib import Path

from kvm import __version__, platform, zfs
from kvm.cli import PATH_COMMANDS, common, completion
from kvm.errors import NotFound, UsageError
from kvm.manage.commands import ALL
from kvm.manage.install import install, moved_python_risk, uninstall, uninstall_plan, verify_firmware
from kvm.manage.schedule import owned
from kvm.vm.root import Root, find_root

PROG = "kvminst"


def build_parser():
    p = common.parser(PROG, "Create POOL/kvm and POOL/kvm/vm and install the kvm commands, helpers, "
                            "templates and pinned firmware into the root folder. Running it again "
                            "upgrades the commands and never touches vm/.", root=False, dry_run=True)
    p.add_argument("-p", "--pool", help="pool to install on (without it: list the pools and ask)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--repin", action="store_true",
                   help="copy the host's current firmware again over the pinned one")
    p.add_argument("--uninstall", action="store_true",
                   help="remove our rc.d scripts and destroy POOL/kvm with every VM (asks first)")
    p.add_argument("--verify", action="store_true",
                   help="check the pinned firmware against its SHA256SUMS; exit 1 on any mismatch")
    p.add_argument("--python", metavar="PATH",
                   help="interpreter the installed commands run (their shebang; default: the one running "
                        "kvminst); it must import kvm")
    p.add_argument("--root", metavar="DIR",
                   help="with --verify or --uninstall: the install root folder (default: POOL/kvm with -p, "
                        "else KVM_ROOT or the dataset marked kvm:root)")
    return p


def choose_pool():
    """List the pools on stderr and ask for one."""
    pools = zfs.pools()
    if not pools:
        raise UsageError("no ZFS pool is imported: create or import one first")
    common.info("Pools:")
    for name, health in pools:
        common.info(f"  {name}\t{health}")
    default = pools[0][0] if len(pools) == 1 else None
    hint = f" [{default}]" if default else ""
    answer = common.ask(f"Install kvm on which pool{hint}? ", default, flag="-p POOL names it")
    if not answer:
        raise UsageError("no pool chosen")
    return answer


def body(args):
    if args.root and not (args.verify or args.uninstall):
        raise UsageError("--root goes with --verify or --uninstall (an install is made on a pool: -p POOL)")
    if args.root and args.pool:
        raise UsageError("give -p POOL or --root DIR, not both")
    if args.uninstall:
        return do_uninstall(args)
    if args.verify:
        return do_verify(args)
    pool = args.pool or choose_pool()
    if "/" in pool or "@" in pool:
        raise UsageError(f"'{pool}' is not a pool name (give the pool, kvminst makes POOL/kvm)")
    if not args.yes and not args.dry_run and not common.confirm(f"Install kvm into {pool}/kvm", False):
        common.info("Nothing done.")
        return 1
    report = install(pool, repin=args.repin, python=args.python, completion=completion_files)
    verb, done = ("upgrade", "upgraded") if report.upgraded else ("install", "installed")
    for name in report.created:
        common.info(f"would create dataset {name}" if args.dry_run else f"created dataset {name}")
    for line in report.pinned:
        common.info(f"would pin firmware {line}" if args.dry_run else f"pinned firmware {line}")
    if report.schedule:
        common.info(report.schedule)
    if report.compiled:
        common.info(report.compiled)
    for line in report.warnings:
        common.warn(PROG, line)
    common.info(f"the commands run {report.python}")
    risk = moved_python_risk(report.python)
    if risk:
        common.warn(PROG, f"the commands' interpreter {report.python}: {risk}; "
                          f"{platform.current().moved_python_hint}")
    common.said(args, f"kvm {done} in {report.path} (dataset {report.dataset})",
                f"would {verb} kvm in {report.path} (dataset {report.dataset})")
    if not args.dry_run:
        common.info(f"shell completion: . {report.path}/completion/kvm.bash (zsh: kvm.zsh) in ~/.bashrc")
        print(f"next: cd {report.path} && ./vmcreate myVM")
    common.info(platform.current().boot_hint(report.path))
    return 0


def completion_files(root):
    """{file: text} of the bash and zsh completion, from the parsers of the commands installed."""
    import importlib

    modules = {c: importlib.import_module(f"kvm.cli.{c}") for c in ALL}
    parsers = {c: m.build_parser() for c, m in modules.items()}
    verbs = {c: list(m.VERBS.values()) for c, m in modules.items() if isinstance(getattr(m, "VERBS", None), dict)}
    return completion.scripts(parsers, str(root), __version__, verbs, PATH_COMMANDS)


def do_uninstall(args):
    root = _target_root(args)
    dataset = root.dataset()
    scripts = uninstall_plan(root)
    common.info(f"This destroys {dataset} recursively: every VM, disk and snapshot under {root.path}.")
    for script in scripts:
        common.info(f"It also removes the systemd unit {script.path} and its link." if script.unit else
                    f"It also removes the rc.d script {script.path} and {script.rcvar} from rc.conf.")
    for path in owned(root.path):
        common.info(f"It also removes the snapshot schedule {path}.")
    if not common.confirm(f"Destroy {dataset}", args.yes or args.dry_run):
        common.info("Nothing done.")
        return 1
    common.need_root_user()
    uninstall(root, dataset)
    common.said(args, f"removed {dataset}", f"would remove {dataset}")
    return 0


def do_verify(args):
    """Print `NAME: OK|FAILED|MISSING` per pinned file, as `sha256sum -c` does."""
    root = _target_root(args)
    results = verify_firmware(root.path)
    for name, verdict in results:
        print(f"{root.path}/firmware/{name}: {verdict}")
    bad = [name for name, verdict in results if verdict != "OK"]
    if bad:
        common.warn(PROG, f"{len(bad)} pinned file(s) do not match SHA256SUMS: {' '.join(bad)}; "
                          "kvminst --repin pins the host's current firmware again")
        return 1
    return 0


def _target_root(args):
    """The install --uninstall and --verify work on: POOL/kvm with -p, else KVM_ROOT or the marked one."""
    if args.pool:
        return _root_of_pool(args.pool)
    return find_root(args.root, None)


def _root_of_pool(pool):

    ds = f"{pool}/kvm"
    if not zfs.lzc_exists(ds):
        raise NotFound(f"no kvm install on pool '{pool}' ({ds} does not exist)")
    return Root(Path(zfs.get_prop(ds, "mountpoint")), ds)
