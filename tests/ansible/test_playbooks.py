"""The kvm.host collection driven by real `ansible-playbook -i localhost, -c local` on the test pool
(the bhyve simulator): VMs from an image with cloud-init, started, snapshotted, Mem changed with a
restart, copied and migrated to a second install root with kvm_send, rolled back, destroyed; a play
run twice reports changed then ok; check mode creates nothing; the inventory plugin lists the VMs
of two "hosts" (two roots). ansible-playbook starts in about 2 s: tasks are batched into few plays."""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, cmd, datasets, destroy_dataset, kvm

COLLECTIONS = REPO / "ansible"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtestkeytestkeytestkeytestkeytestkeytest admin@host"
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not (BIN / "ansible-playbook").exists(),
                                reason="ansible-core is not installed (the test extra has it)")


@pytest.fixture
def play(env, tmp_path, install):
    """Run a playbook (YAML text) with extra vars; returns (CompletedProcess, recap {ok, changed, failed})."""
    e = dict(env, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_HOME=str(tmp_path / "ansible-home"),
             ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_PYTHON_INTERPRETER=sys.executable,
             ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
             ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    n = [0]

    def run(text, *args, inventory="localhost,", **extra):
        n[0] += 1
        path = tmp_path / f"play{n[0]}.yml"
        path.write_text(text)
        extra = dict({"kvm_bin": f"{sys.executable} -m kvm", "root": str(install)}, **extra)
        res = subprocess.run([str(BIN / "ansible-playbook"), "-i", inventory, "-c", "local", str(path),
                              "-e", json.dumps(extra), *args], env=e, capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
        found = re.search(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)",
                          res.stdout, re.M)
        recap = dict(zip(("ok", "changed", "failed"), map(int, found.groups()))) if found else None
        return res, recap
    return run


@pytest.fixture
def second_root(scratch_pool, env, install):
    """A second install root on a pool of its own, as a second "host"."""
    name = scratch_pool(160)
    assert kvm(env, "kvminst", "-p", name, "-y").returncode == 0
    yield Path(f"/{name}/kvm")
    for vm in ("web3", "web2"):
        kvm(env, "--root", f"/{name}/kvm", "stop", "-f", vm)
    destroy_dataset(f"{name}/kvm")


CONVERGE = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/kvm.host.kvm: {kvm_bin: "{{ kvm_bin }}", root: "{{ root }}"}
  tasks:
    - kvm.host.kvm_image:
        name: tiny
        path: "{{ image }}"
        os: none
    - kvm.host.kvm_vm:
        name: "{{ item }}"
        state: running
        from_image: tiny
        network: false
        vnc: "no"
        com: true
        cores: 1
        mem: "{{ mem }}"
        restart_on_change: true
        autostart: true
        settings:
          StopTimeout: "5"
        cloud_init:
          user: admin
          ssh_keys: ["{{ key }}"]
      loop: [web1, web2, web3]
      register: vms
    - kvm.host.kvm_snapshot:
        vm: "{{ item }}"
        name: s1
        keep: 3
      loop: [web1, web2, web3]
    - kvm.host.kvm_info:
        names: [web1]
        snapshots: true
      register: info
    - ansible.builtin.assert:
        that:
          - info.vms | map(attribute='name') | sort == ['web1', 'web2', 'web3']
          - info.vms | map(attribute='state') | unique == ['running']
          - info.vms | map(attribute='auto') | unique == [true]
          - info.vm.web1.cloud_init
          - info.vm.web1.origin.image == 'tiny'
          - info.vm.web1.snapshots | map(attribute='name') | list == ['s1']
          - info.vm.web1.mem == mem
          - info.images | map(attribute='name') | list == ['tiny']
"""


def test_converge_check_mode_then_changed_then_ok_then_mem_with_restart(play, install, env, pool, tmp_path):
    image = tmp_path / "tiny.raw"
    image.write_bytes(b"\0" * (1 << 20))
    key = tmp_path / "id.pub"
    key.write_text(KEY + "\n")
    args = dict(image=str(image), key=str(key), mem="1G")
    before = datasets(pool)
    res, recap = play(CONVERGE.replace("    - kvm.host.kvm_info:", "    - meta: end_play\n    - kvm.host.kvm_info:"),
                      "--check", **args)
    assert recap and recap["failed"] == 0 and recap["changed"] == 3, res.stdout + res.stderr  # image, VMs, snapshots
    assert datasets(pool) == before, "check mode created something"

    res, recap = play(CONVERGE, "--diff", **args)
    assert recap and recap["failed"] == 0 and recap["changed"] == 3, res.stdout + res.stderr
    assert res.stdout.count("changed: [localhost] => (item=web") == 6, res.stdout   # 3 VMs, 3 snapshots
    pids = {n: json.loads(cmd(install, env, "status", n, "--json").stdout)["pid"] for n in ("web1", "web2", "web3")}
    assert all(pids.values())
    assert (install / "vm" / "web1" / "seed.iso").is_file()

    res, recap = play(CONVERGE, **args)
    assert recap and recap["failed"] == 0 and recap["changed"] == 0, res.stdout + res.stderr   # the same play: ok

    # Mem for all three, running: vmset's restart_required, restart_on_change restarts them; diff shows set.conf
    res, recap = play(CONVERGE, "--diff", **dict(args, mem="2G"))
    assert recap and recap["failed"] == 0 and recap["changed"] == 1, res.stdout + res.stderr
    assert res.stdout.count("changed: [localhost] => (item=web") == 3, res.stdout
    assert "-Mem=1G" in res.stdout and "+Mem=2G" in res.stdout, res.stdout   # (unset before: shown as the default)
    for name, pid in pids.items():
        now = json.loads(cmd(install, env, "status", name, "--json").stdout)
        assert now["state"] == "running" and now["pid"] != pid, (name, now)   # restarted with the new Mem
    for name in pids:
        assert cmd(install, env, "stop", name).returncode == 0


OPERATE = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/kvm.host.kvm: {kvm_bin: "{{ kvm_bin }}", root: "{{ root }}"}
  tasks:
    - kvm.host.kvm_vm: {name: web1, state: running, network: false, vnc: "no", com: true}
      register: started
    - kvm.host.kvm_vm: {name: web1, state: running}
      register: running
    - kvm.host.kvm_snapshot: {vm: web1, name: s1}
    - kvm.host.kvm_vm: {name: web1, state: stopped}
      register: stopped
    - kvm.host.kvm_vm: {name: web1, state: stopped}
      register: still
    - ansible.builtin.assert:   # start --json and stop --json: already as asked is changed false, exit 0
        that:
          - started.power.start.changed and started.power.start.pid > 0
          - not running.changed and running.power.start.pid == started.power.start.pid
          - stopped.power.stop.was == 'running' and stopped.power.stop.how == 'acpi'
          - not still.changed and still.power.stop.how == 'none'
    - ansible.builtin.file: {path: "{{ root }}/vm/web1/mark", state: touch}
    - kvm.host.kvm_snapshot: {vm: web1, name: s1, state: rolled_back}
    - ansible.builtin.stat: {path: "{{ root }}/vm/web1/mark"}
      register: mark
    - ansible.builtin.assert: {that: [not mark.stat.exists]}
    - kvm.host.kvm_send: {name: web1, mode: copy, local_root: "{{ far }}", start: false}
      register: copied
    - ansible.builtin.assert:
        that: [copied.dest_vm.name == 'web1', copied.vm.migrated is none, copied.send.mode == 'copy',
               copied.send.bytes > 0, copied.send.downtime_s is none]
    - kvm.host.kvm_send: {name: web1, local_root: "{{ far }}", start: false}
      register: moved
    - ansible.builtin.assert:
        that: [moved.vm.migrated is string, moved.dest_vm.state == 'stopped', moved.send.migrated,
               not moved.send.started]
    - kvm.host.kvm_send: {name: web1, local_root: "{{ far }}", start: false}
      register: again
    - ansible.builtin.assert: {that: [not again.changed, not again.send.changed]}
    - kvm.host.kvm_snapshot: {vm: web1, name: s1, state: absent}
    - kvm.host.kvm_vm: {name: web1, state: absent}
      register: destroyed
    - kvm.host.kvm_vm: {name: web1, state: absent}
      register: gone
    - ansible.builtin.assert:
        that: [not gone.changed, "destroyed.power.vmdestroy.destroyed[-1].endswith('/vm/web1')"]
    - kvm.host.kvm_vm: {kvm_bin: "{{ kvm_bin }}", root: "{{ far }}", name: web1, state: absent}
"""


def test_operate_rollback_send_to_a_second_root_and_destroy(play, install, env, pool, second_root):
    res, recap = play(OPERATE, far=str(second_root))
    assert recap and recap["failed"] == 0, res.stdout + res.stderr
    # running, snapshot, stopped, touch, rolled back, copy, migrate, snap absent, destroy, destroy on far
    assert recap["changed"] == 10, res.stdout
    assert not (install / "vm" / "web1").exists() and not (second_root / "vm" / "web1").exists()
    assert not any("/vm/web1" in d for d in datasets(pool))


def test_a_failure_is_kvms_own_error_and_exit_status(play, install):
    res, recap = play("""
- hosts: localhost
  gather_facts: false
  tasks:
    - kvm.host.kvm_snapshot: {kvm_bin: "{{ kvm_bin }}", root: "{{ root }}", vm: nosuch, name: s1}
""")
    assert recap and recap["failed"] == 1, res.stdout
    assert '"rc": 6' in res.stdout and "snap: nosuch: no such VM" in res.stdout, res.stdout


def plain(value):
    """ansible-inventory's JSON with its wrapping of untrusted values ({"__ansible_unsafe": v}) undone."""
    if isinstance(value, dict):
        return value["__ansible_unsafe"] if set(value) == {"__ansible_unsafe"} else {k: plain(v) for k, v in value.items()}
    return [plain(v) for v in value] if isinstance(value, list) else value


def test_inventory_lists_the_vms_of_two_roots(play, install, env, second_root, tmp_path):
    for root, name in ((install, "a1"), (second_root, "b1")):
        assert kvm(env, "--root", root, "vmcreate", name, "-y", "--no-network", "--vnc", "no", "--com", "yes",
                   "--disk-size", "64M").returncode == 0
    # a2 on a kvm switch, with the lease its dnsmasq wrote for the NIC's MAC (bhyve's for slot 3)
    assert kvm(env, "--root", install, "switch", "create", "lan").returncode == 0
    assert kvm(env, "--root", install, "vmcreate", "a2", "-y", "--switch", "lan", "--vnc", "no", "--com", "yes",
               "--no-disk").returncode == 0
    d = hashlib.md5(b"3-0-a2").digest()
    mac = "00:a0:98:%02x:%02x:%02x" % (d[0], d[1], d[2])
    leases = Path(env["KVM_RUN_DIR"]) / "switch" / "lan" / "dnsmasq.leases"
    leases.parent.mkdir(parents=True, exist_ok=True)
    leases.write_text(f"{int(time.time()) + 3600} {mac} 10.0.7.50 a2 *\n")
    assert kvm(env, "--root", install, "start", "-b", "a1").returncode == 0
    inv = tmp_path / "fleet.kvm.yml"
    bin_ = f"{sys.executable} -m kvm"
    inv.write_text(f"""plugin: kvm.host.kvm
hosts:
  - {{name: host-a, root: "{install}", kvm_bin: "{bin_}"}}
  - {{name: host-b, root: "{second_root}", kvm_bin: "{bin_}"}}
name_format: "{{host}}-{{vm}}"
compose:
  ansible_connection: "'local'"
""")
    e = dict(env, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_HOME=str(tmp_path / "ah"),
             ANSIBLE_INVENTORY_ENABLED="kvm.host.kvm")
    res = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inv), "--list"], env=e, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert sorted(got["kvm_on_host_a"]["hosts"]) == ["host-a-a1", "host-a-a2"]
    assert got["kvm_on_host_b"]["hosts"] == ["host-b-b1"]
    assert got["kvm_running"]["hosts"] == ["host-a-a1"] and sorted(got["kvm_stopped"]["hosts"]) == \
        ["host-a-a2", "host-b-b1"]
    hostvars = plain(got["_meta"]["hostvars"]["host-a-a1"])
    assert (hostvars["kvm_host"], hostvars["kvm_vm"]["name"], hostvars["ansible_connection"]) == \
        ("host-a", "a1", "local")
    assert hostvars["kvm_addresses"] == [] and "ansible_host" not in hostvars     # no lease, no agent: none
    a2 = plain(got["_meta"]["hostvars"]["host-a-a2"])
    assert a2["ansible_host"] == "10.0.7.50" and a2["kvm_addresses"] == \
        [{"address": "10.0.7.50", "source": "lease", "switch": "lan", "mac": mac}]
    assert kvm(env, "--root", install, "stop", "a1").returncode == 0


SWITCH = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/kvm.host.kvm: {kvm_bin: "{{ kvm_bin }}", root: "{{ root }}"}
  tasks:
    - kvm.host.kvm_switch:
        name: lan
        address: 10.0.8.1/24
        nat: true
        private: true
        mtu: "{{ mtu | default(omit) }}"
      register: lan
    - ansible.builtin.assert:
        that: [lan.switch.name == 'lan', lan.switch.address == '10.0.8.1/24', lan.switch.nat, lan.switch.private]
      when: not ansible_check_mode
    - ansible.builtin.assert:   # switch set of only what differs
        that: "lan.changes == (['Mtu=9000'] if lan.changed and mtu is defined else [])"
"""

SWITCH_STATES = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/kvm.host.kvm: {kvm_bin: "{{ kvm_bin }}", root: "{{ root }}"}
  tasks:
    - kvm.host.kvm_switch: {name: lan, state: down}
      register: down
    - kvm.host.kvm_switch: {name: lan, state: down}
      register: again
    - kvm.host.kvm_switch: {name: lan, state: up}
      register: up
    - ansible.builtin.assert:
        that: [down.changed, down.switch.state == 'down', not again.changed, up.changed, up.switch.state == 'up']
    - kvm.host.kvm_switch: {name: lan, state: absent}
      register: used
      ignore_errors: true
    - ansible.builtin.assert:
        that: [used.failed, "'used by VMs: sw1' in used.msg", used.rc == 8]
    - kvm.host.kvm_vm: {name: sw1, state: absent}
    - kvm.host.kvm_switch: {name: lan, state: absent}
      register: gone
    - kvm.host.kvm_switch: {name: lan, state: absent}
      register: gone_again
    - ansible.builtin.assert:
        that: [gone.changed, gone.switch is none, not gone_again.changed]
"""


def test_switch_check_mode_then_changed_then_ok_then_set_down_up_and_absent(play, install, env, pool):
    """kvm_switch (issue 24): switch create --json, switch set of only what differs, up/down, destroy."""
    subprocess.run(["kldload", "pf"], env=env, capture_output=True)   # the simulator's FreeBSD: pf for --nat
    subprocess.run(["pfctl", "-e"], env=env, capture_output=True)
    conf = install / "switches" / "lan.conf"
    before = datasets(pool)
    res, recap = play(SWITCH, "--check", "--diff")
    assert recap and recap["failed"] == 0 and recap["changed"] == 1, res.stdout + res.stderr
    assert not conf.exists() and datasets(pool) == before, "check mode created something"
    assert '+Address="10.0.8.1/24"' in res.stdout, res.stdout

    res, recap = play(SWITCH, "--diff")
    assert recap and recap["failed"] == 0 and recap["changed"] == 1, res.stdout + res.stderr
    assert "Nat=" in conf.read_text() and "Private=" in conf.read_text()
    info = json.loads(cmd(install, env, "switch", "info", "lan", "--json").stdout)
    assert (info["state"], info["address"], info["nat"], info["private"]) == ("up", "10.0.8.1/24", True, True)

    res, recap = play(SWITCH)
    assert recap and recap["failed"] == 0 and recap["changed"] == 0, res.stdout + res.stderr   # the same play: ok

    text = conf.read_text()
    res, recap = play(SWITCH, "--check", "--diff", mtu=9000)                 # a change, in check mode: none made
    assert recap and recap["failed"] == 0 and recap["changed"] == 1, res.stdout + res.stderr
    assert '+Mtu="9000"' in res.stdout and conf.read_text() == text, res.stdout
    res, recap = play(SWITCH, "--diff", mtu=9000)                            # only Mtu set (switch set)
    assert recap and recap["failed"] == 0 and recap["changed"] == 1, res.stdout + res.stderr
    assert json.loads(cmd(install, env, "switch", "info", "lan", "--json").stdout)["mtu"] == 9000
    res, recap = play(SWITCH, mtu=9000)
    assert recap and recap["failed"] == 0 and recap["changed"] == 0, res.stdout + res.stderr

    assert kvm(env, "--root", install, "vmcreate", "sw1", "-y", "--switch", "lan", "--vnc", "no",
               "--disk-size", "64M").returncode == 0
    res, recap = play(SWITCH_STATES)
    assert recap and recap["failed"] == 0, res.stdout + res.stderr
    assert not conf.exists()
    assert json.loads(cmd(install, env, "switch", "list", "--json").stdout) == []
