"""Shared fixtures: a real file-backed ZFS pool per test run, a fresh install per test,
an environment whose every system path points into the test's own folder, and the
FreeBSD tool simulator first on PATH."""

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import testpools

REPO = Path(__file__).resolve().parent.parent
SIM_BIN = REPO / "tests" / "sim" / "bin"
IN_CI = os.environ.get("CI") == "true"
# Test pools live on files in RAM when there is a tmpfs: zfs-fuse syncs often, and on a busy
# disk its FUSE requests stall for long enough to time commands out. Still real ZFS.
POOL_DIR = Path(os.environ.get("KVM_TEST_POOL_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else "/var/tmp"))


def _zfs_ready():
    if not shutil.which("zpool") or not shutil.which("zfs"):
        return "zfs/zpool commands not installed (apt-get install zfs-fuse)"
    res = subprocess.run(["zpool", "list", "-H"], capture_output=True, text=True)
    if res.returncode != 0:
        return f"ZFS not answering (is zfs-fuse running?): {res.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def pool():
    """A uniquely named file-backed pool for this test run, destroyed at the end."""
    why = _zfs_ready()
    if why:
        if IN_CI:
            pytest.fail(f"CI=true and real ZFS is missing: {why}")
        pytest.skip(why)
    name = f"kvmt{uuid.uuid4().hex[:8]}"
    img = POOL_DIR / f"{name}.img"
    testpools.create(name, img, 2 << 30)  # recorded first: the only pools the suite ever destroys
    yield name
    destroy_pool(name, img)


def destroy_pool(name, img, seconds=20):
    """zpool destroy -f with patience of a pool this run made (tests/testpools.py refuses any
    other); the backing file goes only with the pool (a pool whose file is gone while it is still
    imported makes zfs-fuse fault it)."""
    end = time.time() + seconds
    while not testpools.destroy(name, img):
        if time.time() > end:
            print(f"conftest: pool {name} could not be destroyed; its file {img} is kept", file=sys.stderr)
            return
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def bhyve_backend(monkeypatch):
    """In-process library calls get the bhyve backend on the FreeBSD platform (golden argv, pins,
    rc.d, the simulator) whatever the host's own are (qemu on Linux); commands get them from `env`.
    tests/e2e asks for qemu on Linux."""
    monkeypatch.setenv("KVM_HYPERVISOR", "bhyve")
    monkeypatch.setenv("KVM_PLATFORM", "freebsd")
    monkeypatch.setenv("KVM_ROOTS", "")  # the roots of this test's run dir only (see `env`)


@pytest.fixture
def sysroot(tmp_path):
    """Folders standing in for the system paths (rc.d, rc.conf, /dev/vmm, /var/run/kvm ...).

    World-readable, as the real ones are, so commands that need no root can be run as nobody.
    """
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="kvmsys", dir="/var/tmp"))
    d.chmod(0o755)
    for sub in ("rc.d", "vmm", "dev", "run", "firmware", "sim", "cron.d"):
        (d / sub).mkdir(parents=True)
    (d / "rc.conf").write_text("# test rc.conf\nhostname=\"testhost\"\n")
    (d / "firmware" / "BHYVE_UEFI.fd").write_bytes(b"UEFI-CODE-v1\n" * 64)
    (d / "firmware" / "BHYVE_UEFI_VARS.fd").write_bytes(b"UEFI-VARS-v1\n" * 16)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def env(sysroot):
    """Environment for commands run as a user types them: every path in the test's folder."""
    e = dict(os.environ)
    e.update({
        "KVM_RCDIR": str(sysroot / "rc.d"), "KVM_RCCONF": str(sysroot / "rc.conf"),
        "KVM_VMM_DIR": str(sysroot / "vmm"), "KVM_DEV_DIR": str(sysroot / "dev"),
        "KVM_RUN_DIR": str(sysroot / "run"), "KVM_FIRMWARE_DIRS": str(sysroot / "firmware"),
        # kvminst's snapshot schedule (periodic script, cron file): never the host's
        "KVM_PERIODIC_DIR": str(sysroot / "periodic" / "daily"), "KVM_CRON_DIR": str(sysroot / "cron.d"),
        "KVM_GRUB_BHYVE": str(SIM_BIN / "grub-bhyve"), "KVM_SIM_DIR": str(sysroot / "sim"), "KVM_SIM_HOME": str(SIM_BIN.parent),
        # this interpreter's folder next: the simulator's `python3` has the test extras (setproctitle)
        "PATH": f"{SIM_BIN}:{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(REPO),
        "KVM_HYPERVISOR": "bhyve",  # the suite runs the bhyve simulator on Linux too (tests/e2e: qemu)
        "KVM_PLATFORM": "freebsd",  # with FreeBSD's rc.d, periodic and tools (the stand-ins on PATH)
    })
    e.pop("KVM_ROOT", None)
    # the host's other roots are those of this test's run dir only (the pools of other test runs
    # on this machine are marked kvm:root too): see vm.check_free_on_host
    e["KVM_ROOTS"] = ""
    return e


def kvm(env, *args, input=None, cwd=None, timeout=60):
    """Run `python -m kvm ARGS` (the umbrella command) and return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "kvm", *map(str, args)], env=env, input=input,
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def cmd(root, env, name, *args, input=None, timeout=60):
    """Run ./NAME ARGS in the install root, as a user types it."""
    return subprocess.run([f"./{name}", *map(str, args)], env=env, input=input, cwd=root,
                          capture_output=True, text=True, timeout=timeout)


def destroy_dataset(name, seconds=20):
    """zfs destroy -r with patience: zfs-fuse says "busy" for a while after files close.

    Never `zfs unmount -f`: a forced unmount of a zfs-fuse filesystem whose files are still open
    sends zfs-fuse into an endless teardown loop that hangs every pool. Processes a test left in
    the filesystem (a guest, a hook) are killed instead."""
    end = time.time() + seconds
    while True:
        res = subprocess.run(["zfs", "destroy", "-r", name], capture_output=True, text=True)
        if res.returncode == 0 or "does not exist" in res.stderr:
            return
        if time.time() > end:
            raise RuntimeError(f"cannot destroy {name}: {res.stderr.strip()}")
        if "busy" in res.stderr:
            kill_users(f"/{name}")
        time.sleep(0.3)


def kill_users(folder):
    """SIGKILL every process whose folder, root or open files lie under `folder`."""
    prefix = folder.rstrip("/") + "/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            links = [os.readlink(proc / "cwd"), os.readlink(proc / "root")]
            links += [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if any(link == folder or link.startswith(prefix) for link in links):
            try:
                os.kill(int(proc.name), 9)
            except OSError:
                pass


@pytest.fixture
def install(pool, env):
    """A fresh kvm install on the test pool; destroyed afterwards."""
    destroy_dataset(f"{pool}/kvm")  # never inherit a previous test's leftovers
    res = kvm(env, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    root = Path(f"/{pool}/kvm")
    yield root
    subprocess.run(["pkill", "-f", f"kvm.*{root}"], capture_output=True)
    _kill_supervisors(env)
    destroy_dataset(f"{pool}/kvm")


def run_folder(env, root, name):
    """The VM's run folder, RUN_DIR/ROOT_ID/NAME: its lock, conf.lock, state, stop (kvm/host/runfiles.py)."""
    from kvm.host import runfiles
    return Path(env["KVM_RUN_DIR"]) / runfiles.root_id(root) / name


def _kill_supervisors(env):
    """End any supervisor or simulated bhyve a test left running."""
    import json
    run = Path(env["KVM_RUN_DIR"])
    for state in [*run.glob("*/*/state"), *run.glob("*.state")]:
        try:
            data = json.loads(state.read_text())
        except ValueError:
            continue
        for key in ("supervisor", "bhyve"):
            pid = int(data.get(key) or 0)
            if pid:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
    # and whatever still runs with this test's run dir in its environment (a simulated bhyve whose
    # supervisor was killed before it recorded it): bhyve's names are host-wide, so a stray
    # `bhyve: web` would be every later test's `web`
    mark = f"KVM_RUN_DIR={run}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if mark in fh.read().split(b"\0"):
                    os.kill(int(entry), 9)
        except OSError:
            pass


def snapshot_tree(path):
    """{relative path: (size, mtime_ns, mode)} of a folder, to prove nothing changed."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(path))] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def datasets(pool):
    """Every dataset and snapshot name of the pool."""
    res = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", pool],
                         capture_output=True, text=True)
    if res.returncode != 0:
        res = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", pool], capture_output=True, text=True)
    snaps = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot"], capture_output=True, text=True)
    names = set(res.stdout.split()) | {s for s in snaps.stdout.split() if s.startswith(pool + "/")}
    return names - {pool}


@pytest.fixture
def scratch_pool(pool):
    """Factory for extra small pools a test may break (full, read-only...); all destroyed afterwards."""
    made = []

    def make(size_mb=128):
        name = f"kvms{uuid.uuid4().hex[:8]}"
        img = POOL_DIR / f"{name}.img"
        made.append((name, img))
        testpools.create(name, img, size_mb << 20)
        return name
    yield make
    for name, img in made:
        destroy_pool(name, img)


def nobody_env(env):
    """argv prefix and env to run a command as an unprivileged user."""
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def bare_flags(flags):
    """The flags that keep `vmcreate -y` to the bare VM the suite was written for (no disk, no
    network, no console) for what FLAGS do not ask for: -y alone gives all three now (issue 14;
    tests/cli/test_vmcreate_defaults.py tests those defaults)."""
    given = set(flags)
    bare = [] if given & {"--disk-size", "--no-disk", "--from"} else ["--no-disk"]
    bare += [] if given & {"--bridge", "--tap", "--uplink", "--no-network", "--switch"} else ["--no-network"]
    bare += [] if "--vnc" in given else ["--vnc", "no"]
    return bare + ([] if "--com" in given else ["--com", "no"])


def create_vm(root, env, name, *flags):
    """./vmcreate NAME -y FLAGS, asserting success: the bare VM but for what FLAGS ask for."""
    res = cmd(root, env, "vmcreate", name, "-y", *bare_flags(flags), *flags)
    assert res.returncode == 0, res.stderr
    return root / "vm" / name


def calls(env, tool=None):
    """The simulator's recorded calls: [(tool, argv)]."""
    import json
    path = Path(env["KVM_SIM_DIR"]) / "calls.log"
    if not path.exists():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(c["tool"], c["argv"]) for c in out if tool is None or c["tool"] == tool]


def one_line_error(res, *needles, status=1):
    """Assert a failed command printed exactly one stderr line holding every needle."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == status, (res.returncode, res.stdout, res.stderr)
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def fake_iso(path, size=64 << 10):
    """A file an ISO reader takes for one: ISO 9660's signature in its sector 16 (kvm refuses
    other files as an ISO outside the VM folder and ROOT/iso)."""
    with open(path, "wb") as fh:
        fh.write(b"\0" * 32768 + b"\x01CD001\x01")
        fh.truncate(size)
    return path


def as_nobody(env, argv, cwd):
    """Run argv as an unprivileged user."""
    return subprocess.run(nobody_env(env) + list(argv), env=env, capture_output=True, text=True, cwd=cwd)


SUMMARY_KINDS = ("failed", "passed", "skipped", "xfailed", "xpassed", "error")


def pytest_sessionstart(session):
    session.config._kvm_started = time.time()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The run's counts as pytest's last line says them, into the file KVM_TEST_SUMMARY names
    (tests/run prints them again at its very end, after a re-run's own summary)."""
    path = os.environ.get("KVM_TEST_SUMMARY")
    if not path:
        return
    stats = terminalreporter.stats
    parts = [f"{len(stats[k])} {k if k != 'error' else 'errors'}" for k in SUMMARY_KINDS if stats.get(k)]
    took = time.time() - getattr(config, "_kvm_started", time.time())
    Path(path).write_text(f"{', '.join(parts) or 'no tests ran'} in {took:.0f}s (exit {int(exitstatus)})\n")
