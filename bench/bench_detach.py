"""`./start -b NAME` -> the hypervisor's exec, for this checkout's kvm and, with --vs, another's.

What is timed: from running `./start -b vm0000` in the root to the exec of the hypervisor (bhyve's
sh stand-in, which stamps the time it runs: bench.py's), and to `./start -b` returning (which
polls the supervisor's state file every 50 ms, so that figure moves in steps). Between two runs
the VM is stopped with `./stop`. With --vs DIR, the same bed runs DIR's kvm (a checkout: its
folder goes on PYTHONPATH) in turns with this one (one run of each, then again), so a slow spell
of the machine slows both; the ratio is taken pair by pair. Bytecode is compiled first for both,
as an installed package has it. The bhyve backend on the FreeBSD platform, as the suite runs it.

    python bench/bench_detach.py --runs 21
    python bench/bench_detach.py --runs 21 --vs /path/to/other/checkout
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - bench/ is no package: the bed, the stand-ins, the stamps

REPO = bench.REPO
NAME = "vm0000"


def one_start(bed, env):
    """(ms to the hypervisor's exec, ms to `start -b` returning); the VM stopped again after."""
    (bed.work / f"exec.{NAME}").unlink(missing_ok=True)
    (bed.work / f"left.{NAME}").write_text("0")   # the stand-in runs until it is stopped
    t0 = time.time()
    res = subprocess.run([str(bed.root / "start"), "-b", NAME], env=env, cwd=bed.root,
                         capture_output=True, text=True)
    returned = time.time()
    if res.returncode != 0 or not bench.wait(lambda: bench.stamps(bed, NAME), 10):
        raise SystemExit(f"bench_detach: start -b failed ({res.returncode}): {res.stderr.strip()}")
    exec_ms = (bench.stamps(bed, NAME)[0] - t0) * 1000
    stop = subprocess.run([str(bed.root / "stop"), NAME], env=env, cwd=bed.root, capture_output=True, text=True)
    if stop.returncode != 0:
        raise SystemExit(f"bench_detach: stop failed ({stop.returncode}): {stop.stderr.strip()}")
    return exec_ms, (returned - t0) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=21, help="runs of each side (medians; default 21)")
    ap.add_argument("--vs", metavar="DIR", help="another checkout whose kvm runs in turns with this one")
    args = ap.parse_args()
    sides = {"this": REPO}
    if args.vs:
        sides["vs"] = Path(args.vs).resolve()
    for path in sides.values():
        subprocess.run([bench.PY, "-m", "compileall", "-q", str(path / "kvm")], check=True)
    bed = bench.Bed()
    samples = {key: {"exec": [], "return": []} for key in sides}
    try:
        bed.add_vms(1)
        # the bed's kvminst pinned the host's firmware (OVMF on Linux): pin bhyve's stand-in too
        (bed.root / "firmware").mkdir(exist_ok=True)
        for fw in (bed.work / "fw").iterdir():
            (bed.root / "firmware" / fw.name).write_bytes(fw.read_bytes())
        envs = {key: dict(bed.env, PYTHONPATH=str(path), KVM_HYPERVISOR="bhyve", KVM_PLATFORM="freebsd")
                for key, path in sides.items()}
        for key in sides:  # one run each not counted: the pool's caches, the first syslog
            one_start(bed, envs[key])
        for _ in range(args.runs):
            for key in sides:
                exec_ms, return_ms = one_start(bed, envs[key])
                samples[key]["exec"].append(exec_ms)
                samples[key]["return"].append(return_ms)
    finally:
        bed.close()
    print(f"start -b -> hypervisor exec, {time.strftime('%Y-%m-%d')}, {args.runs} runs each, "
          f"medians (min..max)")
    for key, path in sides.items():
        for what, label in (("exec", "start -b -> exec"), ("return", "start -b returns")):
            v = samples[key][what]
            print(f"  {key:4} {label:17} {statistics.median(v):7.1f} ms  ({min(v):.1f}..{max(v):.1f})  {path}")
    if args.vs:
        ratios = [a / b for a, b in zip(samples["this"]["exec"], samples["vs"]["exec"])]
        diffs = [a - b for a, b in zip(samples["this"]["exec"], samples["vs"]["exec"])]
        print(f"  this / vs, start -b -> exec, pair by pair: median x{statistics.median(ratios):.2f}, "
              f"median difference {statistics.median(diffs):+.1f} ms")


if __name__ == "__main__":
    main()
