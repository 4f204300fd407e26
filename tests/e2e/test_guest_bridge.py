"""Two VMs made with ./vmcreate --bridge (a tap each, the preRun/postRun lines vmcreate writes for
Linux) and started with ./start, real guests, ping each other: everything inside a network
namespace this test makes, so no tap or bridge ever appears in the host's namespace.

The kvm commands that make interfaces (start: its hooks and qemu) run under `nsenter --net`,
which enters the network namespace only. `ip netns exec` would also give them a mount namespace
of their own, holding copies of the zfs-fuse mounts the VMs run from; those copies outlive our
view of them, and zfs-fuse is fragile about mounts going away under it."""

import subprocess
import time

import pytest

from tests.e2e.conftest import Terminal, Vm, links, netns  # noqa: F401 (fixture)
from tests.guest import guestdisk

pytestmark = pytest.mark.guest


def test_two_vms_on_a_bridge_ping_each_other(netns, install, env, guest_iso):
    inside = ["nsenter", f"--net=/run/netns/{netns}"]
    vms = {}
    for name, addr in (("pa", "10.0.0.1/24"), ("pb", "10.0.0.2/24")):
        vm = vms[name] = Vm(install, env, name, guest_iso)
        vm.run("vmcreate", name, "-y", "--loader", "uefi", "--mem", "256M", "--disk-size", "64M",
               "--com", "yes", "--bridge", "brPING")
        assert "BridgeAdd brPING tap" + name.upper() in (vm.dir / "run").read_text()
        guestdisk.make_disk(vm.disk, f"ip={addr}")
        vm.run("insert", name, guest_iso)
    try:
        for name in vms:
            res = subprocess.run([*inside, "./start", "-b", name], cwd=install, env=env,
                                 capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, vms[name].explain(res.stdout + res.stderr)
        for vm in vms.values():
            vm.wait_console("KVMGUEST up boot=1")
        inner = links(netns)
        assert inner["tapPA"].get("master") == "brPING" and inner["tapPB"].get("master") == "brPING"
        assert not {"tapPA", "tapPB", "brPING"} & set(links())

        term = Terminal(["./console", "pb"], install, env)
        term.read_until("quit with ~.")
        term.type("ping -c 3 -W 5 10.0.0.1\r")
        term.read_until("packets transmitted", timeout=40)
        term.read_until("loss", timeout=10)
        term.type("\r~.")
        assert term.wait() == 0
        said = term.out.decode(errors="replace")
        assert "3 packets received" in said or "2 packets received" in said, said[-600:]
        assert "packets transmitted" in vms["pb"].console_log()
    finally:
        for vm in vms.values():
            vm.run("stop", "-t", "20", vm.name, ok=False, timeout=90)
    # postRun (DestroyIF) removed each tap, inside the namespace
    end = time.monotonic() + 15
    while {"tapPA", "tapPB"} & set(links(netns)) and time.monotonic() < end:
        time.sleep(0.2)
    assert not {"tapPA", "tapPB"} & set(links(netns)), vms["pa"].explain("taps left after stop")
