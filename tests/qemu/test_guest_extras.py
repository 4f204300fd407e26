"""TPM, CPU pinning and the guest agent with a real guest (qemu, TCG) and kvm's own pieces: the
guest sees the TPM swtpm serves from the VM's state folder and gets the same endorsement key
after a reboot; each vCPU thread is pinned (read back from /proc) before the guest runs; a guest
that ignores the ACPI button is stopped through its agent, which also tells vminfo what it is."""

import shutil
import time

import pytest

from kvm.host.runfiles import RunFiles
from kvm.hypervisor.qemu.backend import Qemu, pin_vcpus, vcpu_threads
from kvm.run import agent, power, swtpm
from tests.guest import tpm2
from tests.qemu.conftest import Guest

pytestmark = pytest.mark.guest


class Vm:
    """What swtpm and the agent ask of a VM: name, folder, run files."""

    def __init__(self, folder, run_folder):
        self.name, self.dir, self.run = folder.name, folder, RunFiles(folder.name, run_folder)


@pytest.fixture
def vm(short_dir, guest_iso):
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (apt-get install swtpm swtpm-tools)")
    (short_dir / "w").mkdir()
    (short_dir / "w" / "tpm").mkdir(mode=0o700)
    return Vm(short_dir / "w", short_dir / "w")


def boot_with_tpm(vm, iso, script):
    tpm = swtpm.Swtpm(vm, Qemu())
    tpm.start()
    return tpm, Guest(vm.dir, vm.dir.parent, iso, script, {"TPM": "swtpm"})


def endorsement_key(g):
    g.serial.wait_for("KVMGUEST tpm tpm0")
    g.serial.wait_for("KVMGUEST up boot=")
    text = g.serial.data.decode(errors="replace")
    hex_response = text.split("KVMGUEST tpm ek=", 1)[1].split()[0]
    return tpm2.public_point(bytes.fromhex(hex_response))


def test_the_guest_sees_the_tpm_and_keeps_it_across_a_reboot(vm, guest_iso):
    tpm, g = boot_with_tpm(vm, guest_iso, "tpm=ek reboot=2")
    try:
        first = endorsement_key(g)
        reason, code, _ = g.wait_exit(timeout=30)       # the guest rebooted: qemu ends, as kvm runs it
        assert (reason, code) == ("guest-reset", 0)
    finally:
        g.close()
        tpm.stop()
    assert (vm.dir / "tpm" / "tpm2-00.permall").is_file()   # the state is in the VM's folder
    tpm, g = boot_with_tpm(vm, guest_iso, "tpm=ek")            # the next launch: a new swtpm, same state
    try:
        assert endorsement_key(g) == first
    finally:
        g.close()
        tpm.stop()


def allowed_cpus(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/status") as fh:
        return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("Cpus_allowed_list:"))


def test_pins_before_the_guest_runs_and_a_stop_through_the_agent(short_dir, guest_iso):
    (short_dir / "p").mkdir()
    vm = Vm(short_dir / "p", short_dir / "p")
    g = Guest(vm.dir, short_dir, guest_iso, "acpi=ignore agent=1",
              {"Cores": "2", "CPUPin": "0:1 1:0", "Agent": "yes"})
    try:
        assert g.plan.paused and g.qmp.execute("query-status")["status"] == "prelaunch"
        pin_vcpus(g.qmp, g.plan.cpu_pin)
        threads = vcpu_threads(g.qmp)
        assert {v: allowed_cpus(g.proc.pid, t) for v, t in threads.items()} == {0: "1", 1: "0"}
        g.qmp.execute("cont")
        g.serial.wait_for("KVMGUEST agent on")
        g.serial.wait_for("KVMGUEST up boot=1")
        assert agent.facts(vm.run, timeout=10) == {"os": "KVM test guest (busybox)", "addresses": ["10.0.0.9"]}
        g.qmp.execute("system_powerdown")               # ignored by this guest
        time.sleep(2)
        assert g.proc.poll() is None
        steps = power.sequence(Qemu(), vm.run, g.proc.pid, 30, False, agent=True)
        assert next(steps)[0] == "agent"
        g.serial.wait_for("KVMGUEST poweroff (guest agent)", timeout=30)
        reason, code, _ = g.wait_exit(timeout=30)
        assert (reason, code) == ("guest-shutdown", 0)
    finally:
        g.close()
