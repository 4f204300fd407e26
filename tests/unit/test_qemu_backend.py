"""The qemu backend's host-free parts: choosing it, its process title, exit texts, the console
log's cap, and the accelerator choice (override, cache)."""

import pytest

from kvm.errors import ConfigError, KvmError
from kvm.host import runfiles
from kvm.hypervisor import current, default_name
from kvm.hypervisor.qemu import accel, backend
from kvm.hypervisor.qemu.backend import Qemu, is_qemu_of, rotate_log


def test_the_host_chooses_and_kvm_hypervisor_overrides(monkeypatch):
    assert default_name("FreeBSD") == "bhyve" and default_name("Linux") == "qemu"
    monkeypatch.setenv("KVM_HYPERVISOR", "qemu")
    assert current().name == "qemu"
    monkeypatch.setenv("KVM_HYPERVISOR", "bhyve")
    assert current().name == "bhyve"
    monkeypatch.delenv("KVM_HYPERVISOR")
    assert current().name == default_name()


def test_the_process_title_matches_the_exact_vm_name():
    args = ["/usr/bin/qemu-system-x86_64", "-name", "web,process=qemu:web", "-m", "1G"]
    assert is_qemu_of(args, "web")
    assert not is_qemu_of(args, "we") and not is_qemu_of(args, "web2")
    assert not is_qemu_of(["bhyve", "-name", "web,process=qemu:web"], "web")
    assert not is_qemu_of(["qemu-system-x86_64", "-name"], "web") and not is_qemu_of(None, "web")


def test_a_qemu_of_another_root_is_not_ours(monkeypatch, tmp_path):
    """Two roots may each run a `web` on qemu: their QMP sockets (in RUN_DIR/ROOT_ID/web/) tell them apart."""
    monkeypatch.setenv("KVM_RUN_DIR", str(tmp_path))
    mine, theirs = runfiles.of("/tank/kvm", "web"), runfiles.of("/tank2/kvm", "web")
    args = ["/usr/bin/qemu-system-x86_64", "-name", "web,process=qemu:web", "-m", "1G",
            "-qmp", f"unix:{theirs.path('qmp')},server=on,wait=off"]
    assert not Qemu().is_own_process(args, mine) and Qemu().is_own_process(args, theirs)
    assert Qemu().console_socket(mine) == str(tmp_path / runfiles.root_id("/tank/kvm") / "web" / "console")


def test_a_socket_path_too_long_for_a_unix_socket_is_refused_before_qemu(monkeypatch, tmp_path):
    from kvm.conf import config
    from kvm.hypervisor import Context
    monkeypatch.setenv("KVM_RUN_DIR", str(tmp_path / ("r" * 60)))
    vmdir = tmp_path / ("w" * 30)
    cfg = config.validate("w" * 30, str(vmdir), {"VMrom": "uefi"})
    monkeypatch.setattr(backend, "find_code", lambda cfg, root, strict: "/x/CODE.fd")
    run = runfiles.of("/tank/kvm", "w" * 30)
    with pytest.raises(ConfigError, match=r"qemu's qmp socket .* over the 107 a unix socket's path takes: "
                                          r"set KVM_RUN_DIR to a shorter folder"):
        Qemu().plan(cfg, Context(root="/tank/kvm", run=run, strict=True))
    Qemu().plan(cfg, Context(root="/tank/kvm", run=run, strict=False))  # vminfo and start -n show it all the same


@pytest.mark.parametrize("observed,reason,text", [
    (("guest-reset", 0), "reboot", "guest rebooted (SHUTDOWN guest-reset, exit 0)"),
    (("guest-shutdown", 0), "poweroff", "powered off (SHUTDOWN guest-shutdown, exit 0)"),
    (("guest-panic", 0), "fault", "crashed: guest panic (SHUTDOWN guest-panic, exit 0)"),
    (("", 1), "error", "qemu failed (no SHUTDOWN event, exit 1)"),
    (("", -9), "signal", "killed by SIGKILL")])
def test_exits_are_classified_by_the_shutdown_reason(observed, reason, text):
    ended = Qemu().classify(observed)
    assert (ended.reason, ended.text, ended.code) == (reason, text, observed[1])


def test_console_log_is_rotated_once_past_its_cap(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"a" * 100)
    rotate_log(log, cap=100)
    assert log.read_bytes() == b"a" * 100 and not (tmp_path / "console.log.0").exists()
    with open(log, "ab", buffering=0) as fh:  # as qemu writes it: appending, unbuffered
        fh.write(b"b")
        rotate_log(log, cap=100)
        fh.write(b"c")
    assert (tmp_path / "console.log.0").read_bytes() == b"a" * 100 + b"b"
    assert log.read_bytes() == b"c"  # qemu's next bytes go to the start of the emptied log


def test_kvm_accel_overrides_and_a_bad_value_is_refused(monkeypatch):
    monkeypatch.setenv("KVM_ACCEL", "tcg")
    assert accel.chosen() == "tcg"
    monkeypatch.setenv("KVM_ACCEL", "kvm")
    assert accel.chosen() == "kvm"
    monkeypatch.setenv("KVM_ACCEL", "xen")
    with pytest.raises(KvmError, match="KVM_ACCEL='xen': unknown accelerator"):
        accel.chosen()


def test_the_probe_runs_once_per_host_boot(monkeypatch, tmp_path):
    monkeypatch.delenv("KVM_ACCEL", raising=False)
    monkeypatch.setenv("KVM_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(accel.os, "access", lambda path, mode: True)
    probes = []
    monkeypatch.setattr(accel, "probe", lambda binary, folder: probes.append(binary) or "tcg")
    assert accel.chosen("qemu-x") == "tcg" and accel.chosen("qemu-x") == "tcg"
    assert probes == ["qemu-x"]
    assert (tmp_path / "host" / "accel").read_text().split()[1] == "tcg"


def test_a_hanging_or_failing_kvm_means_tcg(monkeypatch, tmp_path):
    from kvm import host
    monkeypatch.setattr(host, "run_limited", lambda argv, seconds: None)  # hung past the limit
    assert accel.probe("qemu-system-x86_64", tmp_path) == "tcg"
    monkeypatch.setattr(host, "run_limited", lambda argv, seconds: 134)  # aborted (MSR failure)
    assert accel.probe("qemu-system-x86_64", tmp_path) == "tcg"
    seen = []
    monkeypatch.setattr(host, "run_limited", lambda argv, seconds: seen.append(argv) or accel.PROBE_EXIT)
    assert accel.probe("qemu-system-x86_64", tmp_path) == "kvm"
    assert ["-cpu", "host"] == seen[0][3:5] and list(tmp_path.iterdir()) == []  # the probe ROM is gone
