"""Faults and hostile input: full pool, tight reboot loops, names and values built to break quoting."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cmd, create_vm, datasets, fake_iso, kvm, one_line_error, snapshot_tree
from tests.cli.test_run import HOOKS, boots, script


def test_full_pool_while_writing_set_conf_keeps_the_old_one(scratch_pool, env, tmp_path):
    pool = scratch_pool(128)
    assert kvm(env, "kvminst", "-p", pool, "-y").returncode == 0
    root = Path(f"/{pool}/kvm")
    d = create_vm(root, env, "full")
    original = (d / "set.conf").read_bytes()
    subprocess.run(["dd", "if=/dev/urandom", f"of=/{pool}/kvm/vm/full/filler", "bs=1M"], capture_output=True)
    # dd stops at the first refused megabyte; small writes can still fit in ZFS's slop: fill those too
    for i in range(20000):
        try:
            (d / f"crumb{i}").write_bytes(os.urandom(2048))
        except OSError:
            break
    iso = tmp_path / ("x" * 200 + ".iso")
    fake_iso(iso)
    res = cmd(root, env, "insert", "full", iso)
    if res.returncode == 0:
        pytest.skip("zfs-fuse accepted the write on a full pool (its reserved slop): nothing to prove here")
    one_line_error(res, "insert: full: cannot write", "No space left on device")
    assert (d / "set.conf").read_bytes() == original
    assert not any(p.name.startswith(".set.conf") for p in d.iterdir()), "no temp file left behind"
    sav = d / "set.conf.sav"
    assert not sav.exists() or sav.read_bytes() == original, "a backup, if any, holds the old file"
    subprocess.run(["zfs", "destroy", "-r", f"{pool}/kvm"], capture_output=True)


def test_guest_rebooting_in_a_tight_loop(install, env):
    d = create_vm(install, env, "loop", "--disk-size", "64M")
    (d / "run").write_text(HOOKS.format(name="loop", pre_extra=":"))
    script(env, "loop", *(["reboot after=0"] * 12), "poweroff after=0")
    res = cmd(install, env, "start", "loop", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(boots(env, "loop")) == 13
    log = (d / "hooks.log").read_text().splitlines()
    assert log == ["pre loop", "post 0 reboot"] * 12 + ["pre loop", "post 1 poweroff"]
    assert cmd(install, env, "status", "loop").stdout == "0\n"
    assert not (Path(env["KVM_VMM_DIR"]) / "loop").exists()


HOSTILE = ["my vm", "a;touch /tmp/kvm-pwned", "$(touch /tmp/kvm-pwned)", "`touch /tmp/kvm-pwned`",
           "a\nb", "ok\n", "../x", "..", "-rf", "a/b", "x" * 40, ""]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_by_every_command(install, env, pool, name):
    create_vm(install, env, "ok")
    before_ds, before_tree = datasets(pool), snapshot_tree(install)
    commands = [["vmcreate", name, "-y"], ["start", name], ["start", "-b", name], ["stop", name],
                ["status", name], ["insert", name, "/etc/hostname"], ["eject", name], ["snap", "c", name, "s"],
                ["dorc", name, "-y"], ["vminfo", name], ["vmdestroy", name, "-y"], ["console", name],
                ["vmrename", name, "ok2"], ["vmrename", "ok", name]]
    for argv in commands:
        res = cmd(install, env, *argv)
        assert res.returncode == 2, (argv, res.returncode, res.stdout, res.stderr)
        assert len(res.stderr.strip().splitlines()) in (1, 2), (argv, res.stderr)  # argparse adds a hint line
        assert "Traceback" not in res.stderr
    assert not Path("/tmp/kvm-pwned").exists()
    assert datasets(pool) == before_ds and snapshot_tree(install) == before_tree


def test_hostile_values_are_stored_and_passed_through_never_executed(install, env, tmp_path):
    d = create_vm(install, env, "web", "--disk-size", "64M")
    weird = tmp_path / "a $(touch PWNED1) `touch PWNED2`; b'\"c.iso"
    fake_iso(weird)
    res = cmd(install, env, "insert", "web", weird)
    assert res.returncode == 0, res.stderr
    info = json.loads(cmd(install, env, "vminfo", "web", "--json").stdout)
    assert info["iso"] == str(weird)  # as data; the warning naming where it lies quotes it too
    (d / "run").write_text(HOOKS.format(name="web", pre_extra='echo "iso=$ISO" >> "$VMdir/hooks.log"'))
    script(env, "web", "poweroff after=0")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"2,ahci-cd,{weird}" in boots(env, "web")[0]
    assert f"iso={weird}" in (d / "hooks.log").read_text()
    assert not list(Path(install).rglob("PWNED*")) and not list(tmp_path.rglob("PWNED*"))
    assert not Path("PWNED1").exists()


@pytest.mark.parametrize("flag, value", [("--bridge", "br0;reboot"), ("--tap", "tap$(id)"),
                                         ("--uplink", "em0 addm em1"), ("--vnc-addr", "1.2.3.4;x"),
                                         ("--boot", "cd0\nVMrom=evil")])
def test_hostile_vmcreate_values(install, env, pool, flag, value):
    extra = ["--loader", "grub"] if flag == "--boot" else []
    res = cmd(install, env, "vmcreate", "hv", "-y", *extra, flag, value)
    if res.returncode == 0:
        # accepted values must come back exactly, as data
        conf = (install / "vm" / "hv" / "set.conf").read_text()
        assert "VMrom=evil" not in conf.replace('\\nVMrom=evil', '')
        values = subprocess.run(["sh", "-c", f'. "{install}/vm/hv/set.conf"; printf %s "$Boot"'],
                                capture_output=True, text=True).stdout
        assert values == value
    else:
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert f"{pool}/kvm/vm/hv" not in datasets(pool)
