"""kvm switch on FreeBSD, through the simulator (tests/sim: ifconfig with bridges, vlan(4), vlanfilter
and member_ifaddrs as FreeBSD 15 has them; sysctl; route; pfctl keeping anchors): the golden argv of
every ifconfig and pfctl call, the pf rule text, idempotent and resumable `up`, the lock, refusals
that change nothing, and a VM's NICs put on their switch at start and removed at stop."""

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, calls, cmd, create_vm, one_line_error, snapshot_tree


def sim(env, name, data=None):
    path = Path(env["KVM_SIM_DIR"]) / name
    if data is not None:
        path.write_text(json.dumps(data))
    return json.loads(path.read_text()) if path.exists() else None


def sim_run(env, *argv, input=None):
    return subprocess.run(list(argv), env=env, input=input, capture_output=True, text=True, timeout=30)


def mutating(env, since=0):
    """The calls since `since` that change the host (not the reads: ifconfig -a, sysctl -i, pfctl -s...)."""
    out = []
    for tool, argv in calls(env)[since:]:
        if tool == "ifconfig" and argv in (["-a"], ["-l"]) or len(argv) == 1 and tool == "ifconfig":
            continue
        if tool in ("sysctl", "route", "kldstat") or tool == "pfctl" and any(a.startswith("-s") for a in argv):
            continue
        out.append([tool, *argv])
    return out


@pytest.fixture
def fbsd(env):
    """FreeBSD 15.0 (the simulator's default): em0 up without an address, pf loaded and enabled."""
    sim_run(env, "kldload", "pf")
    sim_run(env, "pfctl", "-e")
    return env


def switch(root, env, *args):
    return cmd(root, env, "switch", *args)


def test_create_nat_switch_golden_argv_and_rules(install, fbsd):
    env, root = fbsd, install
    n = len(calls(env))
    res = switch(root, env, "create", "lan", "--uplink", "em0", "--address", "10.0.5.1/24", "--nat", "--mtu", "9000")
    assert res.returncode == 0, res.stderr
    assert "created switch lan" in res.stdout
    assert mutating(env, n) == [
        ["ifconfig", "bridge", "create", "name", "lan"],
        ["ifconfig", "lan", "mtu", "9000"],
        ["ifconfig", "em0", "mtu", "9000", "-txcsum", "-rxcsum", "-tso", "-lro", "up"],
        ["ifconfig", "lan", "addm", "em0"],
        ["ifconfig", "lan", "inet", "10.0.5.1/24"],
        ["ifconfig", "lan", "up"],
        ["pfctl", "-a", "kvm/lan", "-f", "-"],
    ]
    pf = sim(env, "pf.json")
    assert pf["anchors"]["kvm/lan"]["nat"] == ["nat on em0 inet from 10.0.5.0/24 to ! 10.0.5.0/24 -> (em0)"]
    rules = pf["anchors"]["kvm/lan"]["rules"]
    assert rules[0] == "pass in quick on lan inet from 10.0.5.0/24 to any keep state"
    assert rules[1].startswith('pass out quick on lan inet to 10.0.5.0/24 keep state label "kvm:lan:')
    ifs = sim(env, "ifaces.json")
    assert ifs["lan"]["members"] == ["em0"] and ifs["lan"]["up"] and ifs["lan"]["mtu"] == 9000
    assert ifs["lan"]["addrs"] == ["10.0.5.1/24"] and ifs["em0"]["mtu"] == 9000
    assert (root / "switches" / "lan.conf").read_text().splitlines()[1:] == [
        'Uplinks="em0"', 'Mtu="9000"', 'Address="10.0.5.1/24"', 'Nat="1"']
    # up again: nothing changes, nothing but reads runs
    n = len(calls(env))
    res = switch(root, env, "up", "lan")
    assert res.returncode == 0 and "switch lan is up (nothing to do)" in res.stdout, res.stderr
    assert mutating(env, n) == []


def wait_for(predicate, seconds=20, what="condition"):
    end = time.time() + seconds
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def running(root, env, name):
    res = cmd(root, env, "status", name)
    return res.stdout.strip().isdigit() and int(res.stdout.strip()) > 0


def test_vm_nics_on_switch_with_vlans_made_at_start_removed_at_stop(install, fbsd):
    """FreeBSD 15: a NIC with a VLAN is an access port (addm TAP untagged N) of a vlanfilter bridge,
    the uplink a trunk of it (+iftagged); the taps are made at start (the switch, down, brought up
    first) and destroyed at stop."""
    env, root = fbsd, install
    assert switch(root, env, "create", "lan", "--uplink", "em0").returncode == 0
    assert switch(root, env, "down", "lan").returncode == 0
    assert "lan" not in sim(env, "ifaces.json")
    d = create_vm(root, env, "web", "--disk-size", "1G", "--switch", "lan", "--vlan", "10", "--switch", "lan")
    conf = (d / "set.conf").read_text()
    assert 'Devices="3,virtio-net,tapWEB 4,virtio-net,tapWEBn1"' in conf
    assert 'Switch="tapWEB=lan:10 tapWEBn1=lan"' in conf
    assert "CreateIF tap" not in (d / "run").read_text()  # no preRun networking
    n = len(calls(env))
    res = cmd(root, env, "start", "-b", "web")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: running(root, env, "web"), what="web running")
    steps = mutating(env, n)
    net = [s for s in steps if s[0] == "ifconfig"]
    assert net == [
        ["ifconfig", "bridge", "create", "name", "lan"],
        ["ifconfig", "em0", "-txcsum", "-rxcsum", "-tso", "-lro", "up"],
        ["ifconfig", "lan", "addm", "em0"],
        ["ifconfig", "lan", "up"],
        ["ifconfig", "tap", "create", "name", "tapWEB"],
        ["ifconfig", "tapWEB", "-txcsum", "-rxcsum", "-tso", "-lro", "up"],
        ["ifconfig", "lan", "vlanfilter"],
        ["ifconfig", "lan", "addm", "tapWEB", "untagged", "10"],
        ["ifconfig", "lan", "+iftagged", "em0", "10"],
        ["ifconfig", "tap", "create", "name", "tapWEBn1"],
        ["ifconfig", "tapWEBn1", "-txcsum", "-rxcsum", "-tso", "-lro", "up"],
        ["ifconfig", "lan", "addm", "tapWEBn1"],
    ]
    first_bhyve = next(k for k, s in enumerate(steps) if s[0] == "bhyve")
    assert first_bhyve > steps.index(["ifconfig", "lan", "addm", "tapWEBn1"]), "the taps exist before bhyve starts"
    lan = sim(env, "ifaces.json")["lan"]
    assert lan["vlanfilter"] and lan["member_opts"]["tapWEB"]["untagged"] == 10
    assert lan["member_opts"]["em0"]["tagged"] == [10]
    out = sim_run(env, "ifconfig", "lan").stdout
    assert "member: tapWEB " in out and "untagged 10" in out and "tagged 10" in out
    info = json.loads(switch(root, env, "info", "lan", "--json").stdout)
    assert info["vms"] == ["web"] and info["state"] == "up" and set(info["members"]) == {"em0", "tapWEB", "tapWEBn1"}
    one_line_error(switch(root, env, "down", "lan"), "switch lan is used by running VMs: web")
    assert cmd(root, env, "stop", "web").returncode == 0
    ifs = sim(env, "ifaces.json")
    assert "tapWEB" not in ifs and "tapWEBn1" not in ifs, "the taps go with the VM"
    assert ifs["lan"]["members"] == ["em0"], "the switch stays up"


def test_freebsd14_refuses_a_nic_vlan_and_allows_an_addressed_uplink(install, fbsd):
    env, root = fbsd, install
    sim(env, "sysctl.json", {"kern.osreldate": "1403000", "net.inet.ip.forwarding": "0"})
    sim_run(env, "ifconfig", "em0", "inet", "192.168.1.5/24")
    res = switch(root, env, "create", "lan", "--uplink", "em0")
    assert res.returncode == 0, res.stderr  # 14 takes a member with an address
    create_vm(root, env, "web", "--disk-size", "1G", "--switch", "lan", "--vlan", "10")
    res = cmd(root, env, "start", "web")
    assert res.returncode != 0
    assert "do not filter VLANs" in res.stderr and "--vlan N" in res.stderr
    # the vm-bhyve way on 14: the switch's uplink carries the VLAN (member em0.10)
    n = len(calls(env))
    assert switch(root, env, "create", "v10", "--uplink", "em0", "--vlan", "10").returncode == 0
    assert mutating(env, n) == [
        ["ifconfig", "bridge", "create", "name", "v10"],
        ["ifconfig", "em0.10", "create", "vlan", "10", "vlandev", "em0"],
        ["ifconfig", "em0.10", "-txcsum", "-rxcsum", "-tso", "-lro", "up"],
        ["ifconfig", "v10", "addm", "em0.10"],
        ["ifconfig", "v10", "up"],
    ]
    n = len(calls(env))
    assert switch(root, env, "down", "v10").returncode == 0
    assert mutating(env, n) == [["ifconfig", "em0.10", "destroy"], ["ifconfig", "v10", "destroy"]]


def test_freebsd15_refuses_an_uplink_carrying_the_hosts_address_and_changes_nothing(install, fbsd):
    env, root = fbsd, install
    sim_run(env, "ifconfig", "em0", "inet", "192.168.1.5/24")
    before = snapshot_tree(root)
    n = len(calls(env))
    line = one_line_error(switch(root, env, "create", "lan", "--uplink", "em0"),
                          "uplink em0 carries the host's address")
    assert 'ifconfig_bridge0="inet 192.168.1.5/24 addm em0 up"' in line and "--manual bridge0" in line
    assert mutating(env, n) == [] and snapshot_tree(root) == before
    # the simulator itself refuses what FreeBSD 15 refuses
    sim_run(env, "ifconfig", "bridge0", "create")
    res = sim_run(env, "ifconfig", "bridge0", "addm", "em0")
    assert res.returncode == 1 and res.stderr.strip() == "ifconfig: BRDGADD em0: Invalid argument"
    # the recipe: the address on the admin's bridge, the switch on it with --manual
    sim_run(env, "ifconfig", "em0", "inet", "192.168.1.5/24", "-alias")
    assert sim_run(env, "ifconfig", "bridge0", "inet", "192.168.1.5/24", "addm", "em0", "up").returncode == 0
    res = switch(root, env, "create", "lan", "--manual", "bridge0")
    assert res.returncode == 0, res.stderr
    create_vm(root, env, "web", "--disk-size", "1G", "--switch", "lan")
    n = len(calls(env))
    assert cmd(root, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: running(root, env, "web"))
    assert ["ifconfig", "bridge0", "addm", "tapWEB"] in mutating(env, n)
    assert cmd(root, env, "stop", "web").returncode == 0
    n = len(calls(env))
    assert cmd(root, env, "vmset", "web", "Switch=", "Devices=").returncode == 0
    assert switch(root, env, "destroy", "lan").returncode == 0
    assert mutating(env, n) == [] and "bridge0" in sim(env, "ifaces.json"), "a manual bridge is the admin's"


@pytest.mark.parametrize("args, needles", [
    (["create", "lan", "--vlan", "4095", "--uplink", "em0"], ["Vlan='4095' is out of 1-4094"]),
    (["create", "lan", "--uplink", "em9"], ["uplink em9 does not exist"]),
    (["create", "em0"], ["switch name 'em0' looks like a host interface's"]),
    (["create", "Lan"], ["switch name 'Lan' is not valid"]),
    (["create", "lan", "--address", "10.0.5.0/24"], ["network or broadcast address"]),
    (["create", "lan", "--nat"], ["Nat needs an Address"]),
    (["create", "lan", "--address", "10.0.5.1/24", "--dhcp", "10.0.6.10-10.0.6.20"], ["not within 10.0.5.0/24"]),
    (["create", "lan", "--address", "10.0.5.1/24", "--dhcp", "10.0.5.1-10.0.5.20"], ["holds the switch's own"]),
    (["create", "lan", "--manual", "bridge7"], ["bridge bridge7 (--manual) does not exist"]),
    (["create", "lan", "--manual", "bridge7", "--uplink", "em0"], ["Uplinks is set with Manual=bridge7"]),
])
def test_bad_switches_are_refused_in_one_line_and_nothing_is_written(install, fbsd, args, needles):
    env, root = fbsd, install
    before = snapshot_tree(root)
    n = len(calls(env))
    res = switch(root, env, *args)
    assert res.returncode != 0
    one_line_error(res, *needles, status=res.returncode)
    assert snapshot_tree(root) == before and mutating(env, n) == []


def test_overlapping_subnets_and_an_existing_interface_are_refused(install, fbsd):
    env, root = fbsd, install
    assert switch(root, env, "create", "lan", "--address", "10.0.5.1/24").returncode == 0
    before = snapshot_tree(root)
    one_line_error(switch(root, env, "create", "dmz", "--address", "10.0.5.129/25"),
                   "subnet 10.0.5.128/25 overlaps switch lan's 10.0.5.0/24")
    sim_run(env, "ifconfig", "tap", "create", "name", "guest")
    one_line_error(switch(root, env, "create", "guest"), "a host interface is called guest already")
    one_line_error(switch(root, env, "create", "lan"), "switch lan exists already")
    assert snapshot_tree(root) == before


def test_destroy_refused_while_a_vm_uses_the_switch_then_removes_everything(install, fbsd):
    env, root = fbsd, install
    assert switch(root, env, "create", "lan", "--uplink", "em0", "--address", "10.0.5.1/24", "--nat").returncode == 0
    create_vm(root, env, "web", "--switch", "lan")
    create_vm(root, env, "db", "--switch", "lan")
    before = snapshot_tree(root)
    one_line_error(switch(root, env, "destroy", "lan"), "switch lan is used by VMs: db, web", status=8)
    assert snapshot_tree(root) == before and "lan" in sim(env, "ifaces.json")
    for vm in ("web", "db"):
        assert cmd(root, env, "vmdestroy", vm, "-y").returncode == 0
    n = len(calls(env))
    res = switch(root, env, "destroy", "lan")
    assert res.returncode == 0, res.stderr
    assert mutating(env, n) == [["pfctl", "-a", "kvm/lan", "-Fa"], ["ifconfig", "lan", "destroy"]]
    assert "kvm/lan" not in sim(env, "pf.json")["anchors"]
    assert not (root / "switches" / "lan.conf").exists() and "lan" not in sim(env, "ifaces.json")
    assert sim(env, "ifaces.json")["em0"]["up"], "the uplink stays as it was"


def test_a_half_done_up_is_completed_by_the_next(install, fbsd):
    """pf not loaded: create makes the bridge, then pfctl fails; the next `up` (pf loaded) runs only
    the step still missing."""
    env, root = fbsd, install
    sim(env, "kld.json", ["vmm"])
    res = switch(root, env, "create", "lan", "--uplink", "em0", "--address", "10.0.5.1/24", "--nat")
    one_line_error(res, "pfctl failed: switch lan's NAT rules (pf anchor kvm/lan): pfctl: /dev/pf: No such file")
    assert sim(env, "ifaces.json")["lan"]["up"]
    sim_run(env, "kldload", "pf")
    n = len(calls(env))
    assert switch(root, env, "up", "lan").returncode == 0
    assert mutating(env, n) == [["pfctl", "-a", "kvm/lan", "-f", "-"]]


def test_two_ups_never_interleave(install, fbsd):
    """The host-wide switch lock: an `up` waits while another holds it."""
    env, root = fbsd, install
    assert switch(root, env, "create", "lan", "--address", "10.0.5.1/24").returncode == 0
    assert switch(root, env, "down", "lan").returncode == 0
    lock = Path(env["KVM_RUN_DIR"]) / "host" / "switch.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = subprocess.Popen([str(root / "switch"), "up", "lan"], env=env, cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert proc.poll() is None, "up waits for the lock"
        assert "lan" not in sim(env, "ifaces.json")
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert proc.wait(30) == 0
    assert sim(env, "ifaces.json")["lan"]["up"]


def test_check_says_what_defeats_nat_and_the_fix(install, fbsd):
    env, root = fbsd, install
    sim_run(env, "pfctl", "-d")
    assert switch(root, env, "create", "lan", "--uplink", "em0", "--address", "10.0.5.1/24", "--nat").returncode == 0
    res = switch(root, env, "check", "lan")
    assert res.returncode == 1
    assert "IP forwarding is off" in res.stdout and "sysctl net.inet.ip.forwarding=1" in res.stdout
    assert "pf is not enabled" in res.stdout
    assert 'nat-anchor "kvm/*"; anchor "kvm/*"' in res.stdout
    sim_run(env, "sysctl", "net.inet.ip.forwarding=1")
    sim_run(env, "pfctl", "-e")
    conf = Path(env["KVM_SIM_DIR"]) / "pf.conf"
    conf.write_text('nat-anchor "kvm/*"\nanchor "kvm/*"\npass all\n')
    assert sim_run(env, "pfctl", "-f", str(conf)).returncode == 0
    res = switch(root, env, "check", "lan")
    assert res.returncode == 0 and res.stdout == "lan: ok\n", res.stdout


def test_dry_runs_change_nothing(install, fbsd):
    env, root = fbsd, install
    before = snapshot_tree(root)
    n = len(calls(env))
    res = switch(root, env, "create", "lan", "--uplink", "em0", "--address", "10.0.5.1/24", "--nat", "-n")
    assert res.returncode == 0, res.stderr
    assert "ifconfig bridge create name lan" in res.stdout and "pfctl -a kvm/lan -f -" in res.stdout
    assert "nat on em0 inet from 10.0.5.0/24" in res.stdout and "would create switch lan" in res.stdout
    assert snapshot_tree(root) == before and mutating(env, n) == []


def test_missing_dnsmasq_is_one_line_naming_the_package(install, fbsd):
    env = dict(fbsd, PATH=f"{REPO}/tests/sim/bin:{Path(sys.executable).parent}:/bin")
    before = snapshot_tree(install)
    one_line_error(switch(install, env, "create", "lan", "--address", "10.0.5.1/24", "--dhcp", "10.0.5.10-10.0.5.99"),
                   "switch lan: dnsmasq is not installed (pkg install dnsmasq)", status=6)  # 6: not found
    assert snapshot_tree(install) == before


def test_set_add_remove_list(install, fbsd):
    env, root = fbsd, install
    sim_run(env, "ifconfig", "tap", "create", "name", "tap7")
    assert switch(root, env, "create", "lan", "--address", "10.0.5.1/24").returncode == 0
    n = len(calls(env))
    assert switch(root, env, "add", "lan", "em0").returncode == 0
    assert ["ifconfig", "lan", "addm", "em0"] in mutating(env, n)
    one_line_error(switch(root, env, "add", "lan", "em0"), "em0 is an uplink already")
    n = len(calls(env))
    assert switch(root, env, "remove", "lan", "em0").returncode == 0
    assert mutating(env, n) == [["ifconfig", "lan", "deletem", "em0"]]
    assert switch(root, env, "set", "lan", "Mtu=9000").returncode == 0
    assert sim(env, "ifaces.json")["lan"]["mtu"] == 9000
    n = len(calls(env))
    assert switch(root, env, "set", "lan", "Address=10.0.9.1/24", "Nat=1", "NatOut=em0").returncode == 0
    assert mutating(env, n) == [["ifconfig", "lan", "inet", "10.0.5.1/24", "-alias"],
                                ["ifconfig", "lan", "inet", "10.0.9.1/24"], ["pfctl", "-a", "kvm/lan", "-f", "-"]]
    n = len(calls(env))
    assert switch(root, env, "set", "lan", "Nat=", "NatOut=", "Address=10.0.5.1/24").returncode == 0
    assert mutating(env, n) == [["ifconfig", "lan", "inet", "10.0.9.1/24", "-alias"],
                                ["ifconfig", "lan", "inet", "10.0.5.1/24"], ["pfctl", "-a", "kvm/lan", "-Fa"]]
    assert sim(env, "ifaces.json")["lan"]["addrs"] == ["10.0.5.1/24"]
    one_line_error(switch(root, env, "set", "lan", "Colour=blue"), "'Colour' is not a switch setting", status=2)
    rows = json.loads(switch(root, env, "list", "--json").stdout)
    assert [(r["name"], r["state"], r["mtu"], r["address"]) for r in rows] == [("lan", "up", 9000, "10.0.5.1/24")]
    res = switch(root, env, "list", "-H")
    assert res.stdout == "lan\tlan\tup\t10.0.5.1/24\tno\t-\t-\t-\n"


def test_a_clone_gets_taps_of_its_own_on_the_same_switches(install, fbsd):
    env, root = fbsd, install
    assert switch(root, env, "create", "lan").returncode == 0
    create_vm(root, env, "web", "--switch", "lan", "--switch", "lan", "--vlan", "20")
    res = cmd(root, env, "vmclone", "web", "web2", "-y")
    assert res.returncode == 0, res.stderr
    conf = (root / "vm" / "web2" / "set.conf").read_text()
    assert 'Devices="3,virtio-net,tapWEB2 4,virtio-net,tapWEB2n1"' in conf
    assert 'Switch="tapWEB2=lan tapWEB2n1=lan:20"' in conf
    assert json.loads(switch(root, env, "info", "lan", "--json").stdout)["vms"] == ["web", "web2"]


def test_a_switch_lock_held_too_long_is_one_line_naming_the_holder(install, fbsd, tmp_path):
    """The switch lock is waited for KVM_SWITCH_WAIT seconds at most (default 30), not for ever:
    a real `switch up` hung in its ifconfig holds it; another `up`, and a VM's start, give up with
    exit 8 naming the switch and that holder, having changed nothing; once the holder is gone the
    next `up` completes the switch."""
    env, root = fbsd, install
    assert switch(root, env, "create", "lan", "--address", "10.0.5.1/24").returncode == 0
    assert switch(root, env, "down", "lan").returncode == 0
    create_vm(root, env, "web", "--disk-size", "1G", "--switch", "lan")
    hang, flag = tmp_path / "hang", tmp_path / "hanging"
    hang.mkdir()
    real = subprocess.run(["sh", "-c", "command -v ifconfig"], env=env, capture_output=True, text=True).stdout.strip()
    (hang / "ifconfig").write_text(f'#!/bin/sh\nif [ "$*" = "bridge create name lan" ]; then touch {flag}; '
                                   f'exec sleep 120; fi\nexec {real} "$@"\n')
    (hang / "ifconfig").chmod(0o755)
    holder = subprocess.Popen([str(root / "switch"), "up", "lan"], cwd=root,
                              env=dict(env, PATH=f"{hang}:{env['PATH']}"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(flag.exists, what="the first up in its ifconfig")
        n, lock = len(calls(env)), Path(env["KVM_RUN_DIR"]) / "host" / "switch.lock"
        quick = dict(env, KVM_SWITCH_WAIT="1")
        began = time.monotonic()
        res = cmd(root, quick, "switch", "up", "lan")
        waited = time.monotonic() - began
        one_line_error(res, f"switch: switch lan: busy: pid {holder.pid} (switch up lan) holds {lock}; waited 1 s "
                            f"(KVM_SWITCH_WAIT): try again when it is done", status=8)
        assert 1 <= waited < 15, waited
        one_line_error(cmd(root, quick, "start", "web"),
                       f"start: web: switch lan: busy: pid {holder.pid} (switch up lan) holds {lock}", status=8)
        assert mutating(env, n) == [], "nothing changed: no bridge, no tap, no bhyve"
        assert not running(root, env, "web")
        one_line_error(cmd(root, dict(env, KVM_SWITCH_WAIT="soon"), "switch", "up", "lan"),
                       "KVM_SWITCH_WAIT='soon' is not a number of seconds", status=2)
    finally:
        os.killpg(holder.pid, 9)
        holder.wait(10)
    assert switch(root, env, "up", "lan").returncode == 0
    assert sim(env, "ifaces.json")["lan"]["up"]
