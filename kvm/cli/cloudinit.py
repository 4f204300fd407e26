"""cloudinit NAME [flags]: write (or rewrite) the VM's cloud-init NoCloud seed.iso."""

from kvm import host
from kvm.cli import common
from kvm.conf import cloudinit, edit
from kvm.errors import KvmError, UsageError
from kvm.host import lock

PROG = "cloudinit"


def add_seed_args(p):
    """The seed's flags, shared with vmcreate --cloud-init."""
    p.add_argument("--user", help="cloud-init: the login to create (sudo, SSH keys)")
    p.add_argument("--ssh-key", action="append", default=[], metavar="FILE",
                   help="cloud-init: a public key file for the user (repeatable)")
    p.add_argument("--password-hash", metavar="HASH", help="cloud-init: a crypt hash ($6$...), never plain text")
    p.add_argument("--hostname", help="cloud-init: the guest's host name (default: the VM name)")
    p.add_argument("--ip", metavar="ADDR/LEN", help="cloud-init: a static address (default DHCP)")
    p.add_argument("--gateway", metavar="IP", help="cloud-init: the default route")
    p.add_argument("--dns", action="append", default=[], metavar="IP", help="cloud-init: a name server (repeatable)")
    p.add_argument("--user-data", metavar="FILE", help="cloud-init: a whole user-data file, used as is")
    p.add_argument("--network-config", metavar="FILE", help="cloud-init: a whole network-config (version 2)")


def _read(path, what, vm, limit):
    """The text of a file the user named: a regular file within `limit`, UTF-8 (cloud-init reads its
    seed as UTF-8, so other bytes are refused, by offset); usage errors."""
    try:
        data = host.read_bounded(path, limit, what)
    except KvmError as exc:
        raise UsageError(exc.message, vm=vm) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} '{path}' is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}), which cloud-init cannot read: convert it (iconv -t UTF-8)", vm=vm) from None


def seed_from_args(args, vm_name, base=None):
    """A checked cloudinit.Seed: the flags given over `base` (the seed written before)."""
    seed = base or cloudinit.Seed()
    for key in ("user", "password_hash", "hostname", "ip", "gateway"):
        if getattr(args, key):
            setattr(seed, key, getattr(args, key))
    if args.dns:
        seed.dns = list(args.dns)
    if args.ssh_key:
        seed.ssh_keys = [key for f in args.ssh_key for key in
                         cloudinit.parse_keys(_read(f, "SSH key file", vm_name, cloudinit.KEY_FILE_MAX), f, vm_name)]
    if args.user_data:
        seed.user_data = _read(args.user_data, "user-data file", vm_name, cloudinit.USER_DATA_MAX)
    if args.network_config:
        seed.network_config = _read(args.network_config, "network-config file", vm_name,
                                    cloudinit.NETWORK_CONFIG_MAX)
    try:
        cloudinit.check(seed, vm_name)
    except KvmError as exc:
        exc.vm = vm_name
        raise
    return seed


def build_parser():
    p = common.parser(PROG, "Write the VM's cloud-init NoCloud seed (seed.iso in its folder, label cidata, "
                            "0600) and attach it as a CD (set.conf CloudInit=\"1\", slot 28). Flags not given "
                            "keep their last value; every run makes a new instance-id, so the guest applies "
                            "it again at its next boot.", dry_run=True)
    p.add_argument("name", help="VM name")
    add_seed_args(p)
    return p


def body(args):
    vm = common.get_vm(args, root_user=True)
    seed = seed_from_args(args, vm.name, cloudinit.saved(vm))
    with lock.hold_vm(vm.run, "cloudinit"):
        # CloudInit="1" must validate (slot 28 free...) before the seed is written
        edit.check_text(vm, cloudinit.attached(edit.current_text(vm)))
        cloudinit.write_seed(vm, seed)
        edit.apply(vm, cloudinit.attached, "cloudinit")
    common.said(args, f"wrote {vm.dir / cloudinit.SEED} (attached at slot {cloudinit.CD_SLOT} from the next start)",
                f"{vm.name}: would write a new seed with a new instance-id (attached at slot {cloudinit.CD_SLOT} "
                f"from the next start)")
    return 0
