"""rc.d scripts and rc.conf variables: kvm touches only its own; leftovers are removable; names
that map to the same tap or rc name are refused; the VM's lock; the CLI registry."""

import fcntl
import os
import subprocess
import sys

import pytest

from kvm.platform import rcd
from tests.conftest import REPO, cmd, create_vm, datasets, destroy_dataset, kvm, one_line_error, run_folder, snapshot_tree


@pytest.fixture
def base_rcdir(sysroot, env):
    """A stand-in for the base system's /etc/rc.d, holding sshd and zfs."""
    d = sysroot / "base-rc.d"
    d.mkdir()
    for name in ("sshd", "zfs"):
        (d / name).write_text(f"#!/bin/sh\n# PROVIDE: {name}\nname={name}\nrcvar={name}_enable\n")
    env["KVM_BASE_RCDIR"] = str(d)
    return d


def old_kvm_script(sysroot, install, name):
    """A script an earlier kvm wrote for a VM named after a host service (it did not refuse)."""
    path = sysroot / "rc.d" / rcd.rc_name(name)
    path.write_text(rcd.render(name, install))
    return path


def test_a_vm_named_after_a_host_service_gets_no_script(install, env, sysroot, base_rcdir):
    create_vm(install, env, "sshd")
    with open(sysroot / "rc.conf", "a") as fh:
        fh.write('sshd_enable="YES"\n')
    before = (sysroot / "rc.conf").read_text()
    one_line_error(cmd(install, env, "dorc", "sshd", "-y", "--enable"), "dorc: sshd:", "host's own service",
                   str(base_rcdir / "sshd"))
    res = cmd(install, env, "dorc", "sshd", "-r")   # nothing of ours to remove: done (issue 19)
    assert res.returncode == 0 and res.stderr.startswith("sshd: has no rc.d script") and "nothing to remove" in res.stderr
    assert (sysroot / "rc.conf").read_text() == before
    assert list((sysroot / "rc.d").iterdir()) == []


@pytest.mark.parametrize("argv", [["dorc", "-r", "sshd"], ["vmrename", "sshd", "web9"], ["vmdestroy", "-y", "sshd"]])
def test_an_old_script_named_after_a_host_service_leaves_its_variable(install, env, sysroot, base_rcdir, argv):
    create_vm(install, env, "sshd")
    old_kvm_script(sysroot, install, "sshd")
    with open(sysroot / "rc.conf", "a") as fh:
        fh.write('sshd_enable="YES"\n')
    res = cmd(install, env, *argv)
    assert res.returncode == 0, res.stderr
    rcconf = (sysroot / "rc.conf").read_text()
    assert 'sshd_enable="YES"' in rcconf and "web9_enable" not in rcconf
    assert not (sysroot / "rc.d" / "sshd").exists()


def test_an_rcconf_variable_nobody_of_ours_owns_is_not_taken_over(install, env, sysroot):
    create_vm(install, env, "web")
    with open(sysroot / "rc.conf", "a") as fh:
        fh.write('web_enable="NO"\n')
    before = (sysroot / "rc.conf").read_text()
    one_line_error(cmd(install, env, "dorc", "web", "-y", "--enable"), "dorc: web:", "rc.conf already sets web_enable")
    assert (sysroot / "rc.conf").read_text() == before and list((sysroot / "rc.d").iterdir()) == []


def test_dorc_r_removes_a_leftover_of_a_name_no_vm_has(install, env, sysroot, pool):
    create_vm(install, env, "web")
    assert cmd(install, env, "dorc", "web", "-y", "--enable").returncode == 0
    destroy_dataset(f"{pool}/kvm/vm/web")  # as a killed vmdestroy (of the order before) left it
    res = cmd(install, env, "dorc", "-r", "web")
    assert res.returncode == 0, res.stderr
    assert not (sysroot / "rc.d" / "web").exists() and "web_enable" not in (sysroot / "rc.conf").read_text()
    res = cmd(install, env, "dorc", "-r", "web")   # again: nothing left to do (issue 19)
    assert res.returncode == 0 and "web: has no rc.d script" in res.stderr and "nothing to remove" in res.stderr


def test_dorc_r_leaves_the_script_of_another_install(install, env, sysroot):
    path = sysroot / "rc.d" / "web"
    path.write_text(rcd.render("web", "/elsewhere/kvm"))
    one_line_error(cmd(install, env, "dorc", "-r", "web"), "belongs to another kvm install root")
    assert path.exists()


def test_vmrename_keeps_the_dorc_timeout_and_moves_the_timeout_variable(install, env, sysroot):
    create_vm(install, env, "web")
    assert cmd(install, env, "dorc", "web", "-y", "--enable", "--timeout", "30").returncode == 0
    with open(sysroot / "rc.conf", "a") as fh:
        fh.write('web_timeout="45"\n')
    res = cmd(install, env, "vmrename", "web", "www")
    assert res.returncode == 0, res.stderr
    assert ': ${www_timeout:="30"}' in (sysroot / "rc.d" / "www").read_text()
    rcconf = (sysroot / "rc.conf").read_text()
    assert 'www_timeout="45"' in rcconf and 'www_enable="YES"' in rcconf and "web_" not in rcconf


@pytest.mark.parametrize("name", ["web_1", "WEB.1", "Web-1"])
def test_names_mapping_to_the_same_tap_or_rc_name_are_refused(install, env, pool, name):
    create_vm(install, env, "web-1")
    create_vm(install, env, "other")
    before, tree = datasets(pool), snapshot_tree(install / "vm")
    one_line_error(cmd(install, env, "vmcreate", name, "-y"), f"vmcreate: {name}:", "as for VM 'web-1'")
    one_line_error(cmd(install, env, "vmrename", "other", name), "as for VM 'web-1'")
    assert datasets(pool) == before and snapshot_tree(install / "vm") == tree


@pytest.mark.parametrize("argv", [["dorc", "web", "-y"], ["dorc", "-r", "web"], ["vmrename", "web", "www"],
                                  ["vmdestroy", "-y", "web"]])
def test_commands_wait_for_no_one_holding_the_vms_lock(install, env, sysroot, pool, argv):
    create_vm(install, env, "web")
    if argv[:2] == ["dorc", "-r"]:
        assert cmd(install, env, "dorc", "web", "-y").returncode == 0
    before, rc = datasets(pool), snapshot_tree(sysroot / "rc.d")
    folder = run_folder(env, install, "web")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write("4242 snap rollback\n")
        fh.flush()
        one_line_error(cmd(install, env, *argv), "web: is busy: pid 4242 (snap rollback)", status=8)
    assert datasets(pool) == before and snapshot_tree(sysroot / "rc.d") == rc


def test_dorc_rcdir_is_not_put_in_the_environment(install, env, sysroot, monkeypatch, capsys):
    from kvm.cli import main
    create_vm(install, env, "web")
    for key in ("KVM_RCDIR", "KVM_RCCONF", "KVM_RUN_DIR", "KVM_BASE_RCDIR", "PATH", "KVM_SIM_DIR", "KVM_SIM_HOME"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    other = sysroot / "other-rc.d"
    other.mkdir()
    assert main("dorc", ["web", "-y", "--rcdir", str(other), "--root", str(install)]) == 0
    assert (other / "web").exists() and not (sysroot / "rc.d" / "web").exists()
    assert os.environ["KVM_RCDIR"] == env["KVM_RCDIR"]


def test_kvm_help_of_an_unknown_command(env):
    res = kvm(env, "help", "nosuch")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "kvm: unknown command 'nosuch'" in res.stderr


def test_bin_and_entry_points_list_the_registry():
    import configparser

    from kvm.cli import COMMANDS, PATH_COMMANDS
    assert sorted(p.name for p in (REPO / "bin").iterdir()) == sorted([*COMMANDS, "kvm"])
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    scripts = [line.split("=")[0].strip() for line in cfg["options.entry_points"]["console_scripts"].split("\n")
               if line.strip()]
    assert sorted(scripts) == sorted([*PATH_COMMANDS, "kvm"])
    res = subprocess.run([sys.executable, str(REPO / "bin" / "status"), "--help"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 0 and "usage: status" in res.stdout
