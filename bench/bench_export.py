"""vmexport / vmrestore throughput against the bare ZFS commands, on a throw-away pool.

A VM with a 2 GiB disk of random data (incompressible: every byte is streamed), snapshot s1;
then, in turns (bare, ours, bare, ours ...; medians):

1. `zfs send POOL/kvm/vm/web@s1 > FILE` against `vmexport web FILE --snapshot s1`;
2. `zfs receive POOL/kvm/r < FILE` against `vmrestore FILE copy` (which reads the file twice:
   its checksums are verified in full before anything is received).

Throughput ratio = bare time / our time. Target (issue 23): vmexport >= 0.9.

    python3 bench/bench_export.py [--mib 2048] [--turns 3] [--json OUT]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(1, str(REPO))
from bench_migrate import POOL_DIR, kvm, make_env, make_pool, sh, write_random  # noqa: E402
from tests import testpools  # noqa: E402


def timed(argv, env=None, stdin=None, stdout=None):
    t0 = time.monotonic()
    res = subprocess.run([str(a) for a in argv], env=env, stdin=stdin, stdout=stdout or subprocess.PIPE,
                         stderr=subprocess.PIPE)
    took = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, argv))}: {res.stderr.decode(errors='replace').strip()}")
    return took


def destroy(name):
    for _ in range(40):
        res = subprocess.run(["zfs", "destroy", "-r", name], capture_output=True, text=True)
        if res.returncode == 0 or "does not exist" in res.stderr:
            return
        time.sleep(0.5)
    raise SystemExit(f"bench: cannot destroy {name}: {res.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=2048)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    pool, img = make_pool(size_gib=max(3, 2 * args.mib // 1024 + 2))
    work = Path(tempfile.mkdtemp(prefix="kvmbx", dir=POOL_DIR))
    sysroot = Path(tempfile.mkdtemp(prefix="kvmbxsys", dir="/var/tmp"))
    try:
        env = make_env(sysroot)
        root = f"/{pool}/kvm"
        sh(sys.executable, "-m", "kvm", "kvminst", "-p", pool, "-y", env=env)
        vm = f"bx{uuid.uuid4().hex[:8]}"   # bhyve's names are host-wide: never another root's VM
        res = kvm(env, root, "vmcreate", vm, "-y", "--disk-size", f"{args.mib}M", "--no-network",
                  "--vnc", "no", "--com", "yes")
        if res.returncode != 0:
            raise SystemExit(f"bench: vmcreate: {res.stderr.strip()}")
        disk = Path(root) / "vm" / vm / "disk"
        write_random(disk, args.mib)
        sh("zfs", "snapshot", f"{pool}/kvm/vm/{vm}@s1")
        times = {"zfs send > file": [], "vmexport": [], "zfs receive < file": [], "vmrestore": []}
        for _ in range(args.turns):
            bare, ours = work / "bare.zs", work / f"{vm}.kvmexport"
            with open(bare, "wb") as out:
                times["zfs send > file"].append(timed(["zfs", "send", f"{pool}/kvm/vm/{vm}@s1"], stdout=out))
            times["vmexport"].append(timed([sys.executable, "-m", "kvm", "--root", root, "vmexport", vm, ours,
                                            "--snapshot", "s1"], env=env))
            with open(bare, "rb") as inp:
                times["zfs receive < file"].append(timed(["zfs", "receive", f"{pool}/kvm/r"], stdin=inp))
            destroy(f"{pool}/kvm/r")
            times["vmrestore"].append(timed([sys.executable, "-m", "kvm", "--root", root, "vmrestore", ours,
                                             f"{vm}c"], env=env))
            destroy(f"{pool}/kvm/vm/{vm}c")
            sizes = (bare.stat().st_size, ours.stat().st_size)
            bare.unlink()
            ours.unlink()
        med = {k: statistics.median(v) for k, v in times.items()}
        mib = sizes[0] / (1 << 20)
        print(f"stream {mib:.0f} MiB (export file {sizes[1] / (1 << 20):.1f} MiB); medians of {args.turns} turns, "
              f"load {os.getloadavg()[0]:.1f}")
        print("| figure | time | MiB/s | ratio (bare / ours) |")
        print("|---|---|---|---|")
        for bare_key, ours_key in (("zfs send > file", "vmexport"), ("zfs receive < file", "vmrestore")):
            for key in (bare_key, ours_key):
                ratio = f"{med[bare_key] / med[key]:.2f}" if key == ours_key else ""
                print(f"| {key} | {med[key]:.1f} s | {mib / med[key]:.0f} | {ratio} |")
        if args.json:
            Path(args.json).write_text(json.dumps({"times": times, "medians": med, "sizes": sizes}, indent=1))
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sysroot, ignore_errors=True)
        for _ in range(40):
            if testpools.destroy(pool, img):
                break
            time.sleep(0.5)


if __name__ == "__main__":
    main()
