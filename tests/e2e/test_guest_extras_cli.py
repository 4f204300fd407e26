"""TPM, Limits, CPUPin and Agent on a real guest through the CLI (qemu, TCG): ./vmcreate with the
flags, ./start -b, the guest reboots once; at each boot swtpm serves the TPM from the VM's
folder (the guest gets the same endorsement key both times), the vCPU threads are pinned and
the qemu process sits in the VM's cgroup with its quota (read back from /proc and the cgroup
files); vminfo shows the agent's answer; ./stop of a guest that ignores ACPI goes through the
agent; then the cgroup and swtpm are gone."""

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import Vm  # noqa: F401 (the make_vm fixture's class)
from tests.guest import tpm2

pytestmark = pytest.mark.guest
CGROUP = Path("/sys/fs/cgroup")


@pytest.fixture
def cgroup_parent(env):
    """A cgroup parent of this test's own (KVM_CGROUP_PARENT), removed at the end."""
    if not (CGROUP / "cpu").is_dir() and not (CGROUP / "cgroup.controllers").is_file():
        pytest.skip("no cgroup cpu controller on this host")
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (apt-get install swtpm swtpm-tools)")
    name = f"kvmtest-{uuid.uuid4().hex[:8]}"
    env["KVM_CGROUP_PARENT"] = name
    yield name
    for base in (CGROUP / "cpu", CGROUP / "memory", CGROUP):
        folder = base / name
        if folder.is_dir():
            for sub in folder.iterdir():
                if sub.is_dir():
                    sub.rmdir()
            folder.rmdir()


def tasks_allowed(pid):
    """{thread id: Cpus_allowed_list} of a process's threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as fh:
            out[int(tid)] = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("Cpus_allowed_list:"))
    return out


def cgroup_of(pid, controller):
    with open(f"/proc/{pid}/cgroup") as fh:
        for line in fh:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(",") or (names == "" and controller == "unified"):
                return path
    return None


def swtpm_of(folder):
    """Pids of the swtpm processes serving the state in `folder`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if args and os.path.basename(args[0]) == b"swtpm" and f"dir={folder},mode=0600".encode() in args:
            found.append(int(pid))
    return found


def test_tpm_pins_limits_and_the_agent_on_a_real_guest(cgroup_parent, make_vm, tmp_path):
    vm = make_vm("x1", "tpm=ek reboot=2 agent=1 acpi=ignore", "--cores", "2", "--tpm", "swtpm",
                 "--cpu-pin", "0:1 1:0", "--limits", "pcpu=100 vmem=2G", "--agent", "yes")
    vm.run("start", "-b", "x1")
    vm.wait_console("KVMGUEST up boot=2")
    keys = [tpm2.public_point(bytes.fromhex(line.split("ek=", 1)[1].split()[0]))
            for line in vm.console_log().splitlines() if "KVMGUEST tpm ek=" in line]
    assert len(keys) == 2 and keys[0] == keys[1], vm.explain(keys)   # the TPM kept its state across the reboot
    assert (vm.dir / "tpm").stat().st_mode & 0o777 == 0o700 and (vm.dir / "tpm" / "tpm2-00.permall").is_file()
    assert len(swtpm_of(vm.dir / "tpm")) == 1
    state = vm.state()
    pid = state["bhyve"]                           # the second boot's qemu: pinned and limited again
    allowed = tasks_allowed(pid)
    assert {v: allowed[t] for v, t in state["vcpu_threads"].items()} == {"0": "1", "1": "0"}, vm.explain(allowed)
    key = f"{run_root(vm)}.x1"
    if (CGROUP / "cpu").is_dir():
        assert cgroup_of(pid, "cpu") == f"/{cgroup_parent}/{key}"
        folder = CGROUP / "cpu" / cgroup_parent / key
        assert (folder / "cpu.cfs_quota_us").read_text().strip() == "100000"
        assert (folder / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (CGROUP / "memory" / cgroup_parent / key / "memory.limit_in_bytes").read_text().strip() == str(2 << 30)
    else:
        folder = CGROUP / cgroup_parent / key
        assert (folder / "cpu.max").read_text().strip() == "100000 100000"
    info = vm.info()
    assert info["agent"]["answer"] == {"os": "KVM test guest (busybox)", "addresses": ["10.0.0.9"]}
    assert info["addresses"] == [{"address": "10.0.0.9", "source": "agent", "switch": None, "mac": None}]
    assert_inventory_host(vm, tmp_path, "10.0.0.9")
    res = vm.run("stop", "x1", timeout=120)       # the guest ignores ACPI: the agent shuts it down
    assert "asked through the guest agent" in res.stdout, vm.explain(res.stdout + res.stderr)
    assert "KVMGUEST poweroff (guest agent)" in vm.console_log()
    assert not folder.exists() and swtpm_of(vm.dir / "tpm") == []


def assert_inventory_host(vm, tmp_path, address):
    """The kvm.host inventory plugin's ansible_host for the VM: the agent's address (no lease),
    asked of vminfo --json since vmlist asks no agent."""
    import json
    import subprocess
    import sys
    bin_ = Path(sys.executable).parent / "ansible-inventory"
    if not bin_.exists():
        return   # ansible-core is in the test extra; without it tests/ansible is skipped too
    inv = tmp_path / "one.kvm.yml"
    inv.write_text(f'plugin: kvm.host.kvm\nhosts:\n  - {{name: h, root: "{vm.root}", kvm_bin: "{sys.executable} -m kvm"}}\n')
    env = dict(vm.env, ANSIBLE_COLLECTIONS_PATH=str(Path(__file__).parents[2] / "ansible"),
               ANSIBLE_HOME=str(tmp_path / "ah"), ANSIBLE_INVENTORY_ENABLED="kvm.host.kvm")
    res = subprocess.run([str(bin_), "-i", str(inv), "--host", vm.name], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, vm.explain(res.stderr)
    facts = json.loads(res.stdout)
    unsafe = lambda v: v["__ansible_unsafe"] if isinstance(v, dict) and "__ansible_unsafe" in v else v  # noqa: E731
    assert unsafe(facts["ansible_host"]) == address, vm.explain(res.stdout)
    assert [unsafe(a["source"]) for a in facts["kvm_addresses"]] == ["agent"], vm.explain(res.stdout)


def run_root(vm):
    """The VM's root id (RUN_DIR/ROOT_ID/NAME)."""
    from tests.conftest import run_folder
    return run_folder(vm.env, vm.root, vm.name).parent.name
