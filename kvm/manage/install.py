"""kvminst: create POOL/kvm and POOL/kvm/vm, install the commands, helpers, templates and pinned firmware."""

import errno
import hashlib
import os
import sys
from pathlib import Path

from kvm import __version__, host, hypervisor, platform, zfs
from kvm import vm as vmmod
from kvm.conf import firmware
from kvm.conf.templating import render
from kvm.errors import KvmError, NotFound, PermissionDenied, Refused, StateError, UsageError
from kvm.host import lock, paths, runfiles
from kvm.host.paths import PACKAGE_DIR
from kvm.host.record import field, record
from kvm.manage import schedule
from kvm.manage.commands import ROOT_COMMANDS
from kvm.platform.rcd import our_scripts, remove_script
from kvm.vm.root import MARKER, ROOT_PROP, is_root_dir

MIN_FREE = 64 * 1024 * 1024  # refuse pools with less room than this
PROBE = ".kvminst-probe-"     # + pid: the file that shows a folder is writable
MANIFEST = "SHA256SUMS"
LOCK = "kvminst.lock"         # in RUN_DIR/host: one kvminst at a time, so leftovers are dead ones

TEMPLATE_FILES = ["set.conf.j2", "run.j2", "rc.j2", "unit.j2"]
COMPLETION_DIR = "completion"
COMPLETION_FILES = ["kvm.bash", "kvm.zsh"]


@record()
class InstallReport:
    """What kvminst did, for the CLI to print."""

    dataset: str
    path: Path
    upgraded: bool
    created: list = field(default_factory=list)
    installed: list = field(default_factory=list)
    pinned: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    schedule: str = ""  # what became of the snapshot schedule (schedule.py)
    compiled: str = ""  # what was done to have kvm's modules compiled (host/bytecode.py)
    python: str = sys.executable  # the interpreter the ./NAME launchers run (their shebang)


def check_pool(pool):
    """Refuse an unknown, unhealthy, full or read-only pool; its mounted root folder, or None."""
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
    mnt = props.get("mountpoint")
    return mnt if props.get("mounted") == "yes" and mnt and mnt.startswith("/") else None


def _read_only_mount(props):
    """True when the pool's root filesystem is mounted but refuses writes (EROFS)."""
    mnt = props.get("mountpoint")
    if props.get("mounted") != "yes" or not mnt or not mnt.startswith("/"):
        return False
    try:
        probe = Path(mnt) / f"{PROBE}{os.getpid()}"
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
    probe = Path(path) / f"{PROBE}{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise StateError(f"{path} is not writable ({exc.strerror})") from None


def check_python(python):
    """The interpreter the launchers are to run, absolute; UsageError unless it is an executable
    that imports kvm (a shebang to anything else makes every ./NAME of the root fail)."""
    path = Path(python).expanduser()
    if not path.is_absolute():
        raise UsageError(f"--python {python}: give an absolute path (the launchers' shebang needs one)")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise UsageError(f"--python {python}: no such executable file")
    # -c puts the current folder first on sys.path: dropped, as a launcher run elsewhere lacks it
    res = host.run([str(path), "-c", "import sys; del sys.path[0]; import kvm.cli"], mutating=False, check=False)
    if res.status != 0:
        raise UsageError(f"--python {python}: it cannot import kvm (install kvm for that interpreter: "
                         f"{python} -m pip install kvm)")
    return str(path)


def moved_python_risk(python):
    """Why launchers running `python` break when a folder moves, or None. Their shebang names the
    interpreter's path: a package's /usr/local/bin/python3.11 stays, a virtualenv or a checkout
    (kvm imported from it through an editable install) may be moved or deleted."""
    if python != sys.executable:
        return None  # chosen with --python: the admin's call
    if sys.prefix != sys.base_prefix:
        return f"it is the virtualenv {sys.prefix}'s: they break if it moves"
    if (PACKAGE_DIR.parent / "setup.cfg").is_file():
        return f"it imports kvm from the checkout {PACKAGE_DIR.parent}: they break if it moves"
    return None


def install(pool, repin=False, python=None, completion=None):
    """Install or upgrade kvm on `pool`; a failure leaves no new dataset behind. python: the
    interpreter the launchers run (default: this one); completion: root path -> {name: text} of
    the shell completion files (made from the CLI's parsers, which the library does not import)."""
    if not host.is_root() and not host.dry_run():
        raise PermissionDenied("you need to be root to install kvm")
    python = check_python(python) if python else sys.executable
    pool_mnt = check_pool(pool)
    if host.dry_run():  # changes nothing, so needs no lock (and makes no lock file)
        return _install_locked(pool, repin, pool_mnt, python, completion)
    held = lock.try_acquire(lock.host_dir() / LOCK, f"{os.getpid()} kvminst\n")
    if held is None:
        found = lock.holder(lock.host_dir() / LOCK) or (0, "")
        raise Refused(f"another kvminst is running ({lock.describe_holder(found)}): try again when it is done")
    with held:
        return _install_locked(pool, repin, pool_mnt, python, completion)


def _install_locked(pool, repin, pool_mnt, python, completion):
    ds = f"{pool}/kvm"
    upgraded = zfs.lzc_exists(ds)
    report = InstallReport(dataset=ds, path=None, upgraded=upgraded, python=python)
    created = []
    try:
        if upgraded:
            report.path = _existing_root(ds)
            if not zfs.lzc_exists(ds + "/vm"):
                zfs.lzc_create(ds + "/vm")
                created.append(ds + "/vm")
        else:
            report.path = _create_root(ds, created)
        if not host.dry_run():
            _writable(report.path)
        if upgraded and host.dry_run() is False and zfs.get_prop(ds, ROOT_PROP) is None:
            zfs.set_prop(ds, ROOT_PROP, "yes")
        clean_leftovers(report.path, pool_mnt)
        _install_files(report, repin)
        if completion:
            _install_completion(report, completion(report.path))
        if not host.dry_run():
            _compile(report)
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


def _compile(report):
    """kvm's modules compiled for the launchers' interpreter (a checkout run as is has none): each
    command would compile them again otherwise. Says what it did, or warns."""
    from kvm.host.bytecode import ensure_compiled
    got = ensure_compiled(report.python)
    if got is None:
        report.warnings.append(f"could not check that kvm's modules are compiled for {report.python}")
        return
    done, failed, folder = got
    if failed:
        report.warnings.append(f"{failed} of kvm's modules in {folder} could not be compiled (is the folder "
                               f"writable?): each command compiles them again; run as their owner: "
                               f"{report.python} -m compileall -q {folder}")
    elif done:
        report.compiled = f"compiled {done} of kvm's modules in {folder} for {report.python}"


def _create_root(ds, created):
    """Create POOL/kvm (marked) and POOL/kvm/vm; its mountpoint."""
    # marked as it is made: a kvminst killed right after finds its own root and completes it
    zfs.lzc_create(ds, props={ROOT_PROP: "yes"})
    created.append(ds)
    zfs.lzc_create(ds + "/vm")
    created.append(ds + "/vm")
    mnt = zfs.get_prop(ds, "mountpoint") if not host.dry_run() else f"/{ds}"
    if not mnt or mnt in ("none", "legacy"):
        raise StateError(f"{ds} has no mountpoint ({mnt}): set one and run kvminst again")
    return Path(mnt)


def clean_leftovers(root, pool_mnt=None):
    """Remove what a killed kvminst left behind: the temp files of its atomic writes (named
    .FILE.XXXX.tmp beside FILE) and its probe files. Run under the kvminst lock: none is live."""
    ours = {root: [*ROOT_COMMANDS, "functions", MARKER], root / "templates": TEMPLATE_FILES,
            root / "rc.d": ["kvm"], root / COMPLETION_DIR: COMPLETION_FILES, root / "firmware": list(hypervisor.firmware_names()) + [MANIFEST]}
    for folder, names in ours.items():
        for name in names:
            for tmp in folder.glob(f".{name}.*.tmp"):
                host.remove_file(tmp)
    for folder in {root, Path(pool_mnt)} if pool_mnt else {root}:
        for probe in folder.glob(PROBE + "*"):
            pid = probe.name[len(PROBE):]
            if pid.isdigit() and int(pid) != os.getpid():
                host.remove_file(probe)


def _install_files(report, repin):
    root = report.path
    p = paths.current()
    for command in ROOT_COMMANDS:
        text = render("launcher.j2", python=report.python, command=command, version=__version__)
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
    if not (root / "iso").is_dir():
        host.make_dirs(root / "iso")  # where ISOs go that any VM may use (kvm.conf(5) AllowPath)
        report.installed.append("iso/")
    pin_firmware(root, report, repin)
    report.schedule = schedule.install(root, platform.current())
    host.write_file(root / MARKER, f"{report.dataset}\n")
    if not host.dry_run():
        runfiles.record_root(root)  # RUN_DIR/ROOT_ID/.root: the other roots' name checks find it


def _install_completion(report, texts):
    """ROOT/completion/: the bash and zsh completion of the commands just installed."""
    host.make_dirs(report.path / COMPLETION_DIR)
    for name, text in texts.items():
        host.write_file(report.path / COMPLETION_DIR / name, text, mode=0o644)
    report.installed.append(f"{COMPLETION_DIR}/")


def _find_firmware(name, kind, p):
    if kind == "grub":
        return p.grub_bhyve if p.grub_bhyve.is_file() else None
    extra = (firmware.ovmf_dir(),) if kind == "ovmf" else ()
    for folder in (*p.firmware_dirs, *extra):
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
    """Copy installed firmware into ROOT/firmware and record it in SHA256SUMS.

    Already pinned files are kept unless `repin`: pinning exists to protect the VMs
    from a package upgrade, so an upgrade of kvm must not silently re-pin. Only the
    files pinned by this run get (new) manifest entries: a pinned file changed since,
    or anything else lying in firmware/, is never approved by an upgrade.
    """
    fw_dir = root / "firmware"
    host.make_dirs(fw_dir)
    sums = read_manifest(fw_dir)
    missing = set()
    hv = hypervisor.current()
    for name, kind, package in hv.firmware_files:
        target = fw_dir / name
        if target.exists() and not repin:
            if name not in sums:
                report.warnings.append(f"{target} is pinned but not in {MANIFEST}: kvminst --repin "
                                       "pins the host's copy and records it")
            continue
        source = _find_firmware(name, kind, paths.current())
        if source is None:
            missing.add(package)
            continue
        host.copy_file(source, target, mode=0o755 if kind == "grub" else 0o644)
        sums[name] = None if host.dry_run() else sha256(target)
        report.pinned.append(f"{name} <- {source}")
    warning = hv.firmware_warning(missing, platform.current())
    if warning:
        report.warnings.append(warning)
    if report.pinned and not host.dry_run():
        host.write_file(fw_dir / MANIFEST, "".join(f"{d}  {n}\n" for n, d in sums.items()))


def read_manifest(fw_dir):
    """{file name: hex digest} of firmware/SHA256SUMS, in its order ({} when there is none)."""
    try:
        lines = (Path(fw_dir) / MANIFEST).read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        digest, _, name = line.partition("  ")
        if name:
            out[name] = digest
    return out


def verify_firmware(root):
    """[(file name, OK | FAILED | MISSING)] of the pins listed in ROOT/firmware/SHA256SUMS.

    NotFound when there is no manifest (nothing pinned, or a shell-toolkit root).
    """
    fw_dir = Path(root) / "firmware"
    if not (fw_dir / MANIFEST).is_file():
        raise NotFound(f"no {fw_dir / MANIFEST}: nothing pinned to check (kvminst pins the host's firmware)")
    out = []
    for name, digest in read_manifest(fw_dir).items():
        path = fw_dir / name
        if not path.is_file():
            out.append((name, "MISSING"))
        else:
            out.append((name, "OK" if sha256(path) == digest else "FAILED"))
    return out


def uninstall_plan(root):
    """What --uninstall removes: (rc.d scripts of ours, rc.conf variables, the dataset)."""
    return our_scripts(root)


def uninstall(root, dataset):
    """Remove our rc.d scripts and rc.conf variables, then destroy the install dataset."""
    running = [v.name for v in vmmod.list_vms(root) if vmmod.runtime(v).active]
    if running:
        raise Refused(f"VMs still running: {' '.join(running)}; stop them first")
    for script in uninstall_plan(root):
        remove_script(script)
    schedule.remove(root.path)
    zfs.destroy_recursive(dataset)

