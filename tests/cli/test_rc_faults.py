"""kill -9 at seeded random points of vmrename, vmdestroy, dorc and dorc -r: after each round the
VM is listed and mounted, its rc.d state is one a user can read (never a script or `_enable`
under a name no VM has), and running the command again completes it."""

import os
import random
import re
import subprocess
import time

import pytest

from kvm.platform import rcd
from tests.conftest import cmd, create_vm

ROUNDS = 30
pytestmark = pytest.mark.slow


def killed_run(root, env, rng, span, *argv):
    """Start ./argv, SIGKILL it (the command's own process, as `kill -9 PID` does) after a random
    delay in span, then wait for what it had started (a zfs call) to finish.

    Only the command is killed, not its process group: a zfs or umount killed in the middle of
    an unmount makes zfs-fuse loop for ever in its FUSE teardown, hanging every pool; and an
    admin's kill -9 of a command leaves its children running, too."""
    proc = subprocess.Popen([f"./{argv[0]}", *argv[1:]], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(rng.uniform(*span))
    proc.kill()
    proc.wait()
    end = time.time() + 60
    while time.time() < end:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"children of a killed {argv[0]} still run after 60 s")


def timed(root, env, *argv):
    """Run ./argv to the end; its duration, to spread the kill points over a whole run."""
    start = time.time()
    res = cmd(root, env, *argv)
    assert res.returncode == 0, (argv, res.stderr)
    return time.time() - start


def vms(pool, root):
    """{VM name: mounted} of the root's VM datasets, in one zfs call; a listed VM has its files."""
    res = subprocess.run(["zfs", "get", "-H", "-r", "-d", "1", "-o", "name,value", "mounted", f"{pool}/kvm/vm"],
                         capture_output=True, text=True)
    out = {}
    for line in res.stdout.splitlines():
        name, value = line.split("\t")
        if name != f"{pool}/kvm/vm":
            short = name.rsplit("/", 1)[1]
            out[short] = value == "yes" and (root / "vm" / short / "set.conf").is_file()
    return out


def remounted(pool, root):
    """vms() after mounting what a kill left unmounted, as the next command does (vm.remount)."""
    for name, mounted in vms(pool, root).items():
        if not mounted:
            subprocess.run(["zfs", "mount", f"{pool}/kvm/vm/{name}"], capture_output=True)
    return vms(pool, root)


def rc_state(sysroot):
    """({rc script name: its VM}, {rc.conf variable: value}) of kvm's scripts and variables."""
    scripts = {}
    for path in (sysroot / "rc.d").iterdir():
        found = rcd.parse(path)
        assert found is not None, f"a script that is not ours: {path}"
        scripts[path.name] = found.vm
    text = (sysroot / "rc.conf").read_text()
    variables = dict(re.findall(r'^(\w+_(?:enable|timeout))="([^"]*)"$', text, re.M))
    return scripts, variables


def assert_orphan_free(sysroot, names, root=None):
    """Every script and variable belongs to a VM that exists (the defect of issue 9, item 9), or
    to the old name of a rename recorded in the VM's intent file (which vmrename completes)."""
    for name in list(names):
        intent = root / "vm" / name / ".kvm-rename" if root else None
        if intent and intent.exists():
            names = set(names) | {intent.read_text().split()[0]}
    scripts, variables = rc_state(sysroot)
    for rcname, vm in scripts.items():
        assert vm in names, f"script {rcname} for VM {vm}, which does not exist ({names})"
    for var in variables:
        owner = var.rsplit("_", 1)[0]
        assert owner in scripts, f"{var} set without a script of ours: {variables}, {scripts}"


def test_vmrename_killed_anywhere_is_completed_by_running_it_again(install, env, sysroot, pool):
    create_vm(install, env, "aa")
    assert cmd(install, env, "dorc", "aa", "-y", "--enable", "--timeout", "33").returncode == 0
    names = ["aa", "bb"]
    span = (0.0, 1.2 * timed(install, env, "vmrename", "aa", "bb"))
    rng = random.Random(9)
    for i in range(ROUNDS):
        old, new = names[(i + 1) % 2], names[i % 2]
        killed_run(install, env, rng, span, "vmrename", old, new)
        # a kill between zfs-fuse's busy-rename unmount and its mount may leave the dataset
        # unmounted: listed by ZFS, it is mounted again by the run that completes the rename
        found = remounted(pool, install)
        assert len(found) == 1, (i, found)
        assert_orphan_free(sysroot, set(found), install)
        res = cmd(install, env, "vmrename", old, new)
        done = (install / "vm" / new).is_dir() and not (install / "vm" / new / ".kvm-rename").exists()
        assert res.returncode == 0 or (done and "no such VM" in res.stderr), (i, res.stderr)
        assert vms(pool, install) == {new: True}
        scripts, variables = rc_state(sysroot)
        assert scripts == {new: new} and variables == {f"{new}_enable": "YES"}, (i, scripts, variables)
        text = (sysroot / "rc.d" / new).read_text()
        assert f': ${{{new}_timeout:="33"}}' in text and (install / "vm" / new / f"{new}.rc").read_text() == text
        assert not (install / "vm" / new / f"{old}.rc").exists()


def make_vm(install, pool, name, template):
    """A VM with an enabled script, made with one zfs call (as vmcreate + dorc --enable would)."""
    subprocess.run(["zfs", "create", f"{pool}/kvm/vm/{name}"], check=True)
    for file in ("set.conf", "run"):
        (install / "vm" / name / file).write_text((template / file).read_text())


def test_vmdestroy_killed_anywhere_leaves_no_orphan_and_running_it_again_completes(install, env, sysroot, pool):
    template = create_vm(install, env, "tmpl")
    rng = random.Random(10)
    span = None
    for i in range(ROUNDS):
        name = f"d{i}"
        make_vm(install, pool, name, template)
        assert cmd(install, env, "dorc", name, "-y", "--enable").returncode == 0
        if span is None:
            span = (0.0, 1.2 * timed(install, env, "vmdestroy", "-y", name))
            continue
        killed_run(install, env, rng, span, "vmdestroy", "-y", name)
        found = remounted(pool, install)  # a kill inside a busy destroy's retry may leave it unmounted
        assert_orphan_free(sysroot, set(found))
        if name in found:
            res = cmd(install, env, "vmdestroy", "-y", name)
            assert res.returncode == 0, (i, res.stderr)
        assert set(vms(pool, install)) == {"tmpl"}
        assert rc_state(sysroot) == ({}, {})


def test_dorc_and_dorc_r_killed_anywhere_are_completed_by_running_them_again(install, env, sysroot, pool):
    create_vm(install, env, "web")
    install_argv, remove_argv = ("dorc", "web", "-y", "--enable", "--timeout", "40"), ("dorc", "-r", "web")
    span = (0.0, 1.2 * max(timed(install, env, *install_argv), timed(install, env, *remove_argv)))
    rng = random.Random(11)
    for i in range(2 * ROUNDS):
        argv = install_argv if i % 2 == 0 else remove_argv
        killed_run(install, env, rng, span, *argv)
        assert vms(pool, install) == {"web": True}
        assert_orphan_free(sysroot, {"web"})
        res = cmd(install, env, *argv)
        scripts, variables = rc_state(sysroot)
        if argv is install_argv:
            assert res.returncode == 0, (i, res.stderr)
            assert scripts == {"web": "web"} and variables == {"web_enable": "YES"}, (i, scripts, variables)
            assert (install / "vm" / "web" / "web.rc").read_text() == (sysroot / "rc.d" / "web").read_text()
        else:
            assert res.returncode == 0, (i, res.stderr)   # a re-run of one that finished: nothing to do
            assert (scripts, variables) == ({}, {}), (i, scripts, variables)
            assert not (install / "vm" / "web" / "web.rc").exists()
