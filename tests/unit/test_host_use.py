"""What the host itself uses is never a VM's disk (issue 19.8): the platforms' host_use, with the
pool's vdevs stubbed (the real ones are tested through the CLI in tests/cli/test_media_paths.py)."""

import os
from pathlib import Path

import pytest

from kvm import zfs
from kvm.platform.freebsd import FreeBSD
from kvm.platform.linux import Linux


@pytest.fixture(autouse=True)
def no_pools(monkeypatch):
    monkeypatch.setattr(zfs, "pool_devices", lambda: [])


def mounted_block_device():
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, where = line.split()[:2]
        if source.startswith("/dev/") and os.path.exists(source) and Path(source).is_block_device():
            return source, where
    pytest.skip("no block device is mounted here")


def test_linux_names_a_mounted_device_and_swap(monkeypatch, tmp_path):
    dev, where = mounted_block_device()
    assert Linux().host_use(dev) == f"mounted at {where}"
    assert Linux().host_use("/etc/hostname") is None
    swap = tmp_path / "swapfile"
    swap.write_bytes(b"\0" * 4096)
    monkeypatch.setattr(Linux, "swaps", lambda self: [(str(swap), "swap")])
    assert Linux().host_use(swap) == "swap"


def test_a_pool_vdev_is_named_with_its_pool(monkeypatch, tmp_path):
    vdev = tmp_path / "pool.img"
    vdev.write_bytes(b"\0" * 4096)
    monkeypatch.setattr(zfs, "pool_devices", lambda: [("tank", str(vdev))])
    link = tmp_path / "other-name"
    link.symlink_to(vdev)
    assert Linux().host_use(link) == "a vdev of ZFS pool tank"


def test_freebsd_knows_a_disk_by_its_partitions(monkeypatch):
    bsd = FreeBSD()
    assert bsd.partition_of(0, "/dev/ada0", None, "/dev/ada0p2") == "/dev/ada0p2"
    assert bsd.partition_of(0, "/dev/ada0", None, "/dev/ada0s1a") == "/dev/ada0s1a"
    assert bsd.partition_of(0, "/dev/ada0", None, "/dev/ada10p1") is None
    assert bsd.partition_of(0, "/dev/ada0", None, None) is None
