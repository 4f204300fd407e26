"""The operating system kvm runs on: the Platform, chosen beside the Hypervisor and independently of it
(qemu runs on FreeBSD too; another hypervisor may run on Linux).

The platform decides what is the host's: the service manager (`service`: rc.d scripts and rc.conf,
or systemd units), the snapshot scheduler (`scheduler`: periodic(8) or cron), the network helper
commands vmcreate writes into `run` (`network_hooks`), how listening ports (`listening_ports`), an
interface's MAC and bridge (`interface_info`) and a PCI device (`pci_info`) are read, and how
packages are installed (`install_command`, for the hints kvminst prints). The hypervisor decides
argv, start/stop, consoles and which packages it needs.

`current()` is chosen by os.uname(), overridden by KVM_PLATFORM=freebsd|linux (as KVM_HYPERVISOR
overrides the hypervisor). No module outside platform/ and hypervisor/ asks which one is in use:
they ask the Platform object what to do.
"""

import os
import shlex

from kvm.errors import KvmError

ENV = "KVM_PLATFORM"
KNOWN = ("freebsd", "linux")


def default_name():
    """The platform of this host: freebsd on FreeBSD, linux elsewhere."""
    return "freebsd" if os.uname().sysname == "FreeBSD" else "linux"


def current():
    """The Platform in use (KVM_PLATFORM, else this host's)."""
    name = os.environ.get(ENV) or default_name()
    if name == "freebsd":
        from kvm.platform.freebsd import PLATFORM
    elif name == "linux":
        from kvm.platform.linux import PLATFORM
    else:
        raise KvmError(f"{ENV}={shlex.quote(name)}: unknown platform (known: {', '.join(KNOWN)})")
    return PLATFORM
