"""The simulated bhyve's -p (vCPU pinning) and -l tpm (TPM), strict as FreeBSD's bhyverun.c and
pci_lpc.c parse them; kvm's probe of what a bhyve binary has, against the simulated binary and
an "older" copy of it."""

import json
import signal
import socket
from pathlib import Path

import pytest

from tests.sim.test_simulator import BASE, run, script

SIM_BIN = Path(__file__).parent / "bin"


def older_bhyve(tmp_path, features):
    """A copy of the simulated bhyve whose binary has only `features` (as an older FreeBSD's)."""
    folder = tmp_path / "oldbin"
    folder.mkdir()
    text = (SIM_BIN / "bhyve").read_text().replace("# features: tpm-passthru tpm-swtpm", f"# features: {features}")
    (folder / "bhyve").write_text(text)
    (folder / "bhyve").chmod(0o755)
    return folder


@pytest.mark.parametrize("pin, message", [
    ("0", "invalid format: 0"),
    ("x:1", "invalid format: x:1"),
    ("-1:0", "invalid vcpu '-1'"),
    ("0:1024", "hostcpu '1024' outside valid range from 0 to 1023"),
    ("0:-2", "hostcpu '-2' outside valid range from 0 to 1023"),
])
def test_p_rejects_as_pincpu_parse(env, pin, message):
    res = run(env, *BASE, "-p", pin, "vm")
    assert res.returncode == 64, res.stderr
    assert message in res.stderr and f"invalid vcpu pinning configuration '{pin}'" in res.stderr
    assert not list(Path(env["KVM_VMM_DIR"]).iterdir())


def test_p_pins_recorded_and_an_offline_host_cpu_aborts(env):
    script(env, "vm", "poweroff after=0")
    (Path(env["KVM_SIM_DIR"]) / "ncpu").write_text("4")
    assert run(env, *BASE[:2], "2", *BASE[3:], "-p", "0:1", "-p", "1:3", "vm").returncode == 1
    assert json.loads((Path(env["KVM_VMM_DIR"]) / "vm").read_text())["pins"] == {"0": [1], "1": [3]}
    (Path(env["KVM_SIM_DIR"]) / "ncpu").write_text("2")
    res = run(env, *BASE, "-p", "0:3", "vm2")
    assert res.returncode == -signal.SIGABRT and "Assertion failed" in res.stderr


@pytest.mark.parametrize("lpc, code, message", [
    ("tpm", 4, 'invalid tpm type "tpm"'),
    ("tpm,swtpm", 4, 'invalid tpm path "tpm,swtpm"'),
    ("tpm,foo,/dev/tpm0", 4, "Failed to init TPM device"),
    ("tpm,passthru,/nonexistent/tpm0", 4, "unable to open /nonexistent/tpm0"),
    ("tpm,swtpm,/nonexistent/sock", 4, 'unable to connect to tpm socket "/nonexistent/sock"'),
])
def test_l_tpm_rejects_as_bhyve(env, lpc, code, message):
    res = run(env, *BASE, "-l", lpc, "vm")
    assert res.returncode == code, res.stderr
    assert message in res.stderr
    assert not list(Path(env["KVM_VMM_DIR"]).iterdir())


def test_l_tpm_swtpm_connects_to_the_socket(env, tmp_path):
    path = str(tmp_path / "tpm.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        script(env, "vm", "poweroff after=0")
        res = run(env, *BASE, "-l", f"tpm,swtpm,{path}", "vm")
        assert res.returncode == 1, res.stderr
        assert json.loads((Path(env["KVM_VMM_DIR"]) / "vm").read_text())["tpm"] == f"swtpm,{path}"
    finally:
        server.close()


def test_l_help_and_an_older_binary(env, tmp_path):
    res = run(env, "bhyve", "-l", "help")
    assert res.returncode == 0 and "tpm" in res.stdout.split()
    env = dict(env, PATH=f"{older_bhyve(tmp_path, 'tpm-passthru')}:{env['PATH']}")
    path = str(tmp_path / "tpm.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        res = run(env, "bhyve", *BASE[1:], "-l", f"tpm,swtpm,{path}", "vm")
    finally:
        server.close()
    assert res.returncode == 4 and "unknown emulation swtpm" in res.stderr


def test_kvm_probes_the_binary_not_a_version(env, tmp_path, monkeypatch):
    from kvm.hypervisor.bhyve import backend
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("KVM_SIM_DIR", env["KVM_SIM_DIR"])
    monkeypatch.setenv("KVM_SIM_HOME", env["KVM_SIM_HOME"])
    assert backend.tpm_support() == {"passthru", "swtpm"}
    monkeypatch.setenv("PATH", f"{older_bhyve(tmp_path, 'tpm-passthru')}:{env['PATH']}")
    assert backend.tpm_support() == {"passthru"}
    (tmp_path / "n").mkdir()
    none = older_bhyve(tmp_path / "n", "")
    monkeypatch.setenv("PATH", f"{none}:{env['PATH']}")
    assert backend.tpm_support() == set()
    assert run(dict(env, PATH=f"{none}:{env['PATH']}"), "bhyve", "-l", "tpm,passthru,/dev/null", *BASE[1:],
               "vm").returncode == 64
