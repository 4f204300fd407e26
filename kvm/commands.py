"""The command names, for library code that needs them without importing the CLI."""

# every command, in the order `kvm help` and the installed root list them
ALL = ("kvminst", "vmcreate", "start", "stop", "status", "insert", "eject", "snap", "dorc",
       "vminfo", "vmlist", "vmdestroy", "vmrename", "console")

# the commands kvminst installs into the root folder as ./NAME launchers
ROOT_COMMANDS = tuple(c for c in ALL if c != "kvminst")
