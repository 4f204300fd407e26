"""What an import may read: the rule of set.conf, run and functions (kvm/conf/hooks.py) for every
file an import reads or maps into what root runs. A folder must be a real folder of root's that
only root may change; a file must be a regular file (never a link, a device or a FIFO) of root's,
not writable by group or others, and within its size limit. Checked on the opened descriptor, so
nothing is swapped between the check and the read."""

from kvm import host
from kvm.conf import config
from kvm.errors import KvmError

CONF_MAX = 256 << 10     # a vm-bhyve conf, system.conf
HOOK_MAX = 1 << 20       # a prestart script


def check_folder(name, folder):
    """PermissionDenied (naming the VM) unless `folder` is root's and writable by root only."""
    try:
        config.check_folder(str(folder))
    except KvmError as exc:
        exc.vm = name
        raise


def read(name, path, what, limit=CONF_MAX):
    """The bytes of a file an import reads, checked as above; one-line errors naming the VM."""
    try:
        return host.read_bounded(path, limit, what, follow=False, check=config.check_owner)
    except KvmError as exc:
        exc.vm = name
        raise
