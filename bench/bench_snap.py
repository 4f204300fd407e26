"""snap list's time on a host with many datasets that are not the VM's (issue 20 item 7).

Every snap command used to run `zfs get mountpoint` over every dataset of the host (0.54 s at 693
datasets) to find the root's dataset, and listed a whole pool's mountpoints for a disk on another
dataset; now zfs is asked about the VM's datasets and paths only. This makes a throw-away pool
with DATASETS foreign datasets beside an install holding two VMs: `web` (its disk in its folder)
and `ext` (its disk on a dataset of its own), and times `./snap list` of each, against the bare
interpreter, for each checkout given (the code before and after a change, e.g. a `git worktree`
of the commit before):

    python3 bench/bench_snap.py [--datasets 1000] [--runs 11] [--checkout DIR ...] [--json FILE]

Each checkout's kvminst installs the root again (its launchers, templates), and its kvm is first on
PYTHONPATH for every command. The figures are medians; the commands take turns with the baseline.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import PY, REPO, timeit  # noqa: E402 - bench/ is no package


def sh(*argv, env=None):
    res = subprocess.run(list(map(str, argv)), env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {res.returncode}: {res.stderr.strip()[-800:]}")
    return res


def create(name, tries=5):
    """zfs create -p, again after a moment when zfs-fuse refuses one under load."""
    for attempt in range(tries):
        res = subprocess.run(["zfs", "create", "-p", name], capture_output=True, text=True)
        if res.returncode == 0 or attempt == tries - 1:
            break
        time.sleep(0.5)
    if res.returncode != 0:
        raise RuntimeError(f"zfs create -p {name}: {res.stderr.strip()}")


def label(checkout):
    res = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return res.stdout.strip()[:60] or str(checkout)


class SnapBed:
    """A pool with `datasets` foreign datasets, an install and two VMs with a snapshot each."""

    def __init__(self, datasets):
        self.pool = f"kvmbench{uuid.uuid4().hex[:6]}"
        self.img = Path(f"/var/tmp/{self.pool}.img")
        self.work = Path(tempfile.mkdtemp(prefix="kvmbench", dir="/var/tmp"))
        with open(self.img, "wb") as fh:
            fh.truncate(2 << 30)
        sh("zpool", "create", "-f", self.pool, self.img)
        t = time.monotonic()
        try:
            # foreign datasets, beside the install as a host's other datasets are; not mounted (their
            # parent's mountpoint=none), as zfs-fuse cannot mount a thousand filesystems (the last
            # ones stay "busy" for good): listing them costs zfs the same
            sh("zfs", "create", "-o", "mountpoint=none", f"{self.pool}/other")
            for i in range(datasets):
                create(f"{self.pool}/other/g{i // 100:02d}/d{i:04d}")
        except BaseException:
            self.close()
            raise
        self.made_in = time.monotonic() - t
        self.datasets = int(sh("zfs", "list", "-H", "-o", "name").stdout.count("\n"))
        self.root = Path(f"/{self.pool}/kvm")
        counter = self.work / "count"
        counter.mkdir()
        real = shutil.which("zfs")
        (counter / "zfs").write_text(f'#!/bin/sh\necho "$*" >> "{self.work}/zfs.calls"\nexec {real} "$@"\n')
        (counter / "zfs").chmod(0o755)
        for sub in ("run", "rc.d", "cron.d", "fw"):
            (self.work / sub).mkdir()
        (self.work / "fw" / "BHYVE_UEFI.fd").write_bytes(b"\0" * 4096)
        (self.work / "fw" / "BHYVE_UEFI_VARS.fd").write_bytes(b"\0" * 4096)
        self.env = dict(os.environ, KVM_RUN_DIR=str(self.work / "run"), KVM_ROOTS="", KVM_RCDIR=str(self.work / "rc.d"),
                        KVM_RCCONF=str(self.work / "rc.conf"), KVM_CRON_DIR=str(self.work / "cron.d"),
                        KVM_PERIODIC_DIR=str(self.work / "periodic"), KVM_FIRMWARE_DIRS=str(self.work / "fw"),
                        KVM_PLATFORM="freebsd", KVM_HYPERVISOR="bhyve")
        self.env.pop("KVM_ROOT", None)
        self.counter = counter

    def use(self, checkout):
        """Install (or upgrade) the root with `checkout`'s kvm; the VMs are made once."""
        self.env["PYTHONPATH"] = str(checkout)
        sh(PY, "-m", "kvm", "kvminst", "-p", self.pool, "-y", env=self.env)
        if not (self.root / "vm" / "web").exists():
            for name in ("web", "ext"):
                sh(self.root / "vmcreate", name, "-y", "--disk-size", "16M", "--no-network", env=self.env)
            sh("zfs", "create", f"{self.pool}/disks")
            with open(f"/{self.pool}/disks/ext.img", "wb") as fh:
                fh.truncate(16 << 20)
            with open(self.root / "vm" / "ext" / "set.conf", "a") as fh:
                fh.write(f'Disk="/{self.pool}/disks/ext.img"\n')
            for name in ("web", "ext"):
                sh(self.root / "snap", "create", name, "s1", env=self.env)

    def zfs_calls(self, argv):
        log = self.work / "zfs.calls"
        log.unlink(missing_ok=True)
        env = dict(self.env, PATH=f"{self.counter}:{self.env['PATH']}")
        subprocess.run(argv, env=env, cwd=self.root, capture_output=True)
        return log.read_text().splitlines() if log.exists() else []

    def close(self):
        for _ in range(20):
            if subprocess.run(["zpool", "destroy", "-f", self.pool], capture_output=True).returncode == 0:
                self.img.unlink(missing_ok=True)
                break
            time.sleep(0.5)
        else:
            print(f"bench: pool {self.pool} kept; zpool destroy {self.pool} && rm {self.img}", file=sys.stderr)
        shutil.rmtree(self.work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=int, default=1000, help="foreign datasets (default 1000)")
    ap.add_argument("--runs", type=int, default=11, help="runs per timing (median; default 11)")
    ap.add_argument("--checkout", action="append", type=Path,
                    help="a checkout whose kvm to measure (repeatable; default: this one)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    checkouts = args.checkout or [REPO]
    for checkout in checkouts:  # bytecode compiled, as an installed package has it
        subprocess.run([PY, "-m", "compileall", "-q", str(checkout / "kvm")], check=True)
    bed = SnapBed(args.datasets)
    results = {"date": time.strftime("%Y-%m-%d"), "datasets": bed.datasets, "runs": args.runs, "checkouts": []}
    try:  # the bed is removed whatever happens below
        print(f"{bed.datasets} datasets on the host ({args.datasets} foreign ones made in {bed.made_in:.0f} s); "
              f"load average {os.getloadavg()[0]:.1f}")
        for checkout in checkouts:
            bed.use(checkout)
            cmds = {"base": [PY, "-c", "pass"], "web": ["./snap", "list", "web"], "ext": ["./snap", "list", "ext"]}
            ms = timeit(cmds, bed.env, args.runs, cwd=bed.root)
            row = {"checkout": label(checkout), "base_ms": ms["base"], "web_ms": ms["web"], "ext_ms": ms["ext"],
                   "web_zfs": bed.zfs_calls(cmds["web"]), "ext_zfs": bed.zfs_calls(cmds["ext"])}
            results["checkouts"].append(row)
            print(f"\n{row['checkout']}\n  python3 -c pass  {row['base_ms']:7.1f} ms")
            for vm, what in (("web", "disk in its folder"), ("ext", "disk on another dataset")):
                print(f"  snap list {vm}    {row[vm + '_ms']:7.1f} ms = + {row[vm + '_ms'] - row['base_ms']:.1f} ms "
                      f"({what}); zfs calls:")
                for call in row[vm + "_zfs"]:
                    print(f"      zfs {call}")
    finally:
        bed.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
