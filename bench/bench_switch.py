"""`switch up` of a switch that is already up: wall time and the commands it runs, against
`python3 -c pass`, on Linux inside a network namespace of its own (never the host's network).

    python3 bench/bench_switch.py [--runs 20]

A throw-away install root (a folder with vm/ and kvm's marker: switches need no ZFS) holds one
switch `lan` with an address, NAT (out of a veth) and DHCP; it is brought up once, then `switch up
lan --debug` is run RUNS times. Printed: the medians, and the commands each up ran (from --debug's
`+ ` lines): the target is reads only (`ip -j -d addr show`, `nft list chain ...`), no command
that changes the host, no dnsmasq started again.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READS = ("ip -j -d addr show", "nft list chain ip kvm lan_nat")


def sh(*argv, check=True):
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


def timed(argv, env, cwd=None):
    start = time.perf_counter()
    res = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    return (time.perf_counter() - start) * 1000, res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0 or sys.platform != "linux":
        sys.exit("bench_switch: run as root on Linux (it makes a network namespace)")
    for tool in ("ip", "nsenter", "nft", "dnsmasq"):
        if not shutil.which(tool):
            sys.exit(f"bench_switch: {tool} is missing (tests/setup.sh installs it)")
    ns = f"kvmbench{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="kvmbench", dir="/var/tmp"))
    root, run = tmp / "root", tmp / "run"
    (root / "vm").mkdir(parents=True)
    (root / ".kvm-root").write_text("")
    run.mkdir(mode=0o755)
    env = {**os.environ, "KVM_PLATFORM": "linux", "KVM_RUN_DIR": str(run), "PYTHONPATH": str(REPO)}
    inside = ["nsenter", f"--net=/run/netns/{ns}"]
    switch = [*inside, sys.executable, "-m", "kvm", "--root", str(root), "switch"]
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "wan0", "type", "veth", "peer", "name", "wan1")
        sh("ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "wan0")
        sh("ip", "-n", ns, "link", "set", "wan0", "up")
        res = subprocess.run([*switch, "create", "lan", "--address", "10.0.5.1/24", "--nat", "--out", "wan0",
                              "--dhcp", "10.0.5.10-10.0.5.99"], env=env, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"bench_switch: switch create failed: {res.stderr.strip()}")
        base = statistics.median(timed([sys.executable, "-c", "pass"], env)[0] for _ in range(args.runs))
        times, ran = [], set()
        for _ in range(args.runs):
            ms, res = timed([*switch, "up", "lan", "--debug"], env)
            if res.returncode != 0 or "(nothing to do)" not in res.stdout:
                sys.exit(f"bench_switch: up changed something or failed: {res.stdout}{res.stderr}")
            times.append(ms)
            ran |= {line[2:] for line in res.stderr.splitlines() if line.startswith("+ ")}
        nsenter = statistics.median(timed([*inside, "true"], env)[0] for _ in range(args.runs))
        print(f"python3 -c pass           {base:7.1f} ms")
        print(f"nsenter --net true        {nsenter:7.1f} ms  (the namespace's own cost, in every up below)")
        print(f"switch up (already up)    {statistics.median(times):7.1f} ms  median of {args.runs}, "
              f"min {min(times):.1f}, max {max(times):.1f}")
        print(f"commands each up ran:     {len(ran)}: " + "; ".join(sorted(ran)))
        extra = sorted(c for c in ran if c not in READS)
        print("target (reads only):      " + ("met" if not extra else f"MISSED: {'; '.join(extra)}"))
    finally:
        subprocess.run([*switch, "destroy", "lan"], env=env, capture_output=True, text=True)
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass
        sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
