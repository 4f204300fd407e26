"""Real-guest figures on the qemu backend (TCG), measured on the bench's pool beside the bhyve ones:

- start -> the guest's first console byte, ours (`./start -b`) against bare qemu run with the very
  argv our start ran (read back from /proc/PID/cmdline), in turns; both clocks stop when qemu's
  console.log (its chardev logfile) first grows;
- guest reset -> next qemu exec: the test guest reboots itself (`reboot -f`, SHUTDOWN guest-reset),
  and a qemu stand-in on PATH stamps the exit of the real qemu and each exec;
- the supervisor's VmRSS while the guest runs, its QMP connection open.

The test guest (tests/guest/build-guest, cached under /var/tmp) boots from its ISO through OVMF.
Usable alone: `python bench/qemu_bench.py` (its own pool; prints the three figures).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from kvm.host.runfiles import root_id  # noqa: E402 (the checkout's: where the run files are)
from tests.guest import guestdisk  # noqa: E402 (the guest's disk script writer)

TARGETS = {"first_byte_over_ms": 150, "qemu_reset_ms": 50, "qemu_supervisor_rss_mib": 20}
QEMU = "qemu-system-x86_64"
STAND_IN = """#!/bin/sh
# bench stand-in for qemu: stamp each exec, run the real one, stamp its exit
date +%s.%N >> "$BENCH_DIR/qemu.exec"
{real} "$@"
status=$?
date +%s.%N >> "$BENCH_DIR/qemu.exit"
exit $status
"""


def available():
    """Why the qemu figures cannot be measured here, or None."""
    if not shutil.which(QEMU):
        return f"{QEMU} is not installed (apt-get install qemu-system-x86)"
    if not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists():
        return "OVMF is not installed (apt-get install ovmf)"
    return None


def guest_iso():
    res = subprocess.run([str(REPO / "tests/guest/build-guest")], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"build-guest failed: {res.stderr.strip()[-500:]}")
    return res.stdout.strip()


class QemuVm:
    """One VM made with ./vmcreate on the bench's install, the test guest's ISO inserted."""

    def __init__(self, bed, env, name, script, iso):
        self.root, self.env, self.name = bed.root, env, name
        self.log = bed.root / "vm" / name / "console.log"
        self.state_file = Path(env["KVM_RUN_DIR"]) / root_id(bed.root) / name / "state"
        self.cmd("vmcreate", name, "-y", "--loader", "uefi", "--mem", "256M", "--disk-size", "64M",
                 "--com", "yes", "--no-network")
        guestdisk.make_disk(bed.root / "vm" / name / "disk", script)
        self.cmd("insert", name, iso)

    def cmd(self, *args, check=True):
        res = subprocess.run([f"./{args[0]}", *args[1:]], cwd=self.root, env=self.env, capture_output=True,
                             text=True, timeout=120)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {res.returncode}: {res.stderr.strip()}")
        return res

    def state(self):
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def log_mark(self):
        try:
            st = self.log.stat()
            return st.st_ino, st.st_size
        except OSError:
            return None, 0

    def wait_log_growth(self, mark, seconds=60):
        """time.perf_counter() when console.log first differs from `mark` (polled every 2 ms)."""
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            now = self.log_mark()
            if now != mark and now[1] > 0:
                return time.perf_counter()
            time.sleep(0.002)
        raise RuntimeError(f"{self.name}: no console byte in {seconds} s")

    def wait_log_text(self, text, count=1, seconds=300):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.log.exists() and self.log.read_text(errors="replace").count(text) >= count:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: no {text!r} x{count} on the console in {seconds} s")


def first_byte(vm, runs):
    """(ours, bare) median ms from the command to the first console byte, in turns."""
    ours, bare = [], []
    for _ in range(runs):
        _ours_then_bare(vm, ours, bare)
    return statistics.median(ours), statistics.median(bare)


def _ours_then_bare(vm, ours, bare):
    proc = None
    try:
        mark = vm.log_mark()
        t0 = time.perf_counter()
        starter = subprocess.Popen(["./start", "-b", vm.name], cwd=vm.root, env=vm.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours.append((vm.wait_log_growth(mark) - t0) * 1000)
        starter.wait(60)
        pid = int(vm.state().get("bhyve") or 0)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        vm.cmd("stop", "-f", vm.name)
        mark = vm.log_mark()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=vm.env)
        bare.append((vm.wait_log_growth(mark) - t0) * 1000)
    finally:
        # nothing may keep files open on the pool when the bench destroys it
        vm.cmd("stop", "-f", vm.name, check=False)
        if proc:
            proc.terminate()  # qemu quits on SIGTERM
            proc.wait(30)


def stamps(bed, what):
    path = bed.work / f"qemu.{what}"
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def reset_and_rss(bed, vm, resets):
    """(median ms from a guest reset's qemu exit to the next qemu exec, max supervisor MiB)."""
    rss = []
    vm.cmd("start", "-b", vm.name)
    try:
        for boot in range(1, resets + 2):
            vm.wait_log_text(f"KVMGUEST up boot={boot}")
            pid = int(vm.state().get("supervisor") or 0)
            status = Path(f"/proc/{pid}/status").read_text()
            rss.append(int(next(x.split()[1] for x in status.splitlines() if x.startswith("VmRSS"))) / 1024)
    finally:
        vm.cmd("stop", "-f", vm.name, check=False)
    execs, exits = stamps(bed, "exec"), stamps(bed, "exit")
    turns = [(nxt - ended) * 1000 for ended, nxt in zip(exits, execs[1:])][:resets]
    if len(turns) < resets:
        raise RuntimeError(f"{len(turns)} of {resets} resets seen (execs {execs}, exits {exits})")
    return statistics.median(turns), max(rss)


def measure(bed, runs=7, resets=3):
    """The qemu figures, on the bed's pool and install: {key: value}."""
    iso = guest_iso()
    env = dict(bed.env, KVM_HYPERVISOR="qemu", KVM_ACCEL=os.environ.get("KVM_ACCEL", "tcg"))
    vm = QemuVm(bed, env, "qg", "", iso)
    ours, bare = first_byte(vm, runs)
    wrap = bed.work / "qemu-bin"
    wrap.mkdir(exist_ok=True)
    (wrap / QEMU).write_text(STAND_IN.format(real=shutil.which(QEMU)))
    (wrap / QEMU).chmod(0o755)
    wrapped = dict(env, PATH=f"{wrap}:{env['PATH']}")
    reset, rss = reset_and_rss(bed, QemuVm(bed, wrapped, "qr", f"reboot={resets + 1}", iso), resets)
    return {"first_byte_ours_ms": ours, "first_byte_bare_ms": bare, "first_byte_over_ms": ours - bare,
            "qemu_reset_ms": reset, "qemu_supervisor_rss_mib": rss, "accel": env["KVM_ACCEL"]}


def rows(r):
    """Table rows (figure, value, ratio, target, note) for bench.report."""
    if "qemu_skipped" in r:
        return [("qemu figures", "skipped", "", "", r["qemu_skipped"])]
    over = r["first_byte_over_ms"]
    return [
        ("start -> first console byte, bare qemu", f"{r['first_byte_bare_ms']:.1f} ms", "", "",
         f"same argv, {r['accel']}"),
        ("start -> first console byte, ours", f"{r['first_byte_ours_ms']:.1f} ms",
         f"x{r['first_byte_ours_ms'] / r['first_byte_bare_ms']:.2f}",
         f"{over:+.1f} ms (target +{TARGETS['first_byte_over_ms']})", "start -b, empty hooks"),
        ("guest reset -> next qemu exec", f"{r['qemu_reset_ms']:.1f} ms", "",
         f"target {TARGETS['qemu_reset_ms']} ms", "empty hooks"),
        ("supervisor RSS, QMP connected", f"{r['qemu_supervisor_rss_mib']:.1f} MiB", "",
         f"target {TARGETS['qemu_supervisor_rss_mib']} MiB", ""),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    import bench
    why = available()
    if why:
        sys.exit(f"qemu_bench: {why}")
    # as bench.py does: compiled bytecode, as an installed package has it (this machine sets
    # PYTHONDONTWRITEBYTECODE=1, which would make each of start's two interpreters recompile kvm)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "kvm")], check=True)
    bed = bench.Bed()
    try:
        figures = measure(bed)
    finally:
        bed.close()
    for row in rows(figures):
        print("  ".join(c for c in row if c))
