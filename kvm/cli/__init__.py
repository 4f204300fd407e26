"""Command-line front ends: one module per command, each with build_parser() and main(argv)."""

import importlib
import os
import sys

# command name -> module under kvm.cli
COMMANDS = {
    "kvminst": "kvminst", "vmcreate": "vmcreate", "start": "start", "stop": "stop",
    "status": "status", "insert": "insert", "eject": "eject", "snap": "snap", "dorc": "dorc",
    "vminfo": "vminfo", "vmlist": "vmlist", "vmdestroy": "vmdestroy", "vmrename": "vmrename",
    "console": "console",
}

# commands kvminst installs into the root folder as ./NAME launchers
ROOT_COMMANDS = [c for c in COMMANDS if c != "kvminst"]


def launch(command, script):
    """Entry of an installed ./NAME launcher: the root is the launcher's own folder."""
    module = importlib.import_module(f"kvm.cli.{COMMANDS[command]}")
    launcher_dir = os.path.dirname(os.path.realpath(script))
    return module.main(sys.argv[1:], launcher_dir=launcher_dir)


def umbrella(argv=None):
    """`kvm COMMAND ARGS...`: the same as `./COMMAND ARGS...` in the root."""
    argv = list(sys.argv[1:] if argv is None else argv)
    common = []  # --root DIR and --debug may come before the command too: `kvm --root /z/kvm vmlist`
    while argv and (argv[0] in ("--root", "--debug") or argv[0].startswith("--root=")):
        take = 2 if argv[0] == "--root" else 1
        common += argv[:take]
        argv = argv[take:]
    if len(argv) == 2 and argv[0] == "help" and argv[1] in COMMANDS:
        argv = [argv[1], "--help"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: kvm [--root DIR] [--debug] COMMAND [ARGS...]\n\ncommands: " + " ".join(sorted(COMMANDS)))
        print("each command takes --help (or: kvm help COMMAND)")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"kvm: unknown command '{argv[0]}' (commands: {' '.join(sorted(COMMANDS))})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"kvm.cli.{COMMANDS[argv[0]]}")
    return module.main(common + argv[1:])


def entry(command):
    """A console_scripts entry point for `command`."""
    def _main():
        module = importlib.import_module(f"kvm.cli.{COMMANDS[command]}")
        sys.exit(module.main(sys.argv[1:]))
    return _main


def kvm_main():
    """console_scripts: kvm."""
    sys.exit(umbrella())


kvminst_main = entry("kvminst")
vmcreate_main = entry("vmcreate")
vmdestroy_main = entry("vmdestroy")
vminfo_main = entry("vminfo")
vmlist_main = entry("vmlist")
vmrename_main = entry("vmrename")
