"""vmsend benchmarks (bench/run runs this after bench.py): two throw-away pools on this host.

1. Downtime of a warm migration of a running VM (bhyve simulator) with a 512 MiB disk of which
   8 MiB changed since the last send, beside a cold migration of the same VM (one full send
   while it is stopped). Target: warm <= 0.4 s (issue 25; it was 2 s).
2. Throughput of a full send through vmsend vs a bare `zfs send | zfs receive` of the same
   data (512 MiB and 2 GiB of random data; medians of 3 turns). Targets (issue 25): ratio >= 0.75
   at 512 MiB, >= 0.95 at 2 GiB.
3. An 8 MiB increment of a stopped VM: vmsend --copy vs a bare `zfs send -i | zfs receive` of an
   increment of the same size, in turns (medians of 5). Target: vmsend <= bare + 0.2 s.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests import testpools  # noqa: E402 - the checkout's: the pools the bench may destroy

SIM_BIN = REPO / "tests" / "sim" / "bin"
POOL_DIR = Path("/dev/shm" if os.path.isdir("/dev/shm") else "/var/tmp")
DISK_MIB, CHANGED_MIB = 512, 8
SEND_MIB = (512, 2048)   # full sends measured for the throughput ratio
RATIO_TARGET = {512: 0.75, 2048: 0.95}
INCREMENT_MIB, INCREMENT_TURNS, INCREMENT_SLACK_S = 8, 5, 0.2


def sh(*argv, env=None, cwd=None, check=True):
    res = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, argv))}: {res.stderr.strip()}")
    return res


def make_env(sysroot):
    for sub in ("rc.d", "vmm", "dev", "run", "firmware", "sim"):
        (sysroot / sub).mkdir(parents=True, exist_ok=True)
    (sysroot / "rc.conf").write_text("")
    (sysroot / "firmware" / "BHYVE_UEFI.fd").write_bytes(b"UEFI" * 64)
    (sysroot / "firmware" / "BHYVE_UEFI_VARS.fd").write_bytes(b"VARS" * 16)
    env = dict(os.environ, KVM_RCDIR=str(sysroot / "rc.d"), KVM_RCCONF=str(sysroot / "rc.conf"),
               KVM_PERIODIC_DIR=str(sysroot / "periodic"), KVM_CRON_DIR=str(sysroot / "cron.d"),
               KVM_VMM_DIR=str(sysroot / "vmm"), KVM_DEV_DIR=str(sysroot / "dev"),
               KVM_RUN_DIR=str(sysroot / "run"), KVM_FIRMWARE_DIRS=str(sysroot / "firmware"),
               KVM_GRUB_BHYVE=str(SIM_BIN / "grub-bhyve"), KVM_SIM_DIR=str(sysroot / "sim"),
               KVM_SIM_HOME=str(SIM_BIN.parent), PYTHONPATH=str(REPO),
               # the simulator's bhyve: without this a Linux host runs qemu, which boots nothing
               # from the random disk, ignores the power button and is forced off after 60 s
               KVM_HYPERVISOR="bhyve", KVM_ROOTS="",  # the bench's roots only: not a test run's VM names
               PATH=f"{SIM_BIN}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    env.pop("KVM_ROOT", None)
    (sysroot / "sim" / "script").mkdir(exist_ok=True)
    (sysroot / "sim" / "script" / "web").write_text("run\n")
    return env


def make_pool(size_gib=2):
    name = f"kvmb{uuid.uuid4().hex[:8]}"
    img = POOL_DIR / f"{name}.img"
    testpools.create(name, img, size_gib << 30)  # recorded first: the only pools the bench destroys
    return name, img


def kvm(env, root, *args):
    return sh(sys.executable, "-m", "kvm", "--root", root, *args, env=env, check=False)


def write_random(path, mib, offset_mib=0):
    with open(path, "r+b" if path.exists() else "wb") as fh:
        fh.seek(offset_mib << 20)
        for _ in range(mib):
            fh.write(os.urandom(1 << 20))
        fh.flush()
        os.fsync(fh.fileno())


def downtime(res):
    found = re.search(r"downtime ([0-9.]+)s", res.stdout)
    if res.returncode != 0 or not found:
        raise SystemExit(f"bench: vmsend failed: {res.stderr.strip()}")
    return float(found.group(1))


def destroy(ds, seconds=30):
    """zfs destroy -r, again while zfs-fuse says busy (it does for a while after files close)."""
    end = time.monotonic() + seconds
    while True:
        res = sh("zfs", "destroy", "-r", ds, check=False)
        if res.returncode == 0 or "does not exist" in res.stderr:
            return
        if time.monotonic() > end:
            raise SystemExit(f"bench: cannot destroy {ds}: {res.stderr.strip()}")
        time.sleep(0.5)


def fresh_vm(env, src, dst, dpool):
    """web on src with a 512 MiB disk of random data, no copy on dst, not running."""
    kvm(env, dst, "stop", "-f", "web")
    destroy(f"{dpool}/kvm/vm/web")
    disk = Path(src) / "vm" / "web" / "disk"
    if not disk.exists():
        sh(sys.executable, "-m", "kvm", "--root", src, "vmcreate", "web", "-y", "--disk-size", "1G", env=env)
        write_random(disk, DISK_MIB)
    sh("zfs", "inherit", "kvm:migrated", f"{Path(src).parent.name}/kvm/vm/web", check=False)
    return disk


def bench_downtime(env, src, dst, dpool):
    disk = fresh_vm(env, src, dst, dpool)
    kvm(env, src, "start", "-b", "web")
    first = kvm(env, src, "vmsend", "web", "--local", dst, "--copy")
    if first.returncode != 0:
        raise SystemExit(f"bench: vmsend --copy failed: {first.stderr.strip()}")
    write_random(disk, CHANGED_MIB, offset_mib=100)
    warm = downtime(kvm(env, src, "vmsend", "web", "--local", dst, "-y", "--no-start"))
    fresh_vm(env, src, dst, dpool)
    kvm(env, src, "start", "-b", "web")
    cold = downtime(kvm(env, src, "vmsend", "web", "--local", dst, "-y", "--cold", "--no-start"))
    return warm, cold


def bench_throughput(env, src, dst, spool, dpool, mib, turns=3):
    """Medians over `turns` of a full send of a VM holding `mib` MiB of random data: a bare
    `zfs send SNAP | zfs receive` into DEST's vm/ folder, and `vmsend --copy`, in turns."""
    name = f"t{mib}"
    disk = Path(src) / "vm" / name / "disk"
    if not disk.exists():
        sh(sys.executable, "-m", "kvm", "--root", src, "vmcreate", name, "-y", "--disk-size", f"{mib + 512}M", env=env)
        write_random(disk, mib)
    bare, through = [], []
    for turn in range(turns):
        snap = f"{spool}/kvm/vm/{name}@bench{turn}"
        sh("zfs", "snapshot", snap)
        t0 = time.monotonic()
        sh("sh", "-c", f"zfs send {snap} | zfs receive {dpool}/kvm/vm/bare")
        bare.append(time.monotonic() - t0)
        destroy(f"{dpool}/kvm/vm/bare")
        sh("zfs", "destroy", snap)
        t0 = time.monotonic()
        res = kvm(env, src, "vmsend", name, "--local", dst, "--copy")
        through.append(time.monotonic() - t0)
        if res.returncode != 0:
            raise SystemExit(f"bench: vmsend failed: {res.stderr.strip()}")
        destroy(f"{dpool}/kvm/vm/{name}")
    return statistics.median(bare), statistics.median(through)


def bench_increment(env, src, dst, spool, dpool, turns=INCREMENT_TURNS):
    """Medians of an INCREMENT_MIB increment of a stopped VM: bare `zfs send -i | zfs receive -F`
    into a bare copy, and `vmsend --copy` into DEST's copy, in turns (each after its own write)."""
    name = "inc"
    disk = Path(src) / "vm" / name / "disk"
    sh(sys.executable, "-m", "kvm", "--root", src, "vmcreate", name, "-y", "--disk-size", "256M", env=env)
    write_random(disk, 32)
    ds, bare_ds = f"{spool}/kvm/vm/{name}", f"{dpool}/kvm/vm/bareinc"
    sh("zfs", "snapshot", f"{ds}@bi0")
    sh("sh", "-c", f"zfs send {ds}@bi0 | zfs receive {bare_ds}")
    res = kvm(env, src, "vmsend", name, "--local", dst, "--copy")
    if res.returncode != 0:
        raise SystemExit(f"bench: vmsend failed: {res.stderr.strip()}")
    bare, through = [], []
    for turn in range(1, turns + 1):
        write_random(disk, INCREMENT_MIB, offset_mib=(turn * INCREMENT_MIB) % 200)
        sh("zfs", "snapshot", f"{ds}@bi{turn}")
        t0 = time.monotonic()
        sh("sh", "-c", f"zfs send -i {ds}@bi{turn - 1} {ds}@bi{turn} | zfs receive -F {bare_ds}")
        bare.append(time.monotonic() - t0)
        write_random(disk, INCREMENT_MIB, offset_mib=(turn * INCREMENT_MIB + 100) % 200)
        t0 = time.monotonic()
        res = kvm(env, src, "vmsend", name, "--local", dst, "--copy")
        through.append(time.monotonic() - t0)
        if res.returncode != 0:
            raise SystemExit(f"bench: vmsend failed: {res.stderr.strip()}")
    destroy(bare_ds)
    return statistics.median(bare), statistics.median(through)


def main():
    made = []
    sysroot = Path(tempfile.mkdtemp(prefix="kvmbench", dir="/var/tmp"))
    try:
        env = make_env(sysroot)
        (spool, simg), (dpool, dimg) = make_pool(5), make_pool(4)
        made += [(spool, simg), (dpool, dimg)]
        for pool in (spool, dpool):
            sh(sys.executable, "-m", "kvm", "kvminst", "-p", pool, "-y", env=env)
        src, dst = f"/{spool}/kvm", f"/{dpool}/kvm"
        warm, cold = bench_downtime(env, src, dst, dpool)
        out = {"warm_downtime_s": warm, "cold_downtime_s": cold}
        print(f"warm migration downtime ({DISK_MIB} MiB disk, {CHANGED_MIB} MiB changed): {warm:.2f} s "
              f"(target <= 0.4 s, issue 25); cold: {cold:.2f} s")
        sizes = [int(x) for x in sys.argv[1].split(",")] if len(sys.argv) > 1 else SEND_MIB  # e.g. 512
        for mib in sizes:
            bare, through = bench_throughput(env, src, dst, spool, dpool, mib)
            out[f"send_{mib}MiB"] = {"bare_s": bare, "vmsend_s": through, "ratio": bare / through}
            print(f"full send of {mib} MiB: bare zfs send | zfs receive {bare:.2f} s, vmsend {through:.2f} s "
                  f"(+ {through - bare:.2f} s), ratio {bare / through:.2f} (target >= {RATIO_TARGET[mib]}); "
                  f"medians of 3 turns")
        bare, through = bench_increment(env, src, dst, spool, dpool)
        out["increment"] = {"bare_s": bare, "vmsend_s": through}
        print(f"{INCREMENT_MIB} MiB increment of a stopped VM: bare zfs send -i | zfs receive {bare:.3f} s, "
              f"vmsend {through:.3f} s (+ {through - bare:.3f} s, target <= + {INCREMENT_SLACK_S} s); "
              f"medians of {INCREMENT_TURNS} turns")
        print(json.dumps(out))
    finally:
        for pool, img in made:
            sh(sys.executable, "-m", "kvm", "--root", f"/{pool}/kvm", "stop", "-f", "web", check=False)
            for _ in range(40):
                if testpools.destroy(pool, img):
                    break
                time.sleep(0.5)
        subprocess.run(["rm", "-rf", str(sysroot)])


if __name__ == "__main__":
    main()
