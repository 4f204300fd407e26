"""The running side without a VM: the stop sequence, masking, the detached start's reasons."""

import signal
import sys

import pytest

from kvm.cli import start
from kvm.conf import config
from kvm.hypervisor import current
from kvm.hypervisor.bhyve import backend as bhyve
from kvm.run import power, supervisor

VMDIR = "/tank/kvm/vm"


class FakeHv:
    """Records what the stop sequence asks of a hypervisor."""

    def __init__(self):
        self.calls = []

    def power_button(self, name, pid):
        self.calls.append(("button", name, pid))

    def force_off(self, name, pid):
        self.calls.append(("force", name, pid))


@pytest.fixture
def no_kill(monkeypatch):
    sent = []
    monkeypatch.setattr(power.host, "send_signal", lambda pid, sig, **kw: sent.append((pid, sig)))
    return sent


def test_stop_sequence_is_acpi_then_forced_then_kill(no_kill):
    hv = FakeHv()
    steps = power.sequence(hv, "web", 42, 7, False)
    assert next(steps)[:2] == ("acpi", 7) and hv.calls == [("button", "web", 42)]
    assert next(steps)[:2] == ("forced", power.FORCE_GRACE) and hv.calls[-1] == ("force", "web", 42)
    assert no_kill == []
    assert next(steps)[:2] == ("killed", power.KILL_WAIT) and no_kill == [(42, signal.SIGKILL)]
    assert next(steps, None) is None


def test_forced_stop_skips_the_button(no_kill):
    hv = FakeHv()
    assert [step[0] for step in power.sequence(hv, "web", 42, 7, True)] == ["forced", "killed"]
    assert [c[0] for c in hv.calls] == ["force"]


def test_vnc_password_is_masked_in_the_shown_line_only():
    c = config.validate("v", f"{VMDIR}/v", config.parse_text('VMrom="uefi"\nVNC=1\nVNCpassword="s3cret"\n'), cpus=8)
    argv = bhyve.plan(c, rom="/r/u.fd", vnc_port=5900).argv
    assert "30,fbuf,tcp=127.0.0.1:5900" in argv and not any("s3cret" in a for a in argv)   # -k FILE has it
    shown = current().shown(argv + ["30,fbuf,tcp=127.0.0.1:5900,password=s3cret"])   # a shell kvm's line too
    assert "password=***" in shown and "s3cret" not in shown


def test_a_line_the_log_cannot_take_is_dropped(monkeypatch):
    """A detached supervisor's log on a full pool: the write fails (as on /dev/full), the VM goes on."""
    with open("/dev/full", "w") as full:
        monkeypatch.setattr(sys, "stdout", full)
        supervisor.write_line("bhyve -c 1 -m 1G " + "x" * 8192)


class FakeVm:
    name = "web"


class FakeProc:
    pid = 4242
    returncode = 1


def test_detached_failure_reason_is_the_supervisors_own_error(monkeypatch, tmp_path):
    from kvm import vm as vmmod
    monkeypatch.setattr(vmmod, "read_state", lambda name: {"error": "cannot write x: No space left on device",
                                                           "error_pid": 4242})
    log = tmp_path / "web.log"
    log.write_text("2026-01-01 00:00:00 web: launched\nbhyve -c 1 -m 1G -s 0,hostb")  # cut short
    assert start.failure(FakeVm(), FakeProc(), log) == "cannot write x: No space left on device"


def test_detached_failure_from_the_log_loses_its_prefix(monkeypatch, tmp_path):
    from kvm import vm as vmmod
    monkeypatch.setattr(vmmod, "read_state", lambda name: {"error": "old", "error_pid": 1})
    log = tmp_path / "web.log"
    log.write_text("start: web: already running (supervisor pid 9 holds /var/run/kvm/web.lock)\n")
    assert start.failure(FakeVm(), FakeProc(), log) == "already running (supervisor pid 9 holds /var/run/kvm/web.lock)"


def test_unknown_hypervisor_is_one_line(monkeypatch):
    monkeypatch.setenv("KVM_HYPERVISOR", "xen")
    from kvm.errors import KvmError
    with pytest.raises(KvmError, match="KVM_HYPERVISOR=xen: unknown hypervisor"):
        current()


def test_bhyve_fills_in_the_whole_interface():
    from kvm.hypervisor import METHODS
    hv = current()
    assert [m for m in METHODS if not callable(getattr(hv, m, None))] == []


def test_both_backends_give_every_text():
    """What commands and files say of the hypervisor comes from the backend (hypervisor/base.py TEXTS)."""
    from kvm.hypervisor.base import TEXTS
    from kvm.hypervisor.bhyve.backend import Bhyve
    from kvm.hypervisor.qemu.backend import Qemu
    for backend in (Bhyve, Qemu):
        assert [t for t in TEXTS if not hasattr(backend, t)] == [], backend
        assert "web" in " ".join(backend.console_comment("web"))
