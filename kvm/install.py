"""kvminst: create POOL/kvm and POOL/kvm/vm, install the commands, helpers, templates and pinned firmware."""

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, host, paths, zfs
from .errors import KvmError, NotFound, PermissionDenied, StateError
from .root import MARKER, ROOT_PROP, is_root_dir

MIN_FREE = 64 * 1024 * 1024  # refuse pools with less room than this

# (file pinned into ROOT/firmware, where it comes from, the package that installs it)
FIRMWARE = [
    ("BHYVE_UEFI.fd", "uefi", "edk2-bhyve"),
    ("BHYVE_UEFI_VARS.fd", "uefi", "edk2-bhyve"),
    ("grub-bhyve", "grub", "grub2-bhyve"),
]
TEMPLATE_FILES = ["set.conf.j2", "run.j2", "rc.j2"]


@dataclass
class InstallReport:
    """What kvminst did, for the CLI to print."""

    dataset: str
    path: Path
    upgraded: bool
    created: list = field(default_factory=list)
    installed: list = field(default_factory=list)
    pinned: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def check_pool(pool):
    """Refuse an unknown, unhealthy, full or read-only pool."""
    known = dict(zfs.pools())
    if pool not in known:
        names = ", ".join(sorted(known)) or "none"
        raise NotFound(f"pool '{pool}' does not exist (imported pools: {names})")
    if known[pool] not in ("ONLINE", "DEGRADED"):
        raise StateError(f"pool '{pool}' is {known[pool]}")
    props = zfs.get_props([pool], ["available", "readonly", "mountpoint", "mounted"]).get(pool, {})
    if props.get("readonly") == "on" or _read_only_mount(props):
        raise StateError(f"pool '{pool}' is read-only (readonly=on)")
    avail = int(props.get("available") or 0)
    if avail < MIN_FREE:
        raise StateError(f"pool '{pool}' has only {avail} bytes available (need {MIN_FREE})")


def _read_only_mount(props):
    """True when the pool's root filesystem is mounted but refuses writes (EROFS)."""
    import errno
    mnt = props.get("mountpoint")
    if props.get("mounted") != "yes" or not mnt or not mnt.startswith("/"):
        return False
    try:
        probe = Path(mnt) / f".kvminst-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return exc.errno == errno.EROFS
    return False


def _existing_root(ds):
    """For an existing POOL/kvm: its mountpoint when it is a kvm install, else refuse."""
    props = zfs.get_props([ds], [ROOT_PROP, "mountpoint", "readonly"], with_source=True).get(ds, {})
    mark, source = props.get(ROOT_PROP, (None, "-"))
    mnt = (props.get("mountpoint") or (None,))[0]
    if props.get("readonly", ("off",))[0] == "on":
        raise StateError(f"{ds} is read-only (readonly=on)")
    if mark and source == "local":
        return Path(mnt)
    if mnt and is_root_dir(mnt):
        return Path(mnt)  # a shell-toolkit install: adopt it
    raise StateError(f"dataset {ds} exists and is not a kvm install (no {ROOT_PROP} property, no vm/ folder)")


def _writable(path):
    probe = Path(path) / f".kvminst-probe-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise StateError(f"{path} is not writable ({exc.strerror})") from None


def install(pool, repin=False):
    """Install or upgrade kvm on `pool`; a failure leaves no new dataset behind."""
    if not host.is_root() and not host.dry_run():
        raise PermissionDenied("you need to be root to install kvm")
    check_pool(pool)
    ds = f"{pool}/kvm"
    upgraded = zfs.lzc_exists(ds)
    report = InstallReport(dataset=ds, path=None, upgraded=upgraded)
    created = []
    try:
        if upgraded:
            report.path = _existing_root(ds)
            if not zfs.lzc_exists(ds + "/vm"):
                zfs.lzc_create(ds + "/vm")
                created.append(ds + "/vm")
        else:
            zfs.lzc_create(ds)
            created.append(ds)
            zfs.set_prop(ds, ROOT_PROP, "yes")
            zfs.lzc_create(ds + "/vm")
            created.append(ds + "/vm")
            mnt = zfs.get_prop(ds, "mountpoint") if not host.dry_run() else f"/{ds}"
            if not mnt or mnt in ("none", "legacy"):
                raise StateError(f"{ds} has no mountpoint ({mnt}): set one and run kvminst again")
            report.path = Path(mnt)
        if not host.dry_run():
            _writable(report.path)
        if upgraded and host.dry_run() is False and zfs.get_prop(ds, ROOT_PROP) is None:
            zfs.set_prop(ds, ROOT_PROP, "yes")
        _install_files(report, repin)
    except BaseException:
        # Undo what this run created (the top-most created dataset takes its children).
        if created:
            try:
                zfs.destroy_recursive(created[0])
            except KvmError:
                pass
        raise
    report.created = created
    return report


def _install_files(report, repin):
    root = report.path
    p = paths.current()
    from .cli import ROOT_COMMANDS
    from .templating import render
    for command in ROOT_COMMANDS:
        text = render("launcher.j2", python=sys.executable, command=command, version=__version__)
        host.write_file(root / command, text, mode=0o755)
        report.installed.append(command)
    host.copy_file(p.share_file("templates/functions"), root / "functions", mode=0o644)
    report.installed.append("functions")
    host.make_dirs(root / "templates")
    for name in TEMPLATE_FILES:
        host.copy_file(p.share_file(f"templates/{name}"), root / "templates" / name, mode=0o644)
    report.installed.append("templates/")
    host.make_dirs(root / "rc.d")
    rc_text = p.share_file("rc.d/kvm").read_text().replace("@KVM_ROOT@", str(root))
    host.write_file(root / "rc.d" / "kvm", rc_text, mode=0o755)
    report.installed.append("rc.d/kvm")
    pin_firmware(root, report, repin)
    host.write_file(root / MARKER, f"{report.dataset}\n")


def _find_firmware(name, kind, p):
    if kind == "grub":
        return p.grub_bhyve if p.grub_bhyve.is_file() else None
    for folder in p.firmware_dirs:
        if (folder / name).is_file():
            return folder / name
    return None


def sha256(path):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pin_firmware(root, report, repin=False):
    """Copy installed firmware into ROOT/firmware with a SHA256SUMS manifest.

    Already pinned files are kept unless `repin`: pinning exists to protect the VMs
    from a package upgrade, so an upgrade of kvm must not silently re-pin.
    """
    p = paths.current()
    fw_dir = root / "firmware"
    host.make_dirs(fw_dir)
    missing = set()
    for name, kind, package in FIRMWARE:
        target = fw_dir / name
        if target.exists() and not repin:
            continue
        source = _find_firmware(name, kind, p)
        if source is None:
            missing.add(package)
            continue
        host.copy_file(source, target, mode=0o755 if kind == "grub" else 0o644)
        report.pinned.append(f"{name} <- {source}")
    if missing:
        report.warnings.append("firmware not installed on this host: pkg install " + " ".join(sorted(missing))
                               + "; then run kvminst again to pin it")
    if not host.dry_run():
        lines = [f"{sha256(f)}  {f.name}" for f in sorted(fw_dir.iterdir())
                 if f.is_file() and f.name != "SHA256SUMS"]
        host.write_file(fw_dir / "SHA256SUMS", "".join(line + "\n" for line in lines))


def verify_firmware(root):
    """[(file name, OK | FAILED | MISSING)] of the pins listed in ROOT/firmware/SHA256SUMS.

    NotFound when there is no manifest (nothing pinned, or a shell-toolkit root).
    """
    manifest = Path(root) / "firmware" / "SHA256SUMS"
    try:
        lines = manifest.read_text().splitlines()
    except OSError:
        raise NotFound(f"no {manifest}: nothing pinned to check (kvminst pins the host's firmware)") from None
    out = []
    for line in lines:
        digest, _, name = line.partition("  ")
        if not name:
            continue
        path = manifest.parent / name
        if not path.is_file():
            out.append((name, "MISSING"))
        else:
            out.append((name, "OK" if sha256(path) == digest else "FAILED"))
    return out


def uninstall_plan(root):
    """What --uninstall removes: (rc.d scripts of ours, rc.conf variables, the dataset)."""
    from .rcd import our_scripts
    return our_scripts(root)


def uninstall(root, dataset):
    """Remove our rc.d scripts and rc.conf variables, then destroy the install dataset."""
    from . import vm as vmmod
    running = [v.name for v in vmmod.list_vms(root) if vmmod.runtime(v).active]
    if running:
        raise StateError(f"VMs still running: {' '.join(running)}; stop them first")
    from .rcd import remove_script
    for script in uninstall_plan(root):
        remove_script(script)
    zfs.destroy_recursive(dataset)

