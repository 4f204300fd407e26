"""vmdisk list|add|grow|detach on the real ZFS pool, the VM run by the bhyve simulator: the slot
chosen free, the file in the VM's dataset, bhyve given its absolute path, every refusal one line
that changes nothing (set.conf byte for byte, no file made or grown)."""

import json
import os
import re
import subprocess

import pytest

from tests.cli.test_run import boots, guest_up, script, wait_for
from tests.conftest import cmd, create_vm, one_line_error

MIB = 1 << 20


@pytest.fixture
def web(install, env):
    d = create_vm(install, env, "web", "--disk-size", "64M")
    assert cmd(install, env, "vmset", "web", "Devices=3,virtio-rnd 5,virtio-rnd").returncode == 0
    return d


def listed(install, env, name="web"):
    res = cmd(install, env, "vmdisk", "list", name, "--json")
    assert res.returncode == 0, res.stderr
    return {d["disk"]: d for d in json.loads(res.stdout)}


def state(d):
    """What a refusal must leave as it was: set.conf's bytes and the folder's files and sizes."""
    return (d / "set.conf").read_bytes(), sorted((p.name, p.stat().st_size) for p in d.iterdir())


def test_add_takes_the_lowest_free_slot_and_bhyve_gets_the_absolute_path(install, env, web):
    res = cmd(install, env, "vmdisk", "add", "web", "32M")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "web: added disk disk1 (32M, nvme) at slot 4\n"
    res = cmd(install, env, "vmdisk", "add", "web", "16M", "--driver", "virtio-blk")
    assert res.stdout == "web: added disk disk2 (16M, virtio-blk) at slot 6\n", res.stderr
    assert 'Devices="3,virtio-rnd 5,virtio-rnd 4,nvme,disk1 6,virtio-blk,disk2"' in (web / "set.conf").read_text()
    assert (web / "disk1").stat().st_size == 32 * MIB and (web / "disk1").stat().st_blocks < 1024  # sparse
    disks = listed(install, env)
    assert [(k, v["slot"], v["driver"], v["size"], v["kind"], v["main"], v["inside"]) for k, v in disks.items()] == [
        ("disk", "1", "nvme", 64 * MIB, "file", True, True), ("disk1", "4", "nvme", 32 * MIB, "file", False, True),
        ("disk2", "6", "virtio-blk", 16 * MIB, "file", False, True)]
    res = cmd(install, env, "vmdisk", "list", "web", "-H", "-p")
    assert res.stdout.splitlines()[1].split("\t")[:6] == ["disk1", "4", "nvme", str(32 * MIB),
                                                          str(disks["disk1"]["used"]), "file"]
    # the simulated bhyve opens each file (it fails on one it cannot find): the VM folder's path
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    argv = boots(env)[0]
    assert f"4,nvme,{web}/disk1" in argv and f"6,virtio-blk,{web}/disk2" in argv
    assert cmd(install, env, "stop", "web").returncode == 0


def test_a_thick_disk_is_written_and_a_dry_run_makes_nothing(install, env, web):
    before = state(web)
    res = cmd(install, env, "vmdisk", "-n", "add", "web", "8M")
    assert res.returncode == 0 and "would add disk disk1 (8M, nvme) at slot 4" in res.stdout, res.stderr
    assert state(web) == before
    assert cmd(install, env, "vmdisk", "add", "web", "8M", "--thick").returncode == 0
    st = (web / "disk1").stat()
    assert st.st_size == 8 * MIB


def test_grow_never_shrinks_and_detach_keeps_the_file_unless_destroy(install, env, web):
    assert cmd(install, env, "vmdisk", "add", "web", "32M").returncode == 0
    res = cmd(install, env, "vmdisk", "grow", "web", "disk1", "48M")
    assert res.returncode == 0 and res.stdout == "web: grew disk disk1 from 32M to 48M\n", res.stderr
    assert (web / "disk1").stat().st_size == 48 * MIB
    res = cmd(install, env, "vmdisk", "grow", "web", "4", "48M")   # by slot; the same size: nothing
    assert res.returncode == 0 and "already 48M; nothing changed" in res.stderr
    res = cmd(install, env, "vmdisk", "grow", "web", "disk", "0.125G")   # the main disk, 64M -> 128M
    assert res.returncode == 0 and (web / "disk").stat().st_size == 128 * MIB
    res = cmd(install, env, "vmdisk", "detach", "web", "disk1")
    assert res.returncode == 0 and "detached disk disk1 (slot 4; file kept as" in res.stdout
    assert (web / "disk1").exists() and "disk1" not in (web / "set.conf").read_text()
    res = cmd(install, env, "vmdisk", "detach", "web", "disk", "--destroy")
    assert res.returncode == 0, res.stderr
    lines = (web / "set.conf").read_text().splitlines()
    assert not (web / "disk").exists() and not [ln for ln in lines if ln.startswith(("Disk=", "DiskDriver="))]
    assert listed(install, env) == {}
    # the kept file's name is not given again
    assert "disk disk2 " in cmd(install, env, "vmdisk", "add", "web", "1M").stdout


@pytest.mark.parametrize("args, needles, status", [
    (["add", "web", "10X"], ["vmdisk: web: size '10X' is not a size"], 2),
    (["add", "web", "0"], ["size '0' is zero"], 2),
    (["grow", "web", "disk", "32M"], ["vmdisk: web: disk disk is 64M (67108864 bytes): 32M would shrink it"], 2),
    (["grow", "web", "disk9", "1G"], ["vmdisk: web: no disk 'disk9' (its disks: disk; see vmdisk list)"], 6),  # 6: not found (kvm(8))
    (["grow", "web", "disk", "1Q"], ["size '1Q' is not a size"], 2),
    (["add", "web"], ["add takes 1 word(s) after NAME"], 2),
    (["add", "nosuch", "1G"], ["vmdisk: nosuch: no such VM"], 6),
])
def test_bad_input_is_one_line_and_changes_nothing(install, env, web, args, needles, status):
    before = state(web)
    one_line_error(cmd(install, env, "vmdisk", *args), *needles, status=status)
    assert state(web) == before


@pytest.mark.parametrize("args", [["add", "web", "1G", "--driver", "scsi"], ["resize", "web", "disk", "1G"]])
def test_a_bad_word_is_argparse_usage_and_changes_nothing(install, env, web, args):
    before = state(web)
    res = cmd(install, env, "vmdisk", *args)
    assert res.returncode == 2 and res.stderr.startswith("vmdisk: argument") and "invalid choice" in res.stderr
    assert state(web) == before


def test_a_pool_without_room_is_refused_saying_what_it_can_hold(install, env, web, pool):
    avail = int(subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", "available", f"{pool}/kvm/vm/web"],
                               capture_output=True, text=True).stdout)
    before = state(web)
    line = one_line_error(cmd(install, env, "vmdisk", "add", "web", "5G"), "vmdisk: web: pool", "available",
                          "cannot hold a new 5G disk")
    said = int(re.search(r"available \(([0-9]+) bytes\)", line).group(1))   # what the pool can hold
    assert f"pool {pool} has" in line and abs(said - avail) < avail // 100, (said, avail)
    one_line_error(cmd(install, env, "vmdisk", "grow", "web", "disk", "6G"), f"pool {pool} has",
                   "cannot hold disk disk grown to 6G")
    assert state(web) == before


def test_a_disk_outside_the_vm_dataset_is_neither_grown_nor_destroyed(install, env, web, pool):
    os.makedirs(f"/{pool}/kvm/images", exist_ok=True)
    ext = f"/{pool}/kvm/images/ext.img"
    with open(ext, "wb") as fh:
        fh.truncate(8 * MIB)
    assert cmd(install, env, "vmset", "web", f"Devices=3,virtio-rnd 4,virtio-blk,{ext}").returncode == 0
    web_before = state(web)
    one_line_error(cmd(install, env, "vmdisk", "grow", "web", "ext.img", "16M"),
                   f"disk {ext} ({ext}) lies outside the VM's dataset {pool}/kvm/vm/web: refusing to grow it")
    one_line_error(cmd(install, env, "vmdisk", "detach", "web", ext, "--destroy"),
                   "lies outside the VM's dataset", "refusing to destroy it")
    assert state(web) == web_before and os.path.getsize(ext) == 8 * MIB
    assert cmd(install, env, "vmdisk", "detach", "web", "4").returncode == 0   # detached, kept
    assert os.path.exists(ext) and "ext.img" not in (web / "set.conf").read_text()
    os.unlink(ext)


def test_while_running_bhyve_grows_nvme_online_refuses_ahci_detach_and_adds_for_the_next_boot(install, env, web):
    assert cmd(install, env, "vmdisk", "add", "web", "8M", "--driver", "ahci-hd").returncode == 0
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    before = state(web)
    one_line_error(cmd(install, env, "vmdisk", "grow", "web", "disk1", "16M"),
                   "vmdisk: web: is running and bhyve resizes nvme and virtio-blk disks online, not ahci-hd: "
                   "stop it first to grow disk disk1")
    one_line_error(cmd(install, env, "vmdisk", "detach", "web", "disk1"), "vmdisk: web: is running: stop it first")
    assert state(web) == before
    res = cmd(install, env, "vmdisk", "grow", "web", "disk", "96M")   # nvme: bhyve watches its file
    assert res.returncode == 0 and "the guest was told the new size" in res.stderr, res.stderr
    assert (web / "disk").stat().st_size == 96 * MIB
    res = cmd(install, env, "vmdisk", "add", "web", "4M")
    assert res.returncode == 0 and "added disk disk2 (4M, nvme) at slot 6" in res.stdout
    assert "bhyve has no PCI hot-plug; the disk is there from the next start" in res.stderr
    assert cmd(install, env, "stop", "web").returncode == 0


def test_hotplug_ports_keep_slot_27_and_are_refused_over_a_device(install, env, web):
    devs = " ".join(f"{n},virtio-rnd" for n in range(3, 27))
    assert cmd(install, env, "vmset", "web", f"Devices={devs}", "Hotplug=2").returncode == 0
    res = cmd(install, env, "vmdisk", "add", "web", "1M")
    assert res.returncode == 0 and "at slot 28" in res.stdout, res.stderr
    before = state(web)
    one_line_error(cmd(install, env, "vmdisk", "add", "web", "1M"), "has no free slot for a disk")
    assert state(web) == before
    one_line_error(cmd(install, env, "vmset", "web", f"Devices={devs} 27,virtio-rnd"),
                   "Hotplug='2' needs slot 27 for its hot-plug ports, which Devices item '27,virtio-rnd' uses")


def test_zvol_disks_argv_in_a_dry_run_and_zfs_fuse_refusing_them_leaves_nothing(install, env, web, pool):
    """zfs-fuse has no zvols: the argv is tested by the dry run, and the real run's refusal for real."""
    before = state(web)
    res = cmd(install, env, "vmdisk", "-n", "add", "web", "1G", "--zvol")
    assert res.returncode == 0, res.stderr
    assert f"zfs create -s -V 1073741824 -o volmode=dev {pool}/kvm/vm/web/disk1" in res.stdout
    assert "would add disk disk1 (1G, nvme) at slot 4" in res.stdout
    res = cmd(install, env, "vmdisk", "-n", "add", "web", "1G", "--zvol", "--thick")
    assert f"zfs create -V 1073741824 -o volmode=dev {pool}/kvm/vm/web/disk1" in res.stdout
    one_line_error(cmd(install, env, "vmdisk", "add", "web", "1.5M", "--zvol"),
                   "a zvol's size must be a whole number of MiB", status=2)
    if f" /{pool} fuse.zfs " not in open("/proc/self/mounts").read():
        pytest.skip("the pool is not zfs-fuse's: the refusal below is zfs-fuse's")
    one_line_error(cmd(install, env, "vmdisk", "add", "web", "64M", "--zvol"),
                   "vmdisk: web:", "this ZFS makes no zvols (zfs-fuse has none", "use a file disk")
    assert state(web) == before
    assert subprocess.run(["zfs", "list", f"{pool}/kvm/vm/web/disk1"], capture_output=True).returncode != 0


def test_a_zvol_named_in_set_conf_is_listed_as_one_and_destroy_asks_zfs(install, env, web, pool):
    """A zvol below the VM's dataset (as vmdisk add --zvol writes it) is inside; listed with its kind."""
    zvol = f"/dev/zvol/{pool}/kvm/vm/web/disk1"
    assert cmd(install, env, "vmset", "web", f"Devices=3,virtio-rnd 4,virtio-blk,{zvol}").returncode == 0
    d = listed(install, env)[zvol]
    assert (d["slot"], d["inside"], d["kind"]) == ("4", True, "missing")   # zfs-fuse: no such volume
    res = cmd(install, env, "vmdisk", "-n", "detach", "web", "4", "--destroy")
    assert res.returncode == 0 and f"zfs destroy -r {pool}/kvm/vm/web/disk1" in res.stdout, res.stdout


def test_vmcreate_disk_zvol_argv_and_zfs_fuse_refusal_leave_no_vm(install, env, pool):
    res = cmd(install, env, "vmcreate", "zv", "-y", "--no-network", "--vnc", "no", "--com", "no", "--disk-size", "2G",
              "--disk-zvol", "-n")
    assert res.returncode == 0, res.stderr
    assert f"zfs create -s -V 2147483648 -o volmode=dev {pool}/kvm/vm/zv/disk" in res.stdout
    from kvm.manage.create import Answers, render_files
    conf = render_files("zv", Answers(loader="uefi", disk_size="2G", disk_zvol=True), install)[0]
    assert f'Disk="/dev/zvol/{pool}/kvm/vm/zv/disk"' in conf   # inside the VM's dataset: no AllowPath needed
    one_line_error(cmd(install, env, "vmcreate", "zv", "-y", "--no-disk", "--disk-zvol"),
                   "--disk-zvol cannot be used with --no-disk or --from", status=2)
    if f" /{pool} fuse.zfs " not in open("/proc/self/mounts").read():
        pytest.skip("the pool is not zfs-fuse's: the refusal below is zfs-fuse's")
    one_line_error(cmd(install, env, "vmcreate", "zv", "-y", "--no-network", "--vnc", "no", "--com", "no",
                       "--disk-size", "64M", "--disk-zvol"), "this ZFS makes no zvols")
    assert subprocess.run(["zfs", "list", f"{pool}/kvm/vm/zv"], capture_output=True).returncode != 0
    assert not (install / "vm" / "zv").exists()
