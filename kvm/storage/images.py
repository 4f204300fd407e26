"""Images: POOL/kvm/images/NAME, one read-only dataset each holding `disk` (raw) and `image.conf`,
with the snapshot @base that `vmcreate --from` clones (instant, no space).

An import copies the file into a new dataset (so it depends on nothing); a publish is a clone of
a VM's snapshot (so the VM's snapshot cannot go while the image lives: vmdestroy and snap destroy
refuse, naming it). Both run under the creation transaction: nothing is left on failure or kill.
"""

import json
import os
import re
import shutil
import stat
import time

from kvm import host, zfs
from kvm import vm as vmmod
from kvm.conf.confedit import remove_value, sh_quote
from kvm.conf.config import SECRETS, holds_secret
from kvm.conf.shconf import read_plain, read_text
from kvm.errors import AlreadyExists, KvmError, NotFound, Refused, StateError, UsageError
from kvm.host.files import WriteFailed, file_kind
from kvm.zfs.deps import clones_by_origin, clones_of, origin_of, release_origin
from kvm.zfs.txn import Transaction

DISK = "disk"
CONF = "image.conf"
BASE = "base"
CHUNK = 1 << 20
HOLE = 64 << 10            # the unit of holes when copying (ZFS records are 128 KiB or less)
PROGRESS_MIN = 100 << 20   # files larger than this report progress
# first bytes of the formats qemu-img converts; anything else is taken as raw
MAGIC = {b"QFI\xfb": "qcow2", b"KDMV": "vmdk", b"vhdxfile": "vhdx", b"conectix": "vpc"}
TEXT_PROBE = 4096          # a file whose first bytes are text (no NUL, UTF-8) is no disk image
QCOW2_DATA_FILE = 1 << 2   # qcow2's incompatible feature bit: the data lives in another file
SOURCE_COPY = ".source"    # the private copy of a file qemu-img converts (in the new image's dataset)
DISK_MODE = 0o600          # a disk: root's alone
# files a publish leaves out: per-VM identity and secrets (set.conf.sav may hold a VNC password),
# hooks, logs, reports and run-time state
PRIVATE = ("UEFI_VARS.fd", "OVMF_VARS.fd", "run", "prestart", "console.log", "console.log.0", ".kvm-rename",
           "seed.iso", "cloud-init.json", "set.conf.sav", "vmimport.txt", "device.map", CONF)


def dataset(root, name):
    return f"{root.dataset()}/images/{name}"


def folder(root, name):
    return root.path / "images" / name


def check_name(name):
    vmmod.check_name(name, "image name")


def detect_format(path):
    """raw, or the format qemu-img must convert from (by the file's first bytes)."""
    with open(path, "rb") as fh:
        head = fh.read(TEXT_PROBE)
    if head.startswith(b"VDI") or head[:4] == b"<<< ":
        return "vdi"
    for magic, fmt in MAGIC.items():
        if head.startswith(magic):
            return fmt
    if _is_text(head):
        return "text"
    return "raw"


def _is_text(head):
    """UTF-8 text: no control character but tab, line ends and form feed (a disk's first bytes have
    NULs and others)."""
    import codecs
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a cut last character is fine
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 and c not in "\t\n\r\f" or ord(c) == 127 for c in text)


def check_source(path):
    """The file an import reads: a regular, non-empty file that is a disk image; its format."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"image file '{path}' does not exist") from None
    except OSError as exc:
        raise KvmError(f"image file '{path}': {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KvmError(f"image file '{path}' is not a regular file ({file_kind(st.st_mode)}): image import takes a "
                       f"disk image file (copy a device to a file first)")
    if st.st_size == 0:
        raise KvmError(f"image file '{path}' is empty: not a disk image")
    fmt = detect_format(path)
    if fmt == "text":
        raise KvmError(f"image file '{path}' is text, not a disk image (a vmdk descriptor? convert it to one "
                       f"file first: qemu-img convert -O raw)")
    if fmt == "qcow2":
        check_qcow2_header(path)
    return fmt


def check_qcow2_header(path, shown=None):
    """Refuse a qcow2 whose header names another file, before qemu-img opens it: a backing file
    (its data would be pulled into the image) or an external data file."""
    import struct
    shown = shown or path
    with open(path, "rb") as fh:
        head = fh.read(80)
    if len(head) < 32:
        raise KvmError(f"image file '{shown}' is a qcow2 image too short to have a header")
    version, backing_offset = struct.unpack(">IQ", head[4:16])
    if backing_offset:
        raise KvmError(f"image file '{shown}' is a qcow2 image with a backing file: refusing it (its data would "
                       f"come from that other file); make it standalone first (qemu-img convert -O qcow2)")
    if version >= 3 and len(head) >= 80 and struct.unpack(">Q", head[72:80])[0] & QCOW2_DATA_FILE:
        raise KvmError(f"image file '{shown}' is a qcow2 image with an external data file: refusing it (its "
                       f"data is another file); make it standalone first (qemu-img convert -O qcow2)")


def check_info(path, fmt, shown):
    """qemu-img info (which never opens a backing file) on the private copy: refuse a backing file,
    an external data file, or an extent in another file (vmdk)."""
    res = host.run(["qemu-img", "info", "--output=json", "-f", fmt, str(path)], mutating=False)
    try:
        info = json.loads(res.stdout)
    except ValueError:
        raise KvmError(f"image file '{shown}': qemu-img info gave no answer kvm can read") from None
    data = (info.get("format-specific") or {}).get("data") or {}
    if info.get("backing-filename") or info.get("full-backing-filename"):
        why = "a backing file"
    elif data.get("data-file"):
        why = "an external data file"
    elif any(os.path.realpath(os.path.join(os.path.dirname(path), e.get("filename") or "")) !=
             os.path.realpath(path) for e in data.get("extents") or []):
        why = "an extent in another file"
    else:
        return
    raise KvmError(f"image file '{shown}' is a {fmt} image with {why}: refusing it (its data would come from "
                   f"another file); make it standalone first (qemu-img convert)")


def copy_hashing(src, dst, progress=None, mode=DISK_MODE):
    """Copy src to dst sparsely (zero blocks become holes) and return its SHA-256: one pass. The
    copy is made `mode` (a disk's 0600) from its first byte."""
    import hashlib  # 15 ms of OpenSSL: only an import or a check hashes
    digest = hashlib.sha256()
    size = os.path.getsize(src)
    done = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        os.fchmod(fout.fileno(), mode)
        while True:
            block = fin.read(CHUNK)
            if not block:
                break
            digest.update(block)
            _write_sparse(fout, block)
            done += len(block)
            if progress and size > PROGRESS_MIN and (done % (64 * CHUNK) == 0 or done == size):
                progress(done, size)
        fout.truncate(size)
    return digest.hexdigest()


def _write_sparse(fout, block, piece=HOLE):
    """Write a block, leaving its all-zero pieces as holes: a sparse file stays sparse."""
    view = memoryview(block)
    for at in range(0, len(block), piece):
        part = view[at:at + piece]
        if part.tobytes().count(0) == len(part):
            fout.seek(len(part), os.SEEK_CUR)
        else:
            fout.write(part)


def sha256_of(path):
    import hashlib  # 15 ms of OpenSSL: only an import or a check hashes
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_conf(path, values):
    text = "# kvm image: written by `image import` / `image publish`\n"
    text += "".join(f"{k}={sh_quote(str(v))}\n" for k, v in values.items())
    host.write_file(path, text, mode=0o644)


def read_conf(path):
    try:
        return dict(read_plain(host.read_text(path)).values)
    except OSError:
        return {}


def _parent(root):
    parent = f"{root.dataset()}/images"
    if not zfs.lzc_exists(parent):
        zfs.lzc_create(parent)


def _check_new(root, name):
    check_name(name)
    if zfs.lzc_exists(dataset(root, name)) or folder(root, name).exists():
        raise AlreadyExists(f"image '{name}' already exists ({folder(root, name)})")


def _finish(ds):
    """Read-only, then @base: what every clone starts from."""
    zfs.set_prop(ds, "readonly", "on")
    zfs.lzc_snapshot([zfs.snapshot_name(ds, BASE)])


def import_file(root, name, path, os_hint="", progress=None):
    """image import: a raw file copied as is, others converted by qemu-img; returns image.conf's values.

    A file qemu-img converts is first copied into the new image's dataset (its SHA-256 taken in
    the same pass) and only that private copy is inspected (qcow2's header, then qemu-img info)
    and converted: an image naming another file (a backing file, an external data file) is
    refused, and what is converted is what was inspected, whoever can write the file named."""
    _check_new(root, name)
    fmt = check_source(path)
    if fmt != "raw" and not shutil.which("qemu-img"):
        raise NotFound(f"'{path}' is {fmt}: converting needs qemu-img (pkg install qemu-tools / "
                       f"apt-get install qemu-utils)")
    _parent(root)
    ds, where = dataset(root, name), folder(root, name)
    values = {"source": os.path.abspath(path), "format": fmt, "sha256": "", "size": 0,
              "created": int(time.time()), "os": os_hint}
    with Transaction(ds) as txn:
        if host.dry_run():
            host.plan(f"would copy {path} -> {where / DISK} (raw, SHA-256 while copying)")
        elif fmt == "raw":
            values["sha256"] = _copy(path, where / DISK, progress)
        else:
            values["sha256"] = _convert(path, fmt, where, progress)
        values["size"] = os.path.getsize(where / DISK) if not host.dry_run() else os.path.getsize(path)
        write_conf(where / CONF, values)
        _finish(ds)
        txn.commit()
    return values


def _copy(src, dst, progress=None):
    """copy_hashing with a full pool (or any write error) as one line."""
    try:
        return copy_hashing(src, dst, progress)
    except OSError as exc:
        raise WriteFailed(f"cannot copy {src} to {dst}: {exc.strerror or exc}") from None


def _convert(path, fmt, where, progress):
    """The private copy, inspected, converted to `disk` (0600), then removed; its SHA-256."""
    copy = where / SOURCE_COPY
    digest = _copy(path, copy, progress)
    if detect_format(copy) != fmt:
        raise KvmError(f"image file '{path}' changed while it was copied: import it again")
    if fmt == "qcow2":
        check_qcow2_header(copy, path)
    check_info(copy, fmt, path)
    host.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(copy), str(where / DISK)])
    os.chmod(where / DISK, DISK_MODE)
    host.remove_file(copy)
    return digest


def strip_macs(text):
    """set.conf without its mac=... device options (an image has no identity)."""
    return re.sub(r",mac=[0-9A-Fa-f:]{17}", "", text)


def strip_secrets(text):
    """set.conf without its secrets (VNCpassword): an image is readable by all."""
    for key in SECRETS:
        text = remove_value(text, key)
    if holds_secret(text):  # a line the editor cannot take apart: refuse rather than publish it
        raise StateError(f"set.conf sets {'/'.join(SECRETS)} in a way kvm cannot remove: remove it from the VM's "
                         f"set.conf (or publish a snapshot without it)")
    return text


def publish(root, vm, name, snap=None):
    """image publish: a clone of the VM's snapshot (a new one, publish-NAME-..., by default)
    without its identity; the VM's disk must be its folder's `disk`."""
    _check_new(root, name)
    cfg = vm.config()
    if cfg.disk != str(vm.dir / DISK):
        raise UsageError(f"publish needs the disk in the VM's folder as '{DISK}' (Disk is '{cfg.disk or '-'}')",
                         vm=vm.name)
    src = vm.dataset()
    own = None
    if snap:
        if not zfs.lzc_exists(zfs.snapshot_name(src, snap)):
            raise NotFound(f"no snapshot '{snap}' of {src}", vm=vm.name)
    else:
        snap = time.strftime(f"publish-{name}-%Y%m%d%H%M%S")
        own = zfs.snapshot_name(src, snap)
    _parent(root)
    ds, where = dataset(root, name), folder(root, name)
    with Transaction(ds, origin=zfs.snapshot_name(src, snap), own_snap=own) as txn:
        if not host.dry_run():
            for entry in os.listdir(where):
                if entry in PRIVATE or entry.endswith((".log", ".rc", ".tmp")):
                    host.remove_file(where / entry)
            conf = where / vmmod.CONF_FILE
            host.write_file(conf, strip_secrets(strip_macs(read_text(str(conf)))), mode=0o644)
            host.tighten_mode(where / DISK, DISK_MODE)
        disk = where / DISK
        values = {"source": f"vm {vm.name}@{snap}", "format": "raw",
                  "sha256": "" if host.dry_run() else sha256_of(disk), "size": 0 if host.dry_run()
                  else os.path.getsize(disk), "created": int(time.time()), "os": ""}
        write_conf(where / CONF, values)
        _finish(ds)
        txn.commit()
    return values


def listing(root):
    """[{name, size, used, clones, created, os}] of every image, by name (two zfs calls)."""
    parent = f"{root.dataset()}/images"
    if not zfs.lzc_exists(parent):
        return []
    rows = zfs.get_props([parent], ["used", "type"], recursive=True, depth=1)
    table = clones_by_origin(parent.split("/")[0])
    out = []
    for ds in sorted(n for n, p in rows.items() if n.startswith(parent + "/") and p.get("type") == "filesystem"):
        name = ds.rsplit("/", 1)[1]
        conf = read_conf(folder(root, name) / CONF)
        out.append({"name": name, "size": int(conf.get("size") or 0), "used": int(rows[ds].get("used") or 0),
                    "clones": clones_of(ds, table), "created": int(conf.get("created") or 0),
                    "os": conf.get("os") or "", "sha256": conf.get("sha256") or "",
                    "format": conf.get("format") or "", "source": conf.get("source") or ""})
    return out


def get(root, name):
    """(dataset, folder) of an existing image; NotFound naming the known ones."""
    check_name(name)
    ds = dataset(root, name)
    if ds in _complete:  # asked already by this command (vmcreate --from: its defaults, then the clone)
        return ds, folder(root, name)
    if not zfs.lzc_exists(zfs.snapshot_name(ds, BASE)):
        names = [i["name"] for i in listing(root)]
        if name in names:  # its dataset is there but not its snapshot: an import or publish under way
            raise NotFound(f"image '{name}' is not complete (an image import or publish is making it, or was "
                           f"killed: image list tells): try again when it is done")
        raise NotFound(f"no image '{name}' (images: {', '.join(names) or 'none'})")
    _complete.add(ds)
    return ds, folder(root, name)


_complete = set()  # images get() found complete in this process


def destroy(root, name):
    """image destroy: refused while clones exist, naming them."""
    ds, _ = get(root, name)
    users = clones_of(ds)
    if users:
        raise Refused(f"image '{name}' has clones: {', '.join(users)}; destroy them first "
                         f"(or vmclone --independent)")
    origin = origin_of(ds)
    zfs.destroy_recursive(ds)
    release_origin(origin)  # VM@publish-NAME-... that publish took for it
    return ds
