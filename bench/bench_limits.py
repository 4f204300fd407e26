"""Limits="pcpu=25" on a real CPU-bound guest (qemu, TCG): the share of one host CPU the qemu
process uses over a window, with and without the limit. Prints a table and writes JSON.

    sudo .venv/bin/python bench/bench_limits.py [--seconds 10] [--json out.json]

The test guest (tests/guest) boots from its ISO through OVMF with the argv kvm builds; once up, a
busy loop is typed on its console; the qemu process is put in a cgroup of this benchmark's own
(KVM_CGROUP_PARENT=kvmbench-..., removed at the end) by kvm's own code (kvm/platform/cgroups.py),
exactly as the supervisor does before `cont`. CPU use is utime+stime of /proc/PID/stat over the
window. One vCPU: TCG then runs the guest on one thread, so an unlimited busy guest shows ~100 %.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvm.platform import cgroups  # noqa: E402
from tests.qemu.conftest import Guest  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(iso, base, label, pcpu, seconds):
    vmdir = base / label
    vmdir.mkdir()
    g = Guest(vmdir, base, iso, "", {"Cores": "1", **({"Limits": f"pcpu={pcpu}"} if pcpu else {})})
    try:
        if pcpu:
            cgroups.apply(label, f"bench.{label}", g.proc.pid, (("pcpu", pcpu),))
        if g.plan.paused:
            g.qmp.execute("cont")
        g.serial.wait_for("KVMGUEST up boot=1", timeout=300)
        g.serial.send("while :; do :; done")
        time.sleep(2)
        start, t0 = cpu_seconds(g.proc.pid), time.monotonic()
        time.sleep(seconds)
        used = (cpu_seconds(g.proc.pid) - start) / (time.monotonic() - t0)
    finally:
        g.close()
        if pcpu:
            cgroups.remove(f"bench.{label}", (("pcpu", pcpu),))
    return used


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    import subprocess
    iso = subprocess.run([str(Path(__file__).resolve().parents[1] / "tests/guest/build-guest")],
                         capture_output=True, text=True, check=True).stdout.strip()
    os.environ["KVM_CGROUP_PARENT"] = parent = f"kvmbench-{uuid.uuid4().hex[:8]}"
    base = Path(tempfile.mkdtemp(prefix="kb", dir="/tmp"))
    try:
        free = measure(iso, base, "free", None, args.seconds)
        limited = measure(iso, base, "limited", 25, args.seconds)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for root in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")):
            if (root / parent).is_dir():
                (root / parent).rmdir()
    print(f"{'guest busy loop, 1 vCPU (TCG)':<40} {'CPU used':>9}")
    print(f"{'no limit':<40} {free * 100:>8.0f}%")
    print(f"{'Limits=pcpu=25':<40} {limited * 100:>8.0f}%   (target about 25 %)")
    if args.json:
        Path(args.json).write_text(json.dumps({"free": free, "pcpu25": limited, "seconds": args.seconds}) + "\n")


if __name__ == "__main__":
    main()
