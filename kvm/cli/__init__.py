"""Command-line front ends: one module per command (PROG, build_parser(), body(args)) and the
one registry that runs them, whether as `./NAME` in a root, `kvm NAME`, a pip entry point or
bin/NAME in a checkout."""

import importlib
import os
import sys

from kvm.cli import common
from kvm.manage.commands import ALL as COMMANDS  # noqa: F401 - the names live in the library

# Every command's module is kvm.cli.<command>.

# commands pip puts on PATH (setup.cfg's console_scripts, besides `kvm`): only names no other
# program is likely to have; `start`, `stop`, `status`... are `./NAME` in the root or `kvm NAME`.
PATH_COMMANDS = ("kvminst", "vmcreate", "vmdestroy", "vminfo", "vmlist", "vmrename", "vmimport", "vmset", "vmedit")


def main(command, argv=None, launcher_dir=None):
    """Run one command with argv (default sys.argv[1:]); returns its exit status."""
    module = importlib.import_module(f"kvm.cli.{command}")
    argv = sys.argv[1:] if argv is None else argv
    return common.run(module.PROG, module.build_parser, module.body, argv, launcher_dir)


def launch(command, script):
    """Entry of an installed ./NAME launcher: the root is the launcher's own folder."""
    return main(command, sys.argv[1:], launcher_dir=os.path.dirname(os.path.realpath(script)))


def _usage():
    print("usage: kvm [--root DIR] [--debug] COMMAND [ARGS...]\n\ncommands: " + " ".join(sorted(COMMANDS)))
    print("each command takes --help (or: kvm help COMMAND)")


def _unknown(name):
    print(f"kvm: unknown command '{name}' (commands: {' '.join(sorted(COMMANDS))})", file=sys.stderr)
    return 2


def umbrella(argv=None):
    """`kvm COMMAND ARGS...`: the same as `./COMMAND ARGS...` in the root."""
    argv = list(sys.argv[1:] if argv is None else argv)
    common = []  # --root DIR and --debug may come before the command too: `kvm --root /z/kvm vmlist`
    while argv and (argv[0] in ("--root", "--debug") or argv[0].startswith("--root=")):
        take = 2 if argv[0] == "--root" else 1
        common += argv[:take]
        argv = argv[take:]
    if len(argv) >= 2 and argv[0] == "help":
        if argv[1] not in COMMANDS or len(argv) > 2:
            return _unknown(" ".join(argv[1:]))
        argv = [argv[1], "--help"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        _usage()
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        return _unknown(argv[0])
    return main(argv[0], common + argv[1:])


def entry(command):
    """A console_scripts entry point for `command`."""
    return lambda: sys.exit(main(command))


def kvm_main():
    """console_scripts: kvm."""
    sys.exit(umbrella())


kvminst_main = entry("kvminst")
vmcreate_main = entry("vmcreate")
vmdestroy_main = entry("vmdestroy")
vminfo_main = entry("vminfo")
vmlist_main = entry("vmlist")
vmrename_main = entry("vmrename")
vmimport_main = entry("vmimport")
vmset_main = entry("vmset")
vmedit_main = entry("vmedit")
