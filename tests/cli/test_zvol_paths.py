"""A VM whose disks are zvols below its dataset (/dev/zvol/ROOT/vm/NAME/...) keeps naming its own
zvols when the dataset moves or is copied under another name: vmrename, vmclone, vmrestore. The
rewrite is tested on real set.conf and run files on the real pool; zfs-fuse has no zvols, so what
vmclone does with them is tested by its dry run (the zfs commands) and its refusals."""

import json
import subprocess
import sys

import pytest

from tests.cli.test_vmsend import far  # noqa: F401 (a fixture: a second install root on a pool of its own)
from tests.conftest import cmd, create_vm, datasets, one_line_error, snapshot_tree


def zvols(pool, name):
    return f"/dev/zvol/{pool}/kvm/vm/{name}"


@pytest.fixture
def web(install, env, pool):
    """VM web: its Disk and a Devices disk zvols of its own dataset, a comment naming them, and a
    run hook using them beside web2's zvol (a whole-component neighbour that must stay)."""
    d = create_vm(install, env, "web", "--bridge", "bridge0")
    mine = zvols(pool, "web")
    res = cmd(install, env, "vmset", "web", f"Disk={mine}/disk",
              f"Devices=3,virtio-net,tapWEB 4,virtio-blk,{mine}/disk1")
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
    # the rename as vmrename makes it (zfs-fuse's "busy" dataset unmounted, renamed, mounted)
    res = subprocess.run([sys.executable, "-c", "import sys; from kvm import zfs; zfs.lzc_rename(*sys.argv[1:])",
                          f"{pool}/kvm/vm/web", f"{pool}/kvm/vm/db"], env=env, capture_output=True, text=True)
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


def test_vmclone_dry_run_snapshots_and_clones_the_zvols_with_the_dataset(install, env, pool, web):
    """One snapshot set over web and its zvols (taken at once), web's dataset cloned under the
    transaction's marker, then each zvol below db's, volmode=dev as kvm makes zvols; nothing made."""
    before = (datasets(pool), snapshot_tree(install / "vm"))
    res = cmd(install, env, "vmclone", "-n", "web", "db")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    snap = lines[0].split("@")[1].split()[0]
    src, dst = f"{pool}/kvm/vm/web", f"{pool}/kvm/vm/db"
    assert snap.startswith("clone-db-")
    assert lines[0] == f"zfs snapshot {src}@{snap} {src}/disk@{snap} {src}/disk1@{snap}"
    assert lines[1].startswith("zfs clone -o kvm:creating=") and lines[1].endswith(f" {src}@{snap} {dst}")
    assert lines[2:4] == [f"zfs clone -o volmode=dev {src}/disk@{snap} {dst}/disk",
                          f"zfs clone -o volmode=dev {src}/disk1@{snap} {dst}/disk1"]
    assert lines[4] == f"zfs inherit kvm:creating {dst}"
    assert (datasets(pool), snapshot_tree(install / "vm")) == before


def test_vmclone_of_a_zvol_that_does_not_exist_names_it_and_leaves_nothing(install, env, pool, web):
    before = (datasets(pool), snapshot_tree(install / "vm"))
    one_line_error(cmd(install, env, "vmclone", "-y", "web", "db"),
                   f"vmclone: web: its disk {zvols(pool, 'web')}/disk, {zvols(pool, 'web')}/disk1 names no zvol "
                   f"that exists ({pool}/kvm/vm/web/disk, {pool}/kvm/vm/web/disk1): nothing to clone it from", status=6)
    assert (datasets(pool), snapshot_tree(install / "vm")) == before


@pytest.mark.parametrize("argv, needles, status", [
    (["--independent"], ["vmclone: web: --independent copies files, and its disk /dev/zvol/{pool}/kvm/vm/web/disk, "
                         "/dev/zvol/{pool}/kvm/vm/web/disk1 is a zvol", "vmclone without --independent clones it too",
                         "vmexport and vmrestore under the new name"], 2),
    (["-n", "--snapshot", "s1"], ["vmclone: web: no snapshot 's1' of {pool}/kvm/vm/web/disk"], 6),
])
def test_vmclone_refusals_with_zvols_name_them_and_change_nothing(install, env, pool, web, argv, needles, status):
    assert cmd(install, env, "snap", "create", "web", "s1").returncode != 0   # zfs-fuse: no zvol to snapshot
    subprocess.run(["zfs", "snapshot", f"{pool}/kvm/vm/web@s1"], check=True)  # the VM's dataset has it, not disk
    before = (datasets(pool), snapshot_tree(install / "vm"))
    one_line_error(cmd(install, env, "vmclone", "-y", "web", "db", *argv), *[n.format(pool=pool) for n in needles],
                   status=status)
    assert (datasets(pool), snapshot_tree(install / "vm")) == before


def test_vmclone_of_a_zvol_on_another_dataset_is_refused_saying_which(install, env, pool, web):
    other = f"/dev/zvol/{pool}/shared/disk"
    assert cmd(install, env, "vmset", "web", f"AllowPath={other}", f"Devices=3,virtio-net,tapWEB 5,virtio-blk,{other}",
               f"Disk={zvols(pool, 'web')}/disk").returncode == 0
    before = (datasets(pool), snapshot_tree(install / "vm"))
    one_line_error(cmd(install, env, "vmclone", "-y", "web", "db"),
                   f"vmclone: web: uses disks on other datasets ({pool}/shared/disk): vmclone clones only "
                   f"{pool}/kvm/vm/web and the zvols below it", status=2)
    assert (datasets(pool), snapshot_tree(install / "vm")) == before


IDENTITY = """
import sys
from kvm.manage import clone
from kvm.vm import Vm
from kvm.vm.root import Root
root = Root(sys.argv[1])
clone.new_identity(sys.argv[2], Vm(root, sys.argv[3]), None)
"""


def test_a_clones_set_conf_and_run_name_its_own_zvols_and_taps(install, env, pool, web):
    """What vmclone does to the copy once ZFS made it (zfs-fuse cannot clone zvols): db holds web's
    set.conf and run, as a clone of web's dataset does; its new identity names db's zvols, tapDB and a
    fresh MAC, and leaves web2's zvol and web's own files alone."""
    assert cmd(install, env, "vmset", "web", f"Devices=3,virtio-net,tapWEB,mac=58:9c:fc:00:00:01 "
                                             f"4,virtio-blk,{zvols(pool, 'web')}/disk1").returncode == 0
    db = create_vm(install, env, "db")
    for name in ("set.conf", "run"):
        (db / name).write_bytes((web / name).read_bytes())
    mine = snapshot_tree(web)
    res = subprocess.run([sys.executable, "-c", IDENTITY, str(install), "web", "db"], env=env, cwd=install,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    conf, run = (db / "set.conf").read_text(), (db / "run").read_text()
    new = zvols(pool, "db")
    assert f'Disk="{new}/disk"' in conf and f"4,virtio-blk,{new}/disk1" in conf, conf
    assert "3,virtio-net,tapDB,mac=02:" in conf and zvols(pool, "web") + "/" not in conf
    assert f"dd if={new}/disk of=/dev/null" in run and f"ls {zvols(pool, 'web2')}/disk" in run
    assert snapshot_tree(web) == mine


def test_vmdestroy_of_a_clone_releases_the_clone_snapshots_of_its_children_too(install, env, pool):
    """A clone as vmclone makes of a VM with a child (a filesystem stands for the zvol zfs-fuse
    cannot make): vmdestroy of the clone removes SRC@clone-DST-... and SRC/child@clone-DST-...;
    a snapshot of the user's stays."""
    create_vm(install, env, "web")
    src, snap = f"{pool}/kvm/vm/web", "clone-db-20261207000000"
    for argv in (["create", f"{src}/data"], ["snapshot", "-r", f"{src}@{snap}"], ["snapshot", "-r", f"{src}@mine"],
                 ["clone", f"{src}@{snap}", f"{pool}/kvm/vm/db"],
                 ["clone", f"{src}/data@{snap}", f"{pool}/kvm/vm/db/data"]):
        subprocess.run(["zfs", *argv], check=True)
    res = cmd(install, env, "vmdestroy", "-y", "db")
    assert res.returncode == 0, res.stderr
    left = datasets(pool)
    assert not {f"{src}@{snap}", f"{src}/data@{snap}", f"{pool}/kvm/vm/db"} & left, sorted(left)
    assert {f"{src}@mine", f"{src}/data@mine", f"{src}/data"} <= left


def test_vmrestore_under_another_name_names_the_copys_own_zvols(install, env, pool, web, tmp_path):
    """Filesystems stand for web's zvols (zfs-fuse has none): exported as web's children, received
    below db's dataset, and db's set.conf and run name db's; web2's path stays."""
    for child in ("disk", "disk1"):
        subprocess.run(["zfs", "create", f"{pool}/kvm/vm/web/{child}"], check=True)
    out = tmp_path / "web.x"
    res = cmd(install, env, "vmexport", "web", out)
    assert res.returncode == 0, res.stderr
    with open(out, "rb") as fh:
        fh.readline()
        info = json.loads(fh.readline())
    assert info["dataset"] == f"{pool}/kvm/vm/web" and [s["dataset"] for s in info["streams"]] == ["", "disk", "disk1"]
    mine = snapshot_tree(web)
    res = cmd(install, env, "vmrestore", out, "db")
    assert res.returncode == 0, res.stderr
    assert {f"{pool}/kvm/vm/db/disk", f"{pool}/kvm/vm/db/disk1"} <= datasets(pool)
    db, new = install / "vm" / "db", zvols(pool, "db")
    conf, run = (db / "set.conf").read_text(), (db / "run").read_text()
    assert f'Disk="{new}/disk"' in conf and f"4,virtio-blk,{new}/disk1" in conf and "tapDB" in conf, conf
    assert zvols(pool, "web") + "/" not in conf
    assert f"dd if={new}/disk of=/dev/null" in run and f"ls {zvols(pool, 'web2')}/disk" in run
    assert snapshot_tree(web) == mine


def test_vmsend_of_a_vm_with_zvol_disks_is_refused_naming_them(install, env, pool, web, far):
    """vmsend sends the VM's dataset as one stream, without the zvols below it, and the copy would
    name the source's: refused before anything is sent, saying what carries them."""
    root, far_pool = far
    before = (datasets(pool), datasets(far_pool))
    one_line_error(cmd(install, env, "vmsend", "web", "--local", root, "--copy"),
                   f"vmsend: web: its disk {zvols(pool, 'web')}/disk, {zvols(pool, 'web')}/disk1 is a zvol: vmsend "
                   f"sends {pool}/kvm/vm/web alone, not the zvols below it (vmexport and vmrestore carry them)")
    assert (datasets(pool), datasets(far_pool)) == before
