"""Issue 19's low items, end to end: a linked set.conf refused by vmrename and dorc, the name
`kvm`, a CR in insert's ISO, snapshot names read as options, an editor that deletes or links
its file, set.conf names that change what hooks run, dorc -r with nothing left, a vmdestroy
killed while its `zfs destroy` goes on, vmlist with the run folder gone, races said as such."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.cli.test_run import guest_up, script, wait_for
from tests.conftest import cmd, create_vm, datasets, one_line_error, snapshot_tree


def test_vmrename_and_dorc_refuse_a_linked_set_conf(install, env, pool, sysroot, tmp_path):
    d = create_vm(install, env, "web")
    target = tmp_path / "elsewhere.conf"
    shutil.move(d / "set.conf", target)
    os.symlink(target, d / "set.conf")
    before = (datasets(pool), snapshot_tree(d), snapshot_tree(sysroot / "rc.d"), (sysroot / "rc.conf").read_bytes())
    one_line_error(cmd(install, env, "vmrename", "web", "www"), "vmrename: web: set.conf", "is a symbolic link")
    one_line_error(cmd(install, env, "dorc", "web", "-y"), "dorc: web: set.conf", "is a symbolic link")
    (d / "set.conf").unlink()
    shutil.move(target, d / "set.conf")
    shutil.move(d / "run", tmp_path / "run")
    os.symlink(tmp_path / "run", d / "run")
    one_line_error(cmd(install, env, "vmrename", "web", "www"), "vmrename: web: run", "is a symbolic link")
    assert datasets(pool) == before[0] and snapshot_tree(sysroot / "rc.d") == before[2]
    assert (sysroot / "rc.conf").read_bytes() == before[3]


def test_the_name_kvm_is_the_host_wide_services(install, env, pool):
    before = datasets(pool)
    one_line_error(cmd(install, env, "vmcreate", "kvm", "-y", "--no-disk", "--no-network"),
                   "vmcreate: kvm: its rc name would be 'kvm', the host-wide kvm service's", status=2)
    create_vm(install, env, "web")
    one_line_error(cmd(install, env, "vmrename", "web", "kvm"), "rc name would be 'kvm'", status=2)
    one_line_error(cmd(install, env, "vmclone", "web", "kvm", "-y"), "rc name would be 'kvm'", status=2)
    assert datasets(pool) == before | {f"{pool}/kvm/vm/web"}


def test_insert_names_a_value_with_a_carriage_return(install, env, tmp_path):
    d = create_vm(install, env, "web")
    iso = tmp_path / "x\r.iso"
    iso.write_bytes(b"iso")
    before = (d / "set.conf").read_bytes()
    one_line_error(cmd(install, env, "insert", "web", iso), f"insert: web: ISO='{tmp_path}/x\\r.iso' holds a control",
                   status=2)
    assert (d / "set.conf").read_bytes() == before


@pytest.mark.parametrize("name", ["-R", "-", ".", ".."])
def test_snapshot_names_read_as_options_or_folders_are_refused(install, env, pool, name):
    create_vm(install, env, "web")
    before = datasets(pool)
    one_line_error(cmd(install, env, "snap", "create", "web", "--", name), f"invalid snapshot name '{name}'",
                   status=2)
    assert datasets(pool) == before


def test_dorc_r_with_nothing_left_to_remove_is_done(install, env, sysroot):
    create_vm(install, env, "web")
    res = cmd(install, env, "dorc", "-r", "web")
    assert res.returncode == 0 and res.stdout == "", res.stderr
    assert res.stderr == f"web: has no rc.d script ({sysroot}/rc.d/web): nothing to remove\n"


@pytest.mark.parametrize("editor, needle", [
    ("rm -f", "the editor left no file at"),
    ("ln -sf /etc/hostname", "is a symbolic link: refusing it"),
])
def test_vmedit_an_editor_that_removes_or_links_its_file(install, env, editor, needle):
    d = create_vm(install, env, "web")
    before = (d / "set.conf").read_bytes()
    env["EDITOR"] = f"sh -c '{editor} \"$0\" 2>/dev/null || {editor} \"$0\" \"$0\"'" if "ln" not in editor else \
        "sh -c 'rm \"$0\" && ln -s /etc/hostname \"$0\"'"
    one_line_error(cmd(install, env, "vmedit", "web"), "vmedit: web:", needle, "set.conf left as it was")
    assert (d / "set.conf").read_bytes() == before and not (d / "set.conf.sav").exists()


@pytest.mark.parametrize("key", ["PATH", "IFS", "LD_PRELOAD", "VMname", "VMdir", "VMd"])
def test_vmset_refuses_names_that_change_what_hooks_run(install, env, key):
    d = create_vm(install, env, "web")
    before = (d / "set.conf").read_bytes()
    one_line_error(cmd(install, env, "vmset", "web", "--force", f"{key}=/tmp"),
                   f"vmset: web: {key} is the hooks' own", status=2)
    assert (d / "set.conf").read_bytes() == before
    with open(d / "set.conf", "a") as fh:   # written by hand: the launch refuses it too
        fh.write(f'{key}="/tmp"\n')
    one_line_error(cmd(install, env, "start", "web"), f"start: web: set.conf: {key} is the hooks' own")


def test_vmlist_with_the_run_folder_gone_still_sees_the_supervisor(install, env):
    create_vm(install, env, "web", "--disk-size", "1G")
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    shutil.rmtree(env["KVM_RUN_DIR"])
    rows = json.loads(cmd(install, env, "vmlist", "--json").stdout)
    row = next(r for r in rows if r["name"] == "web")
    assert row["state"] == "running", row
    assert cmd(install, env, "stop", "-f", "web").returncode == 0


SLOW_ZFS = r'''#!PYTHON
"""zfs whose `destroy -r` takes DELAY seconds before doing it (a big dataset)."""
import os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
real = next(os.path.join(d, "zfs") for d in os.environ["PATH"].split(":")
            if d and os.path.abspath(d) != here and os.access(os.path.join(d, "zfs"), os.X_OK))
if sys.argv[1:3] == ["destroy", "-r"]:
    open(os.path.join(here, "destroying"), "w").close()
    time.sleep(DELAY)
os.execv(real, [real] + sys.argv[1:])
'''


def test_a_vmdestroy_killed_while_zfs_destroys_is_waited_for_by_the_next(install, env, pool, tmp_path):
    create_vm(install, env, "web")
    bindir = tmp_path / "zfsbin"
    bindir.mkdir()
    (bindir / "zfs").write_text(SLOW_ZFS.replace("PYTHON", sys.executable).replace("DELAY", "12"))
    (bindir / "zfs").chmod(0o755)
    env["PATH"] = f"{bindir}:{env['PATH']}"
    proc = subprocess.Popen(["./vmdestroy", "-y", "web"], cwd=install, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    wait_for(lambda: (bindir / "destroying").exists(), what="the zfs destroy")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    start = time.time()
    res = cmd(install, env, "vmdestroy", "-y", "web")
    assert time.time() - start >= 1.5, "it did not wait for the zfs destroy left running"
    assert "left by a vmdestroy that was killed still runs" in res.stderr and "waiting for it" in res.stderr
    # then it finishes the destroy (the one left running may have failed "busy" without its parent
    # to try again), or says that it is done
    assert (res.returncode == 0 and res.stdout.startswith("destroyed web")) or \
        (res.returncode == 6 and res.stderr.splitlines()[-1].startswith("vmdestroy: web: no such VM")), res.stderr
    assert f"{pool}/kvm/vm/web" not in datasets(pool)


def test_a_race_is_said_as_what_happened_to_the_vm():
    from kvm.cli import common
    from kvm.zfs.errors import DatasetExists, DatasetNotFound
    gone = DatasetNotFound("dataset does not exist", "tank/kvm/vm/web")
    gone.vm = "web"
    common._raced(gone)
    assert gone.message == "no such VM (its dataset tank/kvm/vm/web is gone: destroyed or renamed meanwhile)"
    made = DatasetExists("dataset already exists", "tank/kvm/vm/c1")
    made.vm = "c1"
    common._raced(made)
    assert made.message.startswith("already exists (its dataset tank/kvm/vm/c1 was made meanwhile")
    other = DatasetNotFound("dataset does not exist", "tank/kvm/vm/web/disk0")
    other.vm = "web"
    common._raced(other)
    assert other.message == "tank/kvm/vm/web/disk0: dataset does not exist"


def test_an_image_being_made_is_not_listed_as_missing(install, env, pool):
    subprocess.run(["zfs", "create", "-p", f"{pool}/kvm/images/ih"], check=True)   # no @base yet: being made
    one_line_error(cmd(install, env, "vmcreate", "w1", "--from", "ih", "-y"),
                   "image 'ih' is not complete (an image import or publish is making it", status=6)
    one_line_error(cmd(install, env, "vmcreate", "w1", "--from", "nope", "-y"), "no image 'nope' (images: ih)", status=6)
