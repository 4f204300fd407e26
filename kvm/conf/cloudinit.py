"""cloud-init NoCloud: seed.iso in the VM's folder (ISO 9660 with Joliet and Rock Ridge, volume
label `cidata`, files meta-data, user-data, network-config), built in-process with pycdlib, so no
host tool is needed on FreeBSD or Linux. set.conf's CloudInit="1" attaches it as a CD at slot
CD_SLOT (config.py adds the device, so every hypervisor's argv gets it as a plain extra CD).

What was asked is kept in cloud-init.json (0600, like the seed) so `cloudinit NAME --hostname X`
changes one thing; every build has a new instance-id, so the guest runs cloud-init again.
Passwords only as a hash the user gives: never a plain-text one.
"""

import json
import re
import time

from kvm import host
from kvm.conf.devices import Device
from kvm.errors import UsageError
from kvm.host.record import field, fields, record

SEED = "seed.iso"
STATE = "cloud-init.json"
CD_SLOT = "28"      # the last user slot: Devices items rarely reach it; a clash is refused
LABEL = "cidata"
MODE = 0o600
# what is read of the files a user names (a device or a FIFO is never read: host.read_bounded)
KEY_FILE_MAX = 64 << 10
USER_DATA_MAX = 1 << 20
NETWORK_CONFIG_MAX = 64 << 10
HOSTNAME_MAX = 253         # a DNS name's length
KEY_TYPE_RE = re.compile(r"(ssh-[a-z0-9-]+|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+)\Z")


@record()
class Seed:
    user: str = ""
    ssh_keys: list = field(default_factory=list)
    password_hash: str = ""
    hostname: str = ""
    ip: str = ""            # ADDR/LEN
    gateway: str = ""
    dns: list = field(default_factory=list)
    user_data: str = ""     # a whole user-data given by the user (used as is)
    network_config: str = ""


def check(seed, vm):
    """One-line errors for what cloud-init would choke on."""
    if seed.user and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", seed.user):
        raise UsageError(f"user name '{seed.user}' is not a valid login name", vm=vm)
    if seed.hostname and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*", seed.hostname):
        raise UsageError(f"hostname '{seed.hostname}' is not a host name", vm=vm)
    if len(seed.hostname) > HOSTNAME_MAX:
        raise UsageError(f"hostname '{seed.hostname}' is longer than {HOSTNAME_MAX} characters", vm=vm)
    _check_hash(seed.password_hash, vm)
    _check_network(seed, vm)
    for number, key in enumerate(seed.ssh_keys, 1):
        if not is_key(key):  # the text is never shown: it may be any file's line
            raise UsageError(f"SSH key {number} of the seed is not an SSH public key", vm=vm)


def _check_hash(value, vm):
    if value and not value.startswith("$"):
        raise UsageError("--password-hash wants a crypt hash ($6$...), never a plain-text password", vm=vm)
    if value and not (value.isascii() and value.isprintable()) or " " in value or ":" in value:
        # a newline would end the YAML line, a ':' the shadow field: nothing else of a hash has them
        raise UsageError("--password-hash holds a control character, a space or ':': give the crypt hash "
                         "alone, on one line", vm=vm)


def _check_network(seed, vm):
    if seed.ip and "/" not in seed.ip:
        raise UsageError(f"--ip '{seed.ip}' needs the prefix length, e.g. {seed.ip}/24", vm=vm)
    import ipaddress  # here: config.validate imports this module for every VM (seed_devices)
    try:
        ip = ipaddress.ip_interface(seed.ip) if seed.ip else None
        gateway = ipaddress.ip_address(seed.gateway) if seed.gateway else None
        for addr in seed.dns:
            ipaddress.ip_address(addr)
    except ValueError as exc:
        raise UsageError(f"network address: {exc}", vm=vm) from None
    if (seed.gateway or seed.dns) and not seed.ip:
        raise UsageError("--gateway and --dns need --ip ADDR/LEN", vm=vm)
    if gateway and gateway.version != ip.version:
        raise UsageError(f"--gateway {seed.gateway} is IPv{gateway.version} and --ip {seed.ip} IPv{ip.version}: "
                         f"give a gateway of the address's family", vm=vm)


def is_key(line):
    """One public key line: TYPE BASE64 [comment], whose blob opens with that type's name (no
    options before it; the rest of the blob is the guest's sshd's to judge)."""
    import base64
    import binascii
    words = line.split()
    if len(words) < 2 or not KEY_TYPE_RE.match(words[0]) or not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", words[1]):
        return False
    head = words[1][:-(-(4 + len(words[0])) // 3) * 4]  # the base64 of the length and the type's name
    try:
        blob = base64.b64decode(head + "=" * (-len(head) % 4))
    except (binascii.Error, ValueError):
        return False
    return blob[:4] == len(words[0]).to_bytes(4, "big") and blob[4:4 + len(words[0])] == words[0].encode()


def parse_keys(text, source, vm):
    """The keys of a public key file: one a line, blank and # lines skipped; a line that is no key
    (authorized_keys options such as command= included) is an error naming the file and the line,
    never its text."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not is_key(line):
            raise UsageError(f"SSH key file '{source}' line {number} is not an SSH public key (one key a line: "
                             f"TYPE KEY [comment], no options such as command=)", vm=vm)
        keys.append(line)
    if not keys:
        raise UsageError(f"SSH key file '{source}' holds no SSH public key", vm=vm)
    return keys


def user_data(seed):
    if seed.user_data:
        return seed.user_data
    doc = {}
    if seed.hostname:
        doc["hostname"] = seed.hostname
    if seed.user:
        user = {"name": seed.user, "shell": "/bin/sh", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": not seed.password_hash}
        if seed.ssh_keys:
            user["ssh_authorized_keys"] = list(seed.ssh_keys)
        if seed.password_hash:
            user["passwd"] = seed.password_hash
        doc["users"] = ["default", user]
    elif seed.ssh_keys:
        doc["ssh_authorized_keys"] = list(seed.ssh_keys)
    # JSON is YAML: no YAML writer needed, and cloud-init reads it
    return "#cloud-config\n" + json.dumps(doc, indent=2) + "\n"


def network_config(seed):
    if seed.network_config:
        return seed.network_config
    eth = {"match": {"name": "e*"}, "dhcp4": not seed.ip}
    if seed.ip:
        eth["addresses"] = [seed.ip]
        if seed.gateway:
            eth["routes"] = [{"to": "default", "via": seed.gateway}]
        if seed.dns:
            eth["nameservers"] = {"addresses": list(seed.dns)}
    return json.dumps({"version": 2, "ethernets": {"all": eth}}, indent=2) + "\n"


def files(vm_name, seed):
    """{file name: bytes} of the seed; a new instance-id each time."""
    import uuid  # here: with platform, 8 ms of every command that reads a set.conf
    meta = {"instance-id": f"{vm_name}-{int(time.time())}-{uuid.uuid4().hex[:8]}",
            "local-hostname": seed.hostname or vm_name}
    return {"meta-data": json.dumps(meta, indent=2).encode() + b"\n",
            "user-data": user_data(seed).encode(), "network-config": network_config(seed).encode()}


def build_iso(contents):
    """The ISO image bytes: ISO 9660 level 3 names, Rock Ridge and Joliet carrying the real ones."""
    import io

    import pycdlib
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    for name, data in contents.items():
        short = name.replace("-", "").upper()[:8]
        iso.add_fp(io.BytesIO(data), len(data), f"/{short}.;1", rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def write_seed(vm, seed):
    """seed.iso and cloud-init.json in the VM's folder, both 0600. set.conf's CloudInit is the
    caller's edit (attached(), through the one validated edit of kvm/conf/edit.py)."""
    host.write_file(vm.dir / STATE, json.dumps({name: getattr(seed, name) for name in fields(seed)}, indent=2) + "\n", mode=MODE)
    host.write_file(vm.dir / SEED, build_iso(files(vm.name, seed)), mode=MODE)


def attached(text):
    """set.conf text with the seed attached: CloudInit="1", unless it already says virtio-blk."""
    from kvm.conf import confedit
    kept = [a.value for a in confedit._plain(text, "CloudInit")][-1:] == ["virtio-blk"]
    return text if kept else confedit.set_value(text, "CloudInit", "1")


def saved(vm):
    """The Seed last written (an empty one when there is none)."""
    try:
        return Seed(**json.loads((vm.dir / STATE).read_text()))
    except (OSError, ValueError, TypeError):
        return Seed()


def seed_devices(c, devices):
    """set.conf's Devices, plus the seed CD at CD_SLOT when CloudInit="1" (config's checker)."""
    value = c.get("CloudInit")
    if value not in ("", "0", "1", "virtio-blk"):
        c.bad("CloudInit", "must be '0', '1' (a CD) or 'virtio-blk' (a read-only disk)")
    if value in ("", "0"):
        return devices
    taken = [d for d in devices if d.slot.split(":")[0] == CD_SLOT]
    if taken:
        c.bad("CloudInit", f"needs slot {CD_SLOT} for seed.iso, which Devices item '{taken[0].arg()}' uses")
    # a CD by default; virtio-blk for guests without an AHCI driver (cloud-init finds the
    # seed by its cidata label on any block device)
    if value == "virtio-blk":
        return devices + (Device(CD_SLOT, "virtio-blk", f"{c.path(SEED)},ro"),)
    return devices + (Device(CD_SLOT, "ahci-cd", c.path(SEED)),)
