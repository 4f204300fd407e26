"""`./start -b NAME` -> the hypervisor's exec, for this checkout's kvm and, with --vs, another's.

What is timed: from running `./start -b vm0000` in the root to the exec of the hypervisor (bhyve's
sh stand-in, which stamps the time it runs: bench.py's), and to `./start -b` returning (which
polls the supervisor's state file every 50 ms, so that figure moves in steps). Wall times follow
the machine's load; two CPU times do much less: start -b's own (its process, from getrusage) and
the detached supervisor's up to the exec (its /proc/PID/schedstat, read by the stand-in, which
the supervisor runs). Between two runs the VM is stopped with `./stop`. With --vs DIR, the same bed runs DIR's kvm (a checkout: its
folder goes on PYTHONPATH) in turns with this one (one run of each, then again), so a slow spell
of the machine slows both; the ratio is taken pair by pair. Bytecode is compiled first for both,
as an installed package has it. The bhyve backend on the FreeBSD platform, as the suite runs it.

    python bench/bench_detach.py --runs 21
    python bench/bench_detach.py --runs 21 --vs /path/to/other/checkout
"""

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - bench/ is no package: the bed, the stand-ins, the stamps

REPO = bench.REPO
NAME = "vm0000"


# bench.py's stand-in, which first records its parent's (the supervisor's) CPU time so far in ns
SCHEDSTAT = 'cut -d" " -f1 /proc/$PPID/schedstat > "$BENCH_DIR/sched.$name"\n'
FIGURES = (("exec", "start -b -> exec", "ms"), ("return", "start -b returns", "ms"),
           ("cpu_start", "start -b's CPU", "ms"), ("cpu_sup", "supervisor's CPU", "ms"))


def one_start(bed, env):
    """{figure: ms} of one start -b (FIGURES); the VM stopped again after."""
    (bed.work / f"exec.{NAME}").unlink(missing_ok=True)
    (bed.work / f"left.{NAME}").write_text("0")   # the stand-in runs until it is stopped
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    res = subprocess.run([str(bed.root / "start"), "-b", NAME], env=env, cwd=bed.root,
                         capture_output=True, text=True)
    returned = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0 or not bench.wait(lambda: bench.stamps(bed, NAME), 10):
        raise SystemExit(f"bench_detach: start -b failed ({res.returncode}): {res.stderr.strip()}")
    figures = {"exec": (bench.stamps(bed, NAME)[0] - t0) * 1000, "return": (returned - t0) * 1000,
               "cpu_start": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000}
    bench.wait(lambda: (bed.work / f"sched.{NAME}").read_text().strip() if (bed.work / f"sched.{NAME}").exists()
               else False, 5)
    figures["cpu_sup"] = int((bed.work / f"sched.{NAME}").read_text()) / 1e6
    (bed.work / f"sched.{NAME}").unlink()
    stop = subprocess.run([str(bed.root / "stop"), NAME], env=env, cwd=bed.root, capture_output=True, text=True)
    if stop.returncode != 0:
        raise SystemExit(f"bench_detach: stop failed ({stop.returncode}): {stop.stderr.strip()}")
    return figures


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
    samples = {key: {figure: [] for figure, _, _ in FIGURES} for key in sides}
    try:
        bed.add_vms(1)
        stand_in, stamp = bed.work / "bin" / "bhyve", 'date +%s.%N >> "$BENCH_DIR/exec.$name"\n'
        assert stamp in stand_in.read_text()
        stand_in.write_text(stand_in.read_text().replace(stamp, SCHEDSTAT + stamp))
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
                for figure, value in one_start(bed, envs[key]).items():
                    samples[key][figure].append(value)
    finally:
        bed.close()
    print(f"start -b -> hypervisor exec, {time.strftime('%Y-%m-%d')}, {args.runs} runs each, "
          f"medians (min..max)")
    for key, path in sides.items():
        print(f"  {key}: {path}")
        for figure, label, unit in FIGURES:
            v = samples[key][figure]
            print(f"    {label:18} {statistics.median(v):7.1f} {unit}  ({min(v):.1f}..{max(v):.1f})")
    if args.vs:
        print("  this - vs, pair by pair (median of the differences):")
        for figure, label, unit in FIGURES:
            diffs = [a - b for a, b in zip(samples["this"][figure], samples["vs"][figure])]
            print(f"    {label:18} {statistics.median(diffs):+7.1f} {unit}")


if __name__ == "__main__":
    main()
