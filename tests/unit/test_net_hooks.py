"""vmcreate's network answers per host: the run file it writes (FreeBSD: the shell toolkit's
ifconfig lines, unchanged; Linux: the IfUp/BridgeAdd helpers) and what `functions` runs for each
helper on each host, seen through stand-in ifconfig/route/ip commands that log their arguments."""

import subprocess
from pathlib import Path

import pytest

from kvm.manage import create

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO / "templates" / "functions"

# what vmcreate wrote before Linux was a host: a FreeBSD VM's run file must not change
FREEBSD_RUN = """\
# VM: web
# preRun runs before each launch of bhyve, postRun after each exit of bhyve
# (a guest reboot included). Both see every set.conf variable and VMname,
# VMdir (this folder) and VMd (the install root); postRun also gets
# VMexit (bhyve's exit status) and VMreason (reboot, poweroff, halt,
# triplefault, error, unknown). The helpers CreateIF, DestroyIF, SetResolv
# and SetDefaultRoute come from $VMd/functions.
# A preRun that fails cancels the launch (postRun still runs).

preRun()
{
	CreateIF bridge bridge0
	CreateIF tap tapWEB
	ifconfig tapWEB up
	ifconfig bridge0 addm tapWEB
	ifconfig bridge0 addm em0 2>/dev/null  # already a member is fine
	ifconfig bridge0 up
	:
}

postRun()
{
	DestroyIF tapWEB
	:
}
"""


def rendered_run(monkeypatch, linux, hypervisor=None, **answers):
    monkeypatch.setenv("KVM_PLATFORM", "linux" if linux else "freebsd")
    monkeypatch.setenv("KVM_HYPERVISOR", hypervisor or ("qemu" if linux else "bhyve"))
    a = create.Answers(loader="uefi", cores="1", mem="1G", network=True, bridge="bridge0", **answers)
    return create.render_files("web", a, None)[1]


def test_freebsd_run_file_is_the_shell_toolkits(monkeypatch):
    assert rendered_run(monkeypatch, False, uplink="em0") == FREEBSD_RUN


def test_the_helpers_follow_the_platform_not_the_hypervisor(monkeypatch):
    """qemu on FreeBSD gets ifconfig lines; bhyve's name on a Linux platform gets iproute2's."""
    on_freebsd = rendered_run(monkeypatch, False, hypervisor="qemu", uplink="em0")
    assert "ifconfig bridge0 addm tapWEB" in on_freebsd and "launch of qemu" in on_freebsd
    on_linux = rendered_run(monkeypatch, True, hypervisor="bhyve", uplink="eth0")
    assert "BridgeAdd bridge0 tapWEB" in on_linux and "ifconfig" not in on_linux


def test_linux_run_file_uses_the_iproute2_helpers(monkeypatch):
    run = rendered_run(monkeypatch, True, uplink="eth0", tap="tapW")
    assert "ifconfig" not in run
    body = run.split("preRun()\n{\n", 1)[1]
    assert body.startswith("\tCreateIF bridge bridge0\n\tCreateIF tap tapW\n\tIfUp tapW\n"
                           "\tBridgeAdd bridge0 tapW\n\tBridgeAdd bridge0 eth0 2>/dev/null"
                           "  # already a member is fine\n\tIfUp bridge0\n\t:\n}\n")
    assert "postRun()\n{\n\tDestroyIF tapW\n\t:\n}\n" in run
    assert "before each launch of qemu" in run and "IfUp and BridgeAdd come from" in run


@pytest.fixture
def stubs(tmp_path):
    """A PATH of stand-ins: uname says HOST, ifconfig/route/ip log their argv to calls.log;
    `ifconfig -l` and `ip link show dev X` know the interfaces listed in ifs.txt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    ifs = tmp_path / "ifs.txt"
    ifs.write_text("lo0 em0 tapOLD\n")
    (bin_dir / "uname").write_text('#!/bin/sh\necho "$HOST"\n')
    for tool in ("ifconfig", "route", "ip"):
        (bin_dir / tool).write_text(
            f'#!/bin/sh\n[ "$*" = "-l" ] && {{ cat {ifs}; exit 0; }}\n'
            f'case "$*" in "link show dev "*) grep -qw "$4" {ifs}; exit $?;; esac\n'
            f'echo "{tool} $*" >> {log}\n')
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "uname").chmod(0o755)

    def run(host, *calls):
        log.write_text("")
        script = f". {FUNCTIONS}\n" + "\n".join(calls) + "\n"
        subprocess.run(["/bin/sh", "-c", script], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOST": host})
        return log.read_text().splitlines()
    return run


CALLS = ["CreateIF tap tapNEW", "CreateIF tap tapOLD", "CreateIF bridge br0", "IfUp tapNEW",
         "BridgeAdd br0 tapNEW", "DestroyIF tapOLD", "DestroyIF tapGONE", "SetDefaultRoute 10.0.0.1"]


def test_functions_on_freebsd_run_ifconfig_and_route(stubs):
    assert stubs("FreeBSD", *CALLS) == [
        "ifconfig tap create name tapNEW", "ifconfig bridge create name br0", "ifconfig tapNEW up",
        "ifconfig br0 addm tapNEW", "ifconfig tapOLD destroy", "route delete default",
        "route add default 10.0.0.1"]


def test_functions_on_linux_run_iproute2(stubs):
    assert stubs("Linux", *CALLS) == [
        "ip tuntap add dev tapNEW mode tap", "ip link add name br0 type bridge",
        "ip link set dev tapNEW up", "ip link set dev tapNEW master br0", "ip link delete dev tapOLD",
        "ip route replace default via 10.0.0.1"]


def test_qemu_nics_without_mac_get_bhyves_distinct_macs():
    """Two VMs made by vmcreate (no mac=) on one bridge: qemu alone would give both 52:54:00:12:34:56."""
    from kvm.conf import config
    from kvm.hypervisor.qemu import argv as qemu

    def nic(name, devices):
        cfg = config.validate(name, "/nonexistent", {"VMrom": "uefi", "Devices": devices})
        argv = qemu.plan(cfg, sockets=qemu.run_files("/run/kvm/r_00000000/web"), code="/x/CODE.fd").argv
        return [a for a in argv if a.startswith("virtio-net-pci")]

    assert nic("pf", "4,virtio-net,tap1") == ["virtio-net-pci,netdev=dev4,bus=pcie.0,addr=0x4,mac=00:a0:98:17:1a:38"]
    assert nic("a", "3,virtio-net,tapA") != nic("b", "3,virtio-net,tapB")
    assert nic("a", "3:1,virtio-net,tapA")[0].endswith(",mac=" + qemu.bhyve_mac("a", "3:1"))
    assert nic("a", "3,virtio-net,tapA,mac=02:00:00:00:00:01")[0].count("mac=") == 1
