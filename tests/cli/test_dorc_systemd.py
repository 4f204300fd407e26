"""dorc on a systemd host (Linux): a unit instead of an rc.d script, checked by systemd-analyze,
its ExecStart/ExecStop run as systemd runs them; the FreeBSD rc.d output stays as it was."""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_run import guest_up, script, wait_for
from tests.conftest import cmd, create_vm, one_line_error, snapshot_tree


@pytest.fixture
def units(sysroot, env):
    """The unit folder (never the host's /etc/systemd/system) and a stand-in for /lib/systemd/system."""
    d, base = sysroot / "units", sysroot / "lib-units"
    d.mkdir()
    base.mkdir()
    (base / "ssh.service").write_text("[Unit]\nDescription=OpenSSH\n[Service]\nExecStart=/usr/sbin/sshd -D\n")
    (sysroot / "systemd-booted").mkdir()  # systemd is the init there (a stand-in for /run/systemd/system)
    env.update(KVM_INIT="systemd", KVM_UNITDIR=str(d), KVM_BASE_UNITDIRS=str(base),
               KVM_SYSTEMD_RUN=str(sysroot / "systemd-booted"))
    return d


def keys(text):
    """{Key: value} of a unit (its comments left out)."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def analyze(path):
    """systemd-analyze verify of a unit; skipped where it cannot run here."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    probe = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"systemd-analyze cannot run in this container: {probe.stderr.strip()}")
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)


def test_dorc_writes_a_unit_mapping_the_rc_answers(install, env, sysroot, units):
    create_vm(install, env, "web-1")
    rcconf = (sysroot / "rc.conf").read_text()
    res = cmd(install, env, "dorc", "web-1", "-y", "--require", "NETWORKING sshd", "--before", "db",
              "--timeout", "40")
    assert res.returncode == 0, res.stderr
    path = units / "web_1.service"
    assert res.stdout == f"wrote {path}\n" and "service web_1 start" in res.stderr
    k = keys(path.read_text())
    assert k["After"] == k["Requires"] == "network-online.target sshd.service"
    assert k["Before"] == "db.service"
    assert k["ExecStart"] == f"{install}/start web-1" and k["ExecStop"] == f"-{install}/stop -t 40 web-1"
    assert k["TimeoutStopSec"] == "70" and k["KillMode"] == "mixed" and k["WantedBy"] == "multi-user.target"
    assert (install / "vm" / "web-1" / "web-1.service").read_text() == path.read_text()
    assert list((sysroot / "rc.d").iterdir()) == [] and (sysroot / "rc.conf").read_text() == rcconf
    assert not (units / "multi-user.target.wants").exists()  # not enabled unless asked
    res = analyze(path)
    assert res.returncode == 0 and "web_1.service" not in res.stderr, res.stderr


def test_the_unit_waits_for_its_pool_mounted(install, env, sysroot, units):
    """RequiresMountsFor= the VM's folder, After= the host's ZFS mounting units (those it has)."""
    create_vm(install, env, "web")
    assert cmd(install, env, "dorc", "web", "-y").returncode == 0
    text = (units / "web.service").read_text()
    assert f"RequiresMountsFor={install}/vm/web\n" in text
    assert "zfs" not in text.split("[Service]")[0].replace("# its folder", "")  # no ZFS unit on this stand-in
    for unit in ("zfs-mount.service", "zfs-fuse.service"):
        (sysroot / "lib-units" / unit).write_text("[Unit]\nDescription=ZFS\n[Service]\nExecStart=/bin/true\n")
    assert cmd(install, env, "dorc", "web", "-y").returncode == 0
    text = (units / "web.service").read_text()
    lines = text.split("[Service]")[0].splitlines()
    assert "After=zfs-mount.service zfs-fuse.service" in lines and f"RequiresMountsFor={install}/vm/web" in lines
    assert lines.index(f"RequiresMountsFor={install}/vm/web") < lines.index("After=zfs-mount.service zfs-fuse.service")
    res = analyze(units / "web.service")
    assert res.returncode == 0 and "web.service" not in res.stderr, res.stderr


def test_without_systemd_as_init_dorc_warns(install, env, sysroot, units):
    """A container or another init: the unit is written, but nothing would run it: say so."""
    create_vm(install, env, "web")
    env["KVM_SYSTEMD_RUN"] = str(sysroot / "no-systemd")
    res = cmd(install, env, "dorc", "web", "-y")
    assert res.returncode == 0 and res.stdout == f"wrote {units / 'web.service'}\n", res.stderr
    assert res.stderr == (f"dorc: web: warning: systemd is not this host's init ({sysroot}/no-systemd is "
                          f"missing): nothing runs the unit, at boot or for `service web start`; start the VM "
                          f"with {install}/start -b web\n")
    res = cmd(install, env, "dorc", "web", "-y", "-n")
    assert res.returncode == 0 and "warning: systemd is not this host's init" in res.stderr
    env["KVM_SYSTEMD_RUN"] = str(sysroot / "systemd-booted")
    res = cmd(install, env, "dorc", "web", "-y")
    assert res.returncode == 0 and "warning" not in res.stderr and "service web start" in res.stderr, res.stderr


def test_enable_is_the_wants_link_and_remove_takes_it_all(install, env, units):
    create_vm(install, env, "web")
    assert cmd(install, env, "dorc", "web", "-y", "--enable").returncode == 0
    link = units / "multi-user.target.wants" / "web.service"
    assert os.readlink(link) == str(units / "web.service")
    res = cmd(install, env, "dorc", "web", "-r")
    assert res.returncode == 0 and res.stdout == f"removed {units / 'web.service'}\n", res.stderr
    assert not os.path.lexists(link) and not (units / "web.service").exists()
    assert not (install / "vm" / "web" / "web.service").exists()
    res = cmd(install, env, "dorc", "web", "-r")   # again: nothing left to do (issue 19)
    assert res.returncode == 0 and "web: has no systemd unit" in res.stderr and "nothing to remove" in res.stderr


def test_dry_run_writes_nothing(install, env, units):
    create_vm(install, env, "web")
    res = cmd(install, env, "dorc", "web", "-y", "--enable", "-n")
    assert res.returncode == 0, res.stderr
    assert "multi-user.target.wants/web.service" in res.stdout
    assert list(units.iterdir()) == []


def test_a_host_unit_or_a_foreign_file_is_never_taken(install, env, units):
    create_vm(install, env, "ssh")
    one_line_error(cmd(install, env, "dorc", "ssh", "-y"), "dorc: ssh:", "ssh.service")
    create_vm(install, env, "web")
    (units / "web.service").write_text("[Service]\nExecStart=/usr/bin/nginx\n")
    before = snapshot_tree(units)
    one_line_error(cmd(install, env, "dorc", "web", "-y"), "is not a kvm script: not overwriting it")
    one_line_error(cmd(install, env, "dorc", "web", "-r"), "is not a kvm script of this VM")
    assert snapshot_tree(units) == before


def test_vmrename_moves_the_unit_enabled_and_vmdestroy_removes_it(install, env, units):
    create_vm(install, env, "web")
    assert cmd(install, env, "dorc", "web", "-y", "--enable", "--timeout", "30", "--require", "sshd").returncode == 0
    res = cmd(install, env, "vmrename", "web", "www")
    assert res.returncode == 0, res.stderr
    k = keys((units / "www.service").read_text())
    assert k["ExecStop"] == f"-{install}/stop -t 30 www" and k["Requires"] == "sshd.service"
    assert os.readlink(units / "multi-user.target.wants" / "www.service") == str(units / "www.service")
    assert sorted(p.name for p in units.rglob("*")) == ["multi-user.target.wants", "www.service", "www.service"]
    res = cmd(install, env, "vmdestroy", "www", "-y")
    assert res.returncode == 0, res.stderr
    assert f"It also removes the systemd unit {units}/www.service and its link." in res.stderr
    assert "rc.conf" not in res.stderr  # a unit has no rc.conf variable
    assert list(units.rglob("*.service")) == []


def test_the_units_commands_start_and_stop_the_vm(install, env, units):
    """ExecStart and ExecStop run as systemd runs them: the supervisor stays in the foreground until
    ExecStop's graceful stop ends it, with exit status 0 (the unit is then inactive, not failed)."""
    create_vm(install, env, "web")
    assert cmd(install, env, "dorc", "web", "-y").returncode == 0
    k = keys((units / "web.service").read_text())
    script(env, "web", "run")
    main = subprocess.Popen(shlex.split(k["ExecStart"]), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: guest_up(install, env), what="the guest")
        stop = subprocess.run(shlex.split(k["ExecStop"].lstrip("-")), env=env, capture_output=True, text=True,
                              timeout=int(k["TimeoutStopSec"]))
        assert stop.returncode == 0, stop.stderr
        assert main.wait(timeout=30) == 0
    finally:
        if main.poll() is None:
            main.kill()


def test_systemd_is_chosen_by_the_platform_unless_kvm_init_says(monkeypatch):
    from kvm.platform import systemd
    monkeypatch.delenv("KVM_INIT", raising=False)
    monkeypatch.setenv("KVM_PLATFORM", "linux")
    assert systemd.in_use()
    monkeypatch.setenv("KVM_PLATFORM", "freebsd")  # rc.d, as the rc.d tests rely on
    assert not systemd.in_use()
    monkeypatch.setenv("KVM_INIT", "systemd")
    assert systemd.in_use()


@pytest.mark.parametrize("platform, hypervisor, service", [
    ("freebsd", "qemu", "rc.d"), ("linux", "bhyve", "systemd")])
def test_the_service_manager_follows_the_platform_not_the_hypervisor(install, env, platform, hypervisor,
                                                                    service, units):
    """qemu on FreeBSD gets an rc.d script; a Linux platform gets a unit whatever the hypervisor."""
    create_vm(install, env, "web")
    env = dict(env, KVM_PLATFORM=platform, KVM_HYPERVISOR=hypervisor)
    env.pop("KVM_INIT", None)
    res = cmd(install, env, "dorc", "web", "-y")
    assert res.returncode == 0, res.stderr
    unit = Path(env["KVM_UNITDIR"]) / "web.service"
    script = Path(env["KVM_RCDIR"]) / "web"
    assert (unit.exists(), script.exists()) == ((True, False) if service == "systemd" else (False, True))


def test_an_unknown_platform_is_one_line(install, env):
    create_vm(install, env, "web")
    one_line_error(cmd(install, dict(env, KVM_PLATFORM="hurd"), "dorc", "web", "-y"),
                   "KVM_PLATFORM=hurd", "freebsd, linux", status=1)


def test_an_unknown_kvm_init_is_one_line(install, env, units):
    create_vm(install, env, "web")
    env["KVM_INIT"] = "upstart"
    one_line_error(cmd(install, env, "dorc", "web", "-y"), "KVM_INIT=upstart", "rc.d, systemd", status=2)
    assert list(units.iterdir()) == []


def test_vmlist_auto_follows_the_units_wants_link(install, env, units):
    create_vm(install, env, "web")
    create_vm(install, env, "db")

    def auto():
        rows = cmd(install, env, "vmlist", "-H", "-o", "name,auto").stdout.split("\n")
        return dict(row.split("\t") for row in rows if row)

    assert auto() == {"db": "no", "web": "no"}
    assert cmd(install, env, "dorc", "web", "-y", "--enable").returncode == 0
    assert cmd(install, env, "dorc", "db", "-y").returncode == 0  # a unit, not enabled
    assert auto() == {"db": "no", "web": "yes"}
    os.unlink(units / "multi-user.target.wants" / "web.service")  # systemctl disable
    assert auto() == {"db": "no", "web": "no"}


def test_a_vm_on_a_switch_waits_for_kvm_switches_unit(install, env, sysroot, units):
    """Issue 21: a VM whose NIC is on a kvm switch gets Wants=/After= kvm-switches.service, which
    dorc writes (switch up --all, after nftables.service, PartOf= it); a VM without one is unchanged."""
    assert cmd(install, env, "switch", "create", "lan").returncode == 0
    create_vm(install, env, "web", "--switch", "lan")
    create_vm(install, env, "db")
    assert cmd(install, env, "dorc", "db", "-y").returncode == 0
    assert not (units / "kvm-switches.service").exists() and "kvm-switches" not in (units / "db.service").read_text()
    assert cmd(install, env, "dorc", "web", "-y").returncode == 0
    lines = (units / "web.service").read_text().splitlines()
    assert "Wants=kvm-switches.service" in lines and "After=kvm-switches.service" in lines
    sw = (units / "kvm-switches.service").read_text()
    k = keys(sw)
    assert k["ExecStart"] == f"{install}/switch up --all" and k["Type"] == "oneshot"
    assert k["After"].startswith("network-online.target nftables.service") and k["PartOf"] == "nftables.service"
    res = analyze(units / "kvm-switches.service")
    assert res.returncode == 0 and "kvm-switches.service" not in res.stderr, res.stderr
