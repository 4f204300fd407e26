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
