"""A VM whose disks are zvols below its dataset (/dev/zvol/ROOT/vm/NAME/...) keeps naming its own
zvols when the dataset moves or is copied under another name: vmrename, vmclone, vmrestore. The
rewrite is tested on real set.conf and run files on the real pool; zfs-fuse has no zvols, so what
vmclone does with them is tested by its dry run (the zfs commands) and its refusals."""

import json
import subprocess
import time

import pytest

from tests.conftest import cmd, create_vm, datasets, one_line_error, snapshot_tree


def zvols(pool, name):
    return f"/dev/zvol/{pool}/kvm/vm/{name}"


@pytest.fixture
def web(install, env, pool):
    """VM web: its Disk and a Devices disk zvols of its own dataset, a comment naming them, and a
    run hook using them beside web2's zvol (a whole-component neighbour that must stay)."""
    d = create_vm(install, env, "web", "--bridge", "bridge0")
    mine = zvols(pool, "web")
    res = cmd(install, env, "vmset", "web", f"Disk={mine}/disk", f"Devices=3,virtio-net,tapWEB 4,virtio-blk,{mine}/disk1")
    assert res.returncode == 0, res.stderr
    run = (d / "run").read_text()
    run += (f"# data: {mine}/disk1, web2's: {zvols(pool, 'web2')}/disk\n"
            f"preRun() {{ dd if={mine}/disk of=/dev/null count=1; ls {zvols(pool, 'web2')}/disk {mine}x/disk; }}\n")
    (d / "run").write_text(run)
    return d


def test_vmrename_makes_the_zvol_paths_the_new_datasets_and_only_whole_components(install, env, pool, web):
    res = cmd(install, env, "vmrename", "web", "db")
    assert res.returncode == 0, res.stderr
    new, old = zvols(pool, "db"), zvols(pool, "web")
    conf = (install / "vm" / "db" / "set.conf").read_text()
    assert f'Disk="{new}/disk"' in conf and f"4,virtio-blk,{new}/disk1" in conf, conf
    assert old + "/" not in conf
    assert "3,virtio-net,tapWEB" in conf, "vmrename keeps the tap names"
    run = (install / "vm" / "db" / "run").read_text()
    assert f"# data: {new}/disk1, web2's: {zvols(pool, 'web2')}/disk\n" in run
    assert f"dd if={new}/disk of=/dev/null" in run
    assert f"ls {zvols(pool, 'web2')}/disk {old}x/disk;" in run, "web2's zvol and webx are not web's"
    info = json.loads(cmd(install, env, "vminfo", "db", "--json").stdout)
    assert info["disk"]["path"] == f"{new}/disk", info["disk"]


def test_vmrename_dry_run_rewrites_nothing(install, env, pool, web):
    before = snapshot_tree(install / "vm")
    res = cmd(install, env, "vmrename", "-n", "web", "db")
    assert res.returncode == 0, res.stderr
    assert snapshot_tree(install / "vm") == before


def test_a_vmrename_killed_after_the_dataset_moved_rewrites_the_zvol_paths_when_run_again(install, env, pool, web):
    """The state kill -9 leaves right after the dataset's rename: the intent in the moved folder,
    set.conf still naming web's zvols; running vmrename again finishes, and once more changes nothing."""
    (web / ".kvm-rename").write_text("web db\n")
    for _ in range(40):   # zfs-fuse says "busy" for a while after files close
        res = subprocess.run(["zfs", "rename", f"{pool}/kvm/vm/web", f"{pool}/kvm/vm/db"], capture_output=True)
        if res.returncode == 0:
            break
        time.sleep(0.5)
    assert res.returncode == 0, res.stderr
    db = install / "vm" / "db"
    assert zvols(pool, "web") + "/disk" in (db / "set.conf").read_text()
    res = cmd(install, env, "vmrename", "web", "db")
    assert res.returncode == 0, res.stderr
    conf = (db / "set.conf").read_text()
    assert f'Disk="{zvols(pool, "db")}/disk"' in conf and zvols(pool, "web") + "/" not in conf
    assert not (db / ".kvm-rename").exists()
    before = snapshot_tree(db)
    one_line_error(cmd(install, env, "vmrename", "web", "db"), "no such VM", status=6)
    assert snapshot_tree(db) == before
