"""kvm switch on Linux, for real, inside network namespaces this test makes (never the host's):
iproute2 bridges, kvm's own nftables table, kvm's own dnsmasq; a real guest gets a lease from that
dnsmasq and pings the switch's address and an address in a veth "WAN" namespace behind the NAT;
`switch check` finds a planted FORWARD DROP and forwarding off.

Commands run under `nsenter --net` (the network namespace only: see test_guest_bridge.py for why
not `ip netns exec`)."""

import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from tests.e2e.conftest import Terminal, Vm, links
from tests.guest import guestdisk


def sh(*argv, check=True):
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=60)


@pytest.fixture
def lab():
    """Two namespaces: HOST (where kvm runs) and WAN, joined by a veth (HOST's wan0 192.0.2.1/24,
    WAN's 192.0.2.2/24, HOST's default route through it); IP forwarding on in HOST."""
    for tool in ("ip", "nsenter", "nft", "dnsmasq"):
        if not sh("sh", "-c", f"command -v {tool}", check=False).stdout:
            pytest.skip(f"{tool} is missing (tests/setup.sh installs it)")
    host, wan = f"kvmh{uuid.uuid4().hex[:6]}", f"kvmw{uuid.uuid4().hex[:6]}"
    for ns in (host, wan):
        sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", host, "link", "add", "wan0", "type", "veth", "peer", "name", "up0", "netns", wan)
        sh("ip", "-n", host, "addr", "add", "192.0.2.1/24", "dev", "wan0")
        sh("ip", "-n", host, "link", "set", "wan0", "up")
        sh("ip", "-n", host, "link", "set", "lo", "up")
        sh("ip", "-n", wan, "addr", "add", "192.0.2.2/24", "dev", "up0")
        sh("ip", "-n", wan, "link", "set", "up0", "up")
        sh("ip", "-n", wan, "link", "set", "lo", "up")
        sh("ip", "-n", host, "route", "add", "default", "via", "192.0.2.2")
        sh("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield {"host": host, "wan": wan, "inside": ["nsenter", f"--net=/run/netns/{host}"]}
    finally:
        for ns in (host, wan):
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:  # dnsmasq, qemu: whatever the test left in the namespace
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            sh("ip", "netns", "delete", ns, check=False)


def kvm_in(lab, root, env, *args, timeout=120):
    return subprocess.run([*lab["inside"], f"./{args[0]}", *args[1:]], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


def commands(stderr):
    """The commands a --debug run logged ('+ ip link add ...'), as lists."""
    return [line[2:].split() for line in stderr.splitlines()
            if line.startswith("+ ") and not line.startswith("+ wrote")]


READS = (["ip", "-j", "-d", "addr", "show"], ["ip", "-j", "route", "show", "default"])


def writes(stderr):
    return [c for c in commands(stderr) if c not in READS and c[:2] not in (["nft", "list"], ["bridge", "-j"])]


def nft(lab, *args):
    return sh(*lab["inside"], "nft", *args, check=False)


def test_nat_dhcp_switch_made_idempotent_checked_and_destroyed(lab, install, env):
    root = install
    res = kvm_in(lab, root, env, "switch", "create", "lan", "--address", "10.0.5.1/24", "--nat", "--out", "wan0",
                 "--dhcp", "10.0.5.10-10.0.5.99", "--debug")
    assert res.returncode == 0, res.stderr
    assert writes(res.stderr) == [
        ["ip", "link", "add", "name", "lan", "type", "bridge"],
        ["ip", "addr", "add", "10.0.5.1/24", "dev", "lan"],
        ["ip", "link", "set", "dev", "lan", "up"],
        ["nft", "-f", "-"],
        ["dnsmasq", f"--conf-file={env['KVM_RUN_DIR']}/switch/lan/dnsmasq.conf"],
    ]
    assert "lan" in links(lab["host"])
    assert "lan" not in links(), "nothing in the host's namespace"
    table = nft(lab, "list", "table", "ip", "kvm").stdout
    assert 'ip saddr 10.0.5.0/24 ip daddr != 10.0.5.0/24 oifname "wan0" masquerade comment "kvm:lan:' in table
    assert 'iifname "lan" ip saddr 10.0.5.0/24 accept' in table
    conf = open(f"{env['KVM_RUN_DIR']}/switch/lan/dnsmasq.conf").read()
    assert "interface=lan\nbind-dynamic\n" in conf and "dhcp-range=10.0.5.10,10.0.5.99,255.255.255.0,12h" in conf
    pid = int(open(f"{env['KVM_RUN_DIR']}/switch/lan/dnsmasq.pid").read())
    assert str(pid) in sh("ip", "netns", "pids", lab["host"]).stdout.split(), "dnsmasq runs in the namespace"

    # up again: only reads
    res = kvm_in(lab, root, env, "switch", "up", "lan", "--debug")
    assert res.returncode == 0 and "(nothing to do)" in res.stdout, res.stderr
    assert writes(res.stderr) == []

    # half undone (the address and the NAT rules gone, as after a kill or an nftables restart): up completes it
    sh(*lab["inside"], "ip", "addr", "del", "10.0.5.1/24", "dev", "lan")
    nft(lab, "delete", "table", "ip", "kvm")
    res = kvm_in(lab, root, env, "switch", "up", "lan", "--debug")
    assert res.returncode == 0, res.stderr
    assert writes(res.stderr) == [["ip", "addr", "add", "10.0.5.1/24", "dev", "lan"], ["nft", "-f", "-"]]

    # check: fine; then a planted FORWARD DROP (Docker's) and forwarding off are found, with the fix
    res = kvm_in(lab, root, env, "switch", "check", "lan")
    assert res.returncode == 0 and res.stdout == "lan: ok\n", res.stdout + res.stderr
    nft(lab, "add", "table", "ip", "filter")
    nft(lab, "add", "chain", "ip", "filter", "FORWARD", "{ type filter hook forward priority 0; policy drop; }")
    sh("ip", "netns", "exec", lab["host"], "sysctl", "-qw", "net.ipv4.ip_forward=0")
    res = kvm_in(lab, root, env, "switch", "check", "lan")
    assert res.returncode == 1
    assert "chain FORWARD of table ip filter (Docker's) drops forwarded packets" in res.stdout
    assert "iptables -I DOCKER-USER -i lan -j ACCEPT" in res.stdout
    assert "IP forwarding is off" in res.stdout and "sysctl -w net.ipv4.ip_forward=1" in res.stdout

    res = kvm_in(lab, root, env, "switch", "destroy", "lan")
    assert res.returncode == 0, res.stderr
    assert "lan" not in links(lab["host"])
    assert "chain lan_nat" not in nft(lab, "list", "table", "ip", "kvm").stdout
    for _ in range(50):
        if str(pid) not in sh("ip", "netns", "pids", lab["host"]).stdout.split():
            break
        time.sleep(0.1)
    assert str(pid) not in sh("ip", "netns", "pids", lab["host"]).stdout.split(), "dnsmasq stopped"
    assert not (root / "switches" / "lan.conf").exists()


def test_an_uplink_with_the_hosts_address_is_refused_with_the_fix(lab, install, env):
    res = kvm_in(lab, install, env, "switch", "create", "lan", "--uplink", "wan0")
    assert res.returncode == 1
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and "uplink wan0 carries the host's address 192.0.2.1/24" in line
    assert "bridge_ports wan0" in line and "--manual br0" in line
    assert not (install / "switches" / "lan.conf").exists()
    assert "192.0.2.1/24" in sh(*lab["inside"], "ip", "-4", "addr", "show", "dev", "wan0").stdout


@pytest.mark.guest
def test_guest_gets_a_lease_and_pings_the_switch_and_the_wan_behind_the_nat(lab, install, env, guest_iso):
    root = install
    res = kvm_in(lab, root, env, "switch", "create", "lan", "--address", "10.0.5.1/24", "--nat", "--out", "wan0",
                 "--dhcp", "10.0.5.10-10.0.5.99")
    assert res.returncode == 0, res.stderr
    vm = Vm(root, env, "dh", guest_iso)
    vm.run("vmcreate", "dh", "-y", "--loader", "uefi", "--mem", "256M", "--disk-size", "64M", "--com", "yes",
           "--switch", "lan")
    guestdisk.make_disk(vm.disk, "dhcp=1")
    vm.run("insert", "dh", guest_iso)
    try:
        res = kvm_in(lab, root, env, "start", "-b", "dh")
        assert res.returncode == 0, vm.explain(res.stdout + res.stderr)
        assert links(lab["host"])["tapDH"].get("master") == "lan"
        assert "tapDH" not in links()
        vm.wait_console("KVMGUEST up boot=1")
        log = vm.console_log()
        assert "KVMGUEST dhcp 10.0.5." in log and "via 10.0.5.1" in log, vm.explain("no lease")
        info = json.loads(kvm_in(lab, root, env, "switch", "info", "lan", "--json").stdout)
        assert info["vms"] == ["dh"] and len(info["leases"]) == 1 and info["leases"][0]["ip"].startswith("10.0.5.")
        # the real dnsmasq's lease, matched by the MAC qemu gave the NIC: vminfo's and vmlist's address
        lease = {"address": info["leases"][0]["ip"], "source": "lease", "switch": "lan",
                 "mac": info["leases"][0]["mac"]}
        assert json.loads(kvm_in(lab, root, env, "vminfo", "dh", "--json").stdout)["addresses"] == [lease]
        assert json.loads(kvm_in(lab, root, env, "vmlist", "--json").stdout)[0]["addresses"] == [lease]
        term = Terminal(["./console", "dh"], root, env)
        term.read_until("quit with ~.")
        for target in ("10.0.5.1", "192.0.2.2"):
            term.type(f"ping -c 2 -W 3 {target} && echo PING-OK-{target}\r")
            term.read_until(f"PING-OK-{target}", timeout=40)
        term.type("\r~.")
        assert term.wait() == 0
    finally:
        vm.run("stop", "-f", "dh", ok=False, timeout=90)
    end = time.monotonic() + 15
    while "tapDH" in links(lab["host"]) and time.monotonic() < end:
        time.sleep(0.2)
    assert "tapDH" not in links(lab["host"]), vm.explain("tap left after stop")


@pytest.mark.guest
def test_two_guests_on_a_private_switch_reach_the_host_not_each_other(lab, install, env, guest_iso):
    """--private: each NIC is an isolated port (bridge link ... isolated on): both guests ping the
    switch's address, neither the other. (This machine's kernel has no bridge VLAN filtering and no
    802.1Q devices, so VLAN isolation itself is proven by the golden steps only.)"""
    root = install
    res = kvm_in(lab, root, env, "switch", "create", "iso", "--address", "10.0.7.1/24", "--private")
    assert res.returncode == 0, res.stderr
    vms = {}
    for name, addr in (("pa", "10.0.7.11/24"), ("pb", "10.0.7.12/24")):
        vm = vms[name] = Vm(root, env, name, guest_iso)
        vm.run("vmcreate", name, "-y", "--loader", "uefi", "--mem", "256M", "--disk-size", "64M", "--com", "yes",
               "--switch", "iso")
        guestdisk.make_disk(vm.disk, f"ip={addr}")
        vm.run("insert", name, guest_iso)
    try:
        for name, vm in vms.items():
            res = kvm_in(lab, root, env, "start", "-b", name)
            assert res.returncode == 0, vm.explain(res.stdout + res.stderr)
        for vm in vms.values():
            vm.wait_console("KVMGUEST up boot=1")
        term = Terminal(["./console", "pb"], root, env)
        term.read_until("quit with ~.")
        term.type("ping -c 2 -W 3 10.0.7.1 && echo PING-OK-host\r")
        term.read_until("PING-OK-host", timeout=40)
        term.type("ping -c 2 -W 2 10.0.7.11 || echo PING-NO-peer\r")
        term.read_until("PING-NO-peer", timeout=40)
        term.type("\r~.")
        assert term.wait() == 0
    finally:
        for vm in vms.values():
            vm.run("stop", "-f", vm.name, ok=False, timeout=90)


def test_an_up_killed_half_way_is_completed_by_the_next(lab, install, env, tmp_path):
    """kill -9 of `switch create` at its nft step (an `nft` on PATH that kills its parent, kvm, when
    asked to load rules): the bridge and address are there, NAT and DHCP not; the next `up` makes
    only those."""
    killer = tmp_path / "bin"
    killer.mkdir()
    (killer / "nft").write_text('#!/bin/sh\n[ "$1" = -f ] && kill -9 $PPID && sleep 5\nexec /usr/sbin/nft "$@"\n')
    (killer / "nft").chmod(0o755)
    killing = {**env, "PATH": f"{killer}:{env['PATH']}"}
    res = kvm_in(lab, install, killing, "switch", "create", "lan", "--address", "10.0.5.1/24", "--nat", "--out",
                 "wan0", "--dhcp", "10.0.5.10-10.0.5.99")
    assert res.returncode == -9, res.stderr
    assert "lan" in links(lab["host"]) and (install / "switches" / "lan.conf").exists()
    assert "lan_nat" not in nft(lab, "list", "ruleset").stdout
    res = kvm_in(lab, install, env, "switch", "up", "lan", "--debug")
    assert res.returncode == 0, res.stderr
    assert writes(res.stderr) == [["nft", "-f", "-"],
                                  ["dnsmasq", f"--conf-file={env['KVM_RUN_DIR']}/switch/lan/dnsmasq.conf"]]
    assert kvm_in(lab, install, env, "switch", "check", "lan").stdout == "lan: ok\n"
    assert kvm_in(lab, install, env, "switch", "destroy", "lan").returncode == 0
