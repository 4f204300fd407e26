"""kvm benchmarks: start-up of status/vminfo/vmlist, vmlist scaling and zfs calls, start latency,
reboot turnaround, supervisor memory and vmcreate --from (bench_images.py), against the bare interpreter on the same machine.

bhyve and bhyvectl are replaced by tiny sh stand-ins that stamp the time they are executed,
so the figures measure kvm, not a simulator. Everything runs on a throw-away pool.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the checkout's kvm, for its templates
import bench_images  # noqa: E402 - bench/ is no package
import qemu_bench  # noqa: E402 - beside this file: the real-guest figures

from tests import testpools  # noqa: E402 - the checkout's: the pools the tooling may destroy

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
TARGETS = {"status": 40, "vminfo": 40, "vmlist@500": 150, "start_to_exec": 150, "reboot_turnaround": 50,
           "supervisor_rss_mib": 16}

FAKE_BHYVE = """#!/bin/sh
# bench stand-in for bhyve: stamp the exec time, allocate, then behave as told
name=$(eval echo \\${$#})
date +%s.%N >> "$BENCH_DIR/exec.$name"
echo '{{"mem": 1, "pid": '$$'}}' > "$KVM_VMM_DIR/$name"
n=$(cat "$BENCH_DIR/left.$name" 2>/dev/null || echo 0)
if [ "$n" -gt 0 ]; then echo $((n-1)) > "$BENCH_DIR/left.$name"; exit 0; fi
trap 'exit 1' TERM
while :; do sleep 1; done
"""
FAKE_BHYVECTL = """#!/bin/sh
for a; do case $a in --vm=*) name=${a#--vm=};; esac; done
rm -f "$KVM_VMM_DIR/$name"
"""
FAKE_OK = "#!/bin/sh\nexit 0\n"


def sh(*argv, env=None, check=True):
    return subprocess.run(list(map(str, argv)), env=env, capture_output=True, text=True, check=check)


def timeit(commands, env, runs, cwd=None):
    """{key: median wall time in ms} of running each argv of {key: argv}.

    The commands take turns (one run of each, then again), so a machine that is slower for a
    while slows all of them alike and the differences to the baseline stay fair.
    """
    samples = {key: [] for key in commands}
    for _ in range(runs):
        for key, argv in commands.items():
            t = time.perf_counter()
            subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            samples[key].append((time.perf_counter() - t) * 1000)
    return {key: statistics.median(values) for key, values in samples.items()}


class Bed:
    """A pool, an install, fake tools and an environment."""

    def __init__(self):
        self.pool = f"kvmbench{uuid.uuid4().hex[:6]}"
        self.img = Path(f"/var/tmp/{self.pool}.img")
        self.work = Path(tempfile.mkdtemp(prefix="kvmbench", dir="/var/tmp"))
        testpools.create(self.pool, self.img, 4 << 30)  # recorded first: the one pool close() destroys
        fake = self.work / "bin"
        fake.mkdir()
        for name, text in (("bhyve", FAKE_BHYVE), ("bhyvectl", FAKE_BHYVECTL), ("kldstat", FAKE_OK),
                           ("kldload", FAKE_OK), ("sockstat", FAKE_OK), ("logger", FAKE_OK)):
            (fake / name).write_text(text)
            (fake / name).chmod(0o755)
        counter = self.work / "count"
        counter.mkdir()
        real_zfs = shutil.which("zfs")
        (counter / "zfs").write_text(f'#!/bin/sh\necho x >> "$BENCH_DIR/zfs.calls"\nexec {real_zfs} "$@"\n')
        (counter / "zfs").chmod(0o755)
        for sub in ("run", "vmm", "dev", "rc.d", "fw"):
            (self.work / sub).mkdir()
        (self.work / "fw" / "BHYVE_UEFI.fd").write_bytes(b"\0" * 4096)
        (self.work / "fw" / "BHYVE_UEFI_VARS.fd").write_bytes(b"\0" * 4096)
        # timings run with the real zfs first on PATH; only zfs_calls puts the counting wrapper
        # (a /bin/sh per call) in front of it
        self.env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", BENCH_DIR=str(self.work),
                        KVM_RUN_DIR=str(self.work / "run"), KVM_ROOTS="", KVM_VMM_DIR=str(self.work / "vmm"),
                        KVM_DEV_DIR=str(self.work / "dev"), KVM_RCDIR=str(self.work / "rc.d"),
                        KVM_RCCONF=str(self.work / "rc.conf"), KVM_FIRMWARE_DIRS=str(self.work / "fw"),
                        KVM_PERIODIC_DIR=str(self.work / "periodic"), KVM_CRON_DIR=str(self.work / "cron.d"),
                        PYTHONPATH=str(REPO))
        self.counting_env = dict(self.env, PATH=f"{counter}:{self.env['PATH']}")
        sh(PY, "-m", "kvm", "kvminst", "-p", self.pool, "-y", env=self.env)
        self.root = Path(f"/{self.pool}/kvm")
        self.vms = 0

    def add_vms(self, total):
        """Grow to `total` VMs as vmcreate makes them (real datasets; set.conf from vmcreate's
        template, comments and all; run; a sparse disk), every tenth one enabled in rc.conf with
        an rc.d script of ours, so vmlist reads everything its columns need."""
        template_run = "preRun()\n{\n\t:\n}\n\npostRun()\n{\n\t:\n}\n"
        for i in range(self.vms, total):
            name = f"vm{i:04d}"
            sh("zfs", "create", f"{self.pool}/kvm/vm/{name}")
            d = self.root / "vm" / name
            (d / "set.conf").write_text(set_conf(name))
            (d / "run").write_text(template_run)
            (d / "UEFI_VARS.fd").write_bytes(b"\0" * 4096)
            with open(d / "disk", "wb") as fh:
                fh.truncate(20 << 30)
            if i % 10 == 0:
                (self.work / "rc.d" / name).write_text(f"#!/bin/sh\n# kvm-rc-script: {name}\n# {self.root}\n")
                with open(self.work / "rc.conf", "a") as fh:
                    fh.write(f'{name}_enable="YES"\n')
        self.vms = total

    def zfs_calls(self, argv):
        log = self.work / "zfs.calls"
        log.unlink(missing_ok=True)
        subprocess.run(argv, env=self.counting_env, cwd=self.root, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return len(log.read_text().splitlines()) if log.exists() else 0

    def close(self):
        subprocess.run(["pkill", "-f", str(self.root)], capture_output=True)
        # `zpool destroy -f` while a process (a qemu, a supervisor) still has files open in the
        # pool is a forced unmount, which hangs zfs-fuse: wait for them to be gone first
        if not wait(lambda: not users(self.root), 20):
            print(f"bench: processes {users(self.root)} still use {self.root}: pool {self.pool} kept; "
                  f"remove it with zpool destroy {self.pool} && rm {self.img}", file=sys.stderr)
            return
        for _ in range(20):
            if testpools.destroy(self.pool, self.img):
                break
            time.sleep(0.5)
        shutil.rmtree(self.work, ignore_errors=True)


def set_conf(name):
    """set.conf as `vmcreate NAME -y --cores 2 --mem 2G --disk-size 20G --vnc yes --switch lan` writes it
    (every key the template knows given: it refuses an undefined one)."""
    from kvm.conf import templating  # the checkout's (REPO is on sys.path)
    from kvm.hypervisor.bhyve.backend import Bhyve  # the comments' words, as on FreeBSD
    return templating.render("set.conf.j2", None, name=name, vmrom="uefi", boot="", cores="2", mem="2G",
                             options="AHPw", disk="disk", disk_driver="", devices=f"3,virtio-net,tap{name}",
                             vnc="1", vnc_addr="", com="", iso="", switch=f"tap{name}=lan", tpm="", limits="",
                             cpu_pin="", agent="", boot_comment=Bhyve.boot_comment,
                             options_comment=Bhyve.options_comment, options_example=Bhyve.options_example,
                             console_comment=Bhyve.console_comment(name))


def users(folder):
    """Pids whose folder or open files lie under `folder`."""
    prefix, found = str(folder).rstrip("/") + "/", []
    for proc in Path("/proc").iterdir():
        try:
            links = [os.readlink(proc / "cwd")] + [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and any(x.startswith(prefix) for x in links):
            found.append(int(proc.name))
    return found


def stamps(bed, name):
    path = bed.work / f"exec.{name}"
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def wait(pred, seconds=30):
    end = time.time() + seconds
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def bench_start(bed, runs):
    """ms from invoking ./start to bhyve's exec, and from a guest reboot to the next exec."""
    starts, turns, rss = [], [], []
    for i in range(runs):
        name = "vm0000"
        (bed.work / f"exec.{name}").unlink(missing_ok=True)
        (bed.work / f"left.{name}").write_text("3")
        t0 = time.time()
        proc = subprocess.Popen([str(bed.root / "start"), name], env=bed.env, cwd=bed.root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: len(stamps(bed, name)) >= 4)
        s = stamps(bed, name)
        starts.append((s[0] - t0) * 1000)
        # each reboot: the stand-in stamps, exits 0 at once; the next stamp is the next exec
        turns += [(b - a) * 1000 for a, b in zip(s, s[1:])]
        time.sleep(0.3)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss.append(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024)
        proc.terminate()
        proc.wait(30)
    return statistics.median(starts), statistics.median(turns), max(rss)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vms", default="10,100,500", help="VM counts for vmlist (default 10,100,500)")
    ap.add_argument("--runs", type=int, default=21, help="runs per timing (median; default 21)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--no-qemu", action="store_true", help="leave out the real-guest (qemu) figures")
    ap.add_argument("--only", choices=["vmlist"], help="measure only vmlist (with the baseline, status and vminfo)")
    args = ap.parse_args()
    counts = sorted(int(x) for x in args.vms.split(","))
    # An installed package has its bytecode compiled (pip and pkg do it); a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would recompile every module on every command. Compile first.
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "kvm")], check=True)
    bed = Bed()
    results = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
                          f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
               "date": time.strftime("%Y-%m-%d"), "vmlist": {}}
    try:
        bed.add_vms(max(1, counts[0]))
        cmds = {"base": [PY, "-c", "pass"], "status": ["./status", "vm0000"], "vminfo": ["./vminfo", "vm0000"]}
        ms = timeit(cmds, bed.env, args.runs, cwd=bed.root)
        results["interpreter_ms"] = ms["base"]
        for cmd in ("status", "vminfo"):
            results[cmd] = {"ms": ms[cmd], "zfs_calls": bed.zfs_calls(cmds[cmd])}
        for n in counts:
            bed.add_vms(n)
            ms = timeit({"base": cmds["base"], "vmlist": ["./vmlist"]}, bed.env, args.runs, cwd=bed.root)
            results["vmlist"][n] = {"ms": ms["vmlist"], "base_ms": ms["base"],
                                    "zfs_calls": bed.zfs_calls(["./vmlist"])}
        if args.only != "vmlist":
            measure_the_rest(bed, results, args)
    finally:
        bed.close()
    report(results, counts)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


def measure_the_rest(bed, results, args):
    """Start latency, reboot turnaround, supervisor memory, vmcreate --from and qemu."""
    start, turn, rss = bench_start(bed, max(3, args.runs // 5))
    results.update(start_to_exec_ms=start, reboot_turnaround_ms=turn, supervisor_rss_mib=rss)
    results["from_image"] = bench_images.run(bed, max(3, args.runs // 4))
    why = None if args.no_qemu else qemu_bench.available()
    if why or args.no_qemu:
        results["qemu_skipped"] = why or "--no-qemu"
    else:
        results.update(qemu_bench.measure(bed, runs=max(5, args.runs // 3)))


def report(r, counts):
    base = r["interpreter_ms"]
    rows = [("python3 -c pass (baseline)", f"{base:.1f} ms", "x1.00", "", "")]
    for cmd in ("status", "vminfo"):
        over = r[cmd]["ms"] - base
        rows.append((f"{cmd} NAME", f"{r[cmd]['ms']:.1f} ms", f"x{r[cmd]['ms'] / base:.2f}",
                     f"+{over:.1f} ms (target +{TARGETS[cmd]})", f"zfs calls: {r[cmd]['zfs_calls']}"))
    for n in counts:
        v = r["vmlist"][n]
        target = f" (target +{TARGETS['vmlist@500']} at 500)" if n == 500 else ""
        rows.append((f"vmlist, {n} VMs", f"{v['ms']:.1f} ms", f"x{v['ms'] / v['base_ms']:.2f}",
                     f"+{v['ms'] - v['base_ms']:.1f} ms{target}", f"zfs calls: {v['zfs_calls']}"))
    if "start_to_exec_ms" not in r:  # --only vmlist
        return print_rows(r, rows)
    rows.append(("start -> bhyve exec", f"{r['start_to_exec_ms']:.1f} ms", f"x{r['start_to_exec_ms'] / base:.2f}",
                 f"target {TARGETS['start_to_exec']} ms", "empty hooks"))
    rows.append(("guest reboot -> next exec", f"{r['reboot_turnaround_ms']:.1f} ms", "",
                 f"target {TARGETS['reboot_turnaround']} ms", "empty hooks"))
    rows.append(("supervisor RSS", f"{r['supervisor_rss_mib']:.1f} MiB", "",
                 f"target {TARGETS['supervisor_rss_mib']} MiB", ""))
    rows += bench_images.rows(r, base)
    rows += qemu_bench.rows(r)
    print_rows(r, rows)


def print_rows(r, rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"kvm benchmarks, {r['date']}, {r['machine']}")
    for row in rows:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())


if __name__ == "__main__":
    main()
