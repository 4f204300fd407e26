"""The command names: the CLI registry (kvm/cli) runs them, kvminst installs ROOT_COMMANDS; here so
library code needs no import of the CLI. A new command is added here and as kvm/cli/NAME.py."""

# every command, in the order `kvm help` and the installed root list them
ALL = ("kvminst", "vmcreate", "start", "stop", "status", "insert", "eject", "snap", "dorc",
       "vminfo", "vmlist", "vmdestroy", "vmrename", "console", "image", "vmclone", "cloudinit",
       "vmsend", "vmrecv", "vmimport", "vmset", "vmedit", "switch", "vmdisk", "vmexport", "vmrestore")

# the commands kvminst installs into the root folder as ./NAME launchers
ROOT_COMMANDS = tuple(c for c in ALL if c != "kvminst")
