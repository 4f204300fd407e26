"""Limits on Linux (kvm/platform/cgroups.py) on this host's real cgroups, under a parent of this
test's own (KVM_CGROUP_PARENT), removed at the end; and the one-line refusals."""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kvm.errors import ConfigError
from kvm.platform import cgroups

CGROUP = Path("/sys/fs/cgroup")


@pytest.fixture
def parent(monkeypatch):
    if cgroups.version() is None:
        pytest.skip("no cgroups on this host")
    name = f"kvmtest-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("KVM_CGROUP_PARENT", name)
    yield name
    for base in (CGROUP / "cpu", CGROUP / "memory", CGROUP):
        if (base / name).is_dir():
            (base / name).rmdir()


@pytest.fixture
def process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_the_process_is_moved_in_with_its_limits_and_the_cgroup_removed(parent, process):
    said = cgroups.apply("web", "root_1a2b3c4d.web", process.pid, (("pcpu", 25), ("rbps", 1 << 20), ("vmem", 1 << 30)))
    if cgroups.version() == 1:
        cpu, memory = CGROUP / "cpu" / parent / "root_1a2b3c4d.web", CGROUP / "memory" / parent / "root_1a2b3c4d.web"
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(1 << 30)
        assert str(process.pid) in (cpu / "cgroup.procs").read_text().split()
        assert str(process.pid) in (memory / "cgroup.procs").read_text().split()
        folders = [cpu, memory]
    else:
        folder = CGROUP / parent / "root_1a2b3c4d.web"
        assert (folder / "cpu.max").read_text().strip() == "25000 100000"
        assert (folder / "memory.max").read_text().strip() == str(1 << 30)
        folders = [folder]
    assert len(said) == len(folders) and "cfs_quota_us=25000" in said[0] or "25000 100000" in said[0]
    process.kill()
    process.wait()
    cgroups.remove("root_1a2b3c4d.web", (("pcpu", 25), ("vmem", 1 << 30)))
    assert not any(f.exists() for f in folders)


def test_only_disk_limits_make_no_cgroup(parent, process):
    assert cgroups.apply("web", "k.web", process.pid, (("rbps", 1 << 20),)) == []
    assert not (CGROUP / "cpu" / parent).exists() and not (CGROUP / parent).exists()


def test_no_cgroups_mounted_is_one_line_with_the_fix(tmp_path, monkeypatch, process):
    monkeypatch.setenv("KVM_SYSFS", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        cgroups.apply("web", "k.web", process.pid, (("pcpu", 50),))
    assert err.value.message == (f"Limits need cgroups, and none is mounted on {tmp_path}/fs/cgroup: "
                                 f"mount cgroup2 there")
    (tmp_path / "fs" / "cgroup" / "memory").mkdir(parents=True)   # v1 with memory only: no cpu controller
    with pytest.raises(ConfigError, match=r"Limits need the cgroup controller 'cpu', and .*/fs/cgroup/cpu is "
                                          r"missing or not writable: mount cgroup2 on .* \(or the v1 cpu controller\)"):
        cgroups.apply("web", "k.web", process.pid, (("pcpu", 50),))
