"""Two test guests on a bridge ping each other: virtio-net on taps (Devices=), inside a network
namespace this test makes (taps and bridges never in the host's namespace)."""

import shutil
import subprocess
import uuid

import pytest

pytestmark = pytest.mark.guest


@pytest.fixture
def netns():
    if not shutil.which("ip"):
        pytest.skip("iproute2 is missing")
    name = f"kvmq{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)

    def ip(*args):
        subprocess.run(["ip", "-n", name, *args], check=True)

    ip("link", "add", "br0", "type", "bridge")
    for tap in ("tap0", "tap1"):
        ip("tuntap", "add", tap, "mode", "tap")
        ip("link", "set", tap, "master", "br0", "up")
    ip("link", "set", "br0", "up")
    yield name
    subprocess.run(["ip", "netns", "delete", name])


def test_two_guests_on_a_bridge_ping_each_other(guest, netns):
    prefix = ("ip", "netns", "exec", netns)
    a = guest("ip=10.0.0.1/24", prefix=prefix, Devices="3,virtio-net,tap0,mac=52:54:00:00:00:01")
    b = guest("ip=10.0.0.2/24", prefix=prefix, Devices="3,virtio-net,tap1,mac=52:54:00:00:00:02")
    for g in (a, b):
        g.serial.wait_for("KVMGUEST up boot=1", timeout=150)
    b.serial.send("ping -c 3 -W 5 10.0.0.1")
    took = b.serial.wait_for("packets transmitted", timeout=30)
    print("ping:", b.serial.data.decode(errors="replace").rsplit("packets transmitted", 1)[0][-200:],
          f"({took:.1f} s)")
    assert b", 0 packets received" not in b.serial.data
    b.serial.send("cat /sys/class/net/eth0/address")
    b.serial.wait_for("52:54:00:00:00:02", timeout=10)
