"""vmimport: vm-bhyve guest folders (built here by hand, as vm-bhyve lays them out) and shell kvm
VM folders made into kvm VMs on a real pool; the bhyve line `start -n` shows is what a user
checks, and every refusal is one line that leaves the pool as it was."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import as_nobody, cmd, create_vm, datasets, one_line_error, snapshot_tree

UEFI_CONF = """\
loader="uefi"
cpu=2
memory=2G
network0_type="virtio-net"
network0_switch="public"
disk0_type="virtio-blk"
disk0_name="disk0.img"
uuid="8c3b3f6e-7d4b-11ee-b962-0242ac120002"
network0_mac="58:9c:fc:0a:0b:0c"
graphics="yes"
graphics_res="1280x720"
xhci_mouse="yes"
uefi_vars="yes"
# a comment, and a line vm-bhyve skips (it starts with a space)
 cpu=9
"""

SYSTEM_CONF = 'switch_list="public"\ntype_public="standard"\nports_public="em0"\n'


@pytest.fixture
def store():
    """A vm-bhyve datastore folder (vm_dir) outside the pool."""
    d = Path(tempfile.mkdtemp(prefix="vmbhyve", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def disk_file(path, size=4 << 20):
    with open(path, "wb") as fh:
        fh.write(b"MBR!" * 128)
        fh.seek(size - 4)
        fh.write(b"END!")
    return path


def guest(store, conf, name="web", disks=("disk0.img",), system=SYSTEM_CONF):
    g = store / name
    g.mkdir()
    (g / f"{name}.conf").write_text(conf)
    for d in disks:
        disk_file(g / d)
    if system is not None:
        (store / ".config").mkdir(exist_ok=True)
        (store / ".config" / "system.conf").write_text(system)
    return g


def settings(path):
    return [line for line in Path(path).read_text().splitlines() if line and not line.startswith("#")]


def bhyve_line(install, env, name):
    res = cmd(install, env, "start", "-n", name)
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if line.startswith("bhyve ")][0]


def test_a_uefi_guest_keeps_its_layout_mac_vars_and_bridge(install, env, store):
    g = guest(store, UEFI_CONF)
    (g / "uefi-vars.fd").write_bytes(b"GUEST-VARS" * 100)
    res = cmd(install, env, "vmimport", "--from", "vm-bhyve", g)
    assert res.returncode == 0, res.stderr
    vmdir = install / "vm" / "web"
    assert settings(vmdir / "set.conf") == [
        'VMrom="uefi"', 'Cores="2"', 'Mem="2G"', 'VMoptions="AHPwu"', f'Disk="{g}/disk0.img"',
        'DiskDriver="virtio-blk"', 'Devices="5,virtio-net,tapWEB,mac=58:9c:fc:0a:0b:0c"', 'Switch="tapWEB=public"',
        'VNC="1"', 'wVNC="1280"', 'hVNC="720"', 'COM="1"', f'AllowPath="{g}/disk0.img"']  # referenced in place
    # issue 21: vm-bhyve's switch became a kvm switch (its file written; up at the VM's first start)
    assert settings(install / "switches" / "public.conf") == ['Uplinks="em0"']
    run = (vmdir / "run").read_text()
    assert "CreateIF" not in run.split("preRun()", 1)[1] and "DestroyIF" not in run.split("preRun()", 1)[1]
    assert "the NIC is on kvm switch public (Uplinks=em0)" in res.stdout
    assert (vmdir / "UEFI_VARS.fd").read_bytes() == b"GUEST-VARS" * 100  # the guest's boot entries
    assert (g / "disk0.img").exists()  # referenced in place
    report = (vmdir / "vmimport.txt").read_text()
    for needle in ("uuid=8c3b3f6e", "graphics_listen (unset)", "now at PCI slot 1 (was 4)"):
        assert needle in report and needle in res.stdout, needle
    argv = bhyve_line(install, env, "web")
    assert f"-s 1,virtio-blk,{g}/disk0.img" in argv and "-s 5,virtio-net,tapWEB,mac=58:9c:fc:0a:0b:0c" in argv
    assert "-s 29,xhci,tablet" in argv and "-c 2 -m 2G" in argv


GRUB_CONF = """\
loader="grub"
cpu=1
memory=512M
utctime="no"
grub_run_partition="msdos1"
disk0_type="virtio-blk"
disk0_name="disk0.img"
disk1_type="ahci-hd"
disk1_name="data.img"
disk1_opts="nocache"
network0_type="e1000"
network0_switch="lan"
network1_type="virtio-net"
network1_device="tap9"
network2_type="virtio-net"
network2_switch="nosuch"
comports="com1 com2"
graphics="yes"
priority="10"
mystery="1"
"""


def test_a_grub_guest_moved_into_the_dataset_keeps_its_function_slots(install, env, store):
    g = guest(store, GRUB_CONF, disks=("disk0.img", "data.img"), system='switch_list="lan"\n')
    before = {d: (g / d).read_bytes() for d in ("disk0.img", "data.img")}
    res = cmd(install, env, "vmimport", "--from", "vm-bhyve", g, "db", "--move")
    assert res.returncode == 0, res.stderr
    vmdir = install / "vm" / "db"
    assert settings(vmdir / "set.conf") == [
        'VMrom="grub"', 'Boot="hd0,msdos1"', 'Cores="1"', 'Mem="512M"', 'VMoptions="AHPw"',
        'Disk="disk0.img"', 'DiskDriver="virtio-blk"',
        f'Devices="4:1,ahci-hd,{vmdir}/data.img,nocache 5,e1000,tapDB 5:1,virtio-net,tap9 '
        '5:2,virtio-net,tapDBn2"', 'Switch="tapDB=lan"', 'COM="1"']
    for d, data in before.items():  # moved: here, whole and still sparse; gone from vm-bhyve
        assert (vmdir / d).read_bytes() == data and os.stat(vmdir / d).st_blocks * 512 < 1 << 20
        assert not (g / d).exists()
    run = (vmdir / "run").read_text()
    assert "CreateIF tap tap9" not in run and "DestroyIF tap9" not in run  # a given device stays
    assert "vm-lan" not in run and (install / "switches" / "lan.conf").exists()  # a kvm switch now (issue 21)
    report = (vmdir / "vmimport.txt").read_text()
    assert "ifconfig vm-nosuch" not in run and "ifconfig tapDBn2 up" in run
    for key in ("comports=com1 com2", "graphics=yes", "priority=10", "mystery=1", "network2_switch=nosuch"):
        assert key in report, key
    argv = bhyve_line(install, env, "db")
    assert "-s 4:1,ahci-hd," in argv and "-s 5:1,virtio-net,tap9" in argv


def test_bad_vm_bhyve_guests_are_one_line_errors_and_change_nothing(install, env, pool, store):
    cases = [  # (conf, disks, what the line names)
        (None, (), "web.conf does not exist"),
        ('loader="bhyveloadx"\ncpu=1\nmemory=1G\n', (), "loader='bhyveloadx' is not a vm-bhyve loader"),
        ('loader="bhyveload"\ncpu=1\nmemory=1G\n', (), "loader='bhyveload' is not a loader kvm has"),
        ('cpu=1\nmemory=1G\n', (), "no loader="),
        ('loader="uefi"\ncpu=1\nmemory=lots\n', (), "memory='lots' is not a size"),
        ('loader="uefi"\ncpu=1\nmemory=1G\ndisk0_type="nvme"\ndisk0_name="gone.img"\n', (), "gone.img does not exist"),
        ('loader="uefi"\ncpu=1\nmemory=1G\ndisk0_type="floppy"\ndisk0_name="d"\n', ("d",), "disk0_type='floppy'"),
        ('loader="uefi"\ncpu=1\nmemory=1G\npassthru0="2/0/0=2:0"\n', (), "passthru0='2/0/0=2:0' lands at PCI slot 2"),
        ('loader="uefi"\ncpu=1\nmemory=1G\ndisk0_type="nvme"\ndisk0_name="d0"\ndisk0_dev="zvol"\n', (),
         "a zvol, but"),
        ('loader="uefi"\ncpu=1\nmemory=1G\ndisk0_type="nvme"\ndisk0_name="d.img"\ndisk0_dev="custom"\n', ("d.img",),
         "must be an absolute path"),
        ('loader="uefi-custom"\ncpu=1\nmemory=1G\n', (), ".config/BHYVE_UEFI.fd does not exist"),
        ('loader="uefi"\ncpu=1\nmemory=1G\nnetwork0_type="virtio-net"\nnetwork0_name="tap one"\n', (),
         "network0_name='tap one' is not an interface name"),
    ]
    before = datasets(pool)
    for i, (conf, disks, needle) in enumerate(cases):
        g = store / f"case{i}" / "web"
        g.mkdir(parents=True)
        if conf is not None:
            (g / "web.conf").write_text(conf)
        for d in disks:
            disk_file(g / d)
        res = cmd(install, env, "vmimport", "--from", "vm-bhyve", g, "--move")
        # 6: what the conf names is not there (a file, a mounted dataset); 1: a value kvm cannot take
        not_found = needle.endswith("does not exist") or needle == "a zvol, but"
        one_line_error(res, "vmimport: web: ", needle, status=6 if not_found else 1)
        assert datasets(pool) == before and not (install / "vm" / "web").exists()
        assert all((g / d).exists() for d in disks)


def test_a_guest_that_runs_is_refused_before_its_disks_are_touched(install, env, pool, store):
    g = guest(store, UEFI_CONF)
    before = datasets(pool)
    (g / "run.lock").write_text("testhost\n")  # vm-bhyve's lock while its guest runs
    one_line_error(cmd(install, env, "vmimport", "--from", "vm-bhyve", g, "--move"), "web: ", "vm-bhyve runs it", status=8)
    (g / "run.lock").unlink()
    (Path(env["KVM_VMM_DIR"]) / "web").write_text("")  # bhyve has /dev/vmm/web: running under its old name
    one_line_error(cmd(install, env, "vmimport", "--from", "vm-bhyve", g, "web2", "--move"), "web2: ",
                   "a VM named web is allocated", status=8)
    assert datasets(pool) == before and (g / "disk0.img").exists()


def test_a_name_clash_is_refused_and_the_source_stays(install, env, store):
    create_vm(install, env, "web")
    g = guest(store, UEFI_CONF)
    tree = snapshot_tree(install / "vm" / "web")
    one_line_error(cmd(install, env, "vmimport", "--from", "vm-bhyve", g, "--move"), "vmimport: web: ", "already exists", status=7)
    assert snapshot_tree(install / "vm" / "web") == tree and (g / "disk0.img").exists()
    long = cmd(install, env, "vmimport", "--from", "vm-bhyve", g, "a-very-long-name-for-a-tap")
    one_line_error(long, "vmimport: a-very-long-name-for-a-tap: ", "'tapA_VERY_LONG_NAME_FOR_A_TAP' is longer than 15")


def test_a_dry_run_creates_nothing(install, env, pool, store):
    g = guest(store, UEFI_CONF)
    before = datasets(pool)
    res = cmd(install, env, "vmimport", "-n", "--from", "vm-bhyve", g, "--move")
    assert res.returncode == 0, res.stderr
    assert "zfs create" in res.stdout and f"cp {g}/disk0.img" in res.stdout
    assert "would import web" in res.stdout and "would move 1 file(s)" in res.stdout
    assert "not mapped: uuid=" in res.stdout  # the report is known before anything is made
    assert datasets(pool) == before and (g / "disk0.img").exists()


def shell_vm(install, env, store, name="old1"):
    """A shell kvm VM folder: what vmcreate writes is that format, byte for byte."""
    create_vm(install, env, name, "--disk-size", "8M")
    folder = store / name
    shutil.copytree(install / "vm" / name, folder)
    assert cmd(install, env, "vmdestroy", "-y", name).returncode == 0
    return folder


def test_a_shell_kvm_folder_becomes_a_dataset_of_its_own(install, env, pool, store):
    folder = shell_vm(install, env, store)
    res = cmd(install, env, "vmimport", "--from", "shell-kvm", folder, "new1")
    assert res.returncode == 0, res.stderr
    vmdir = install / "vm" / "new1"
    assert f"{pool}/kvm/vm/new1" in datasets(pool)
    assert settings(vmdir / "set.conf") == settings(folder / "set.conf")  # as it was: kvm's own format
    assert "# VM settings for new1" in (vmdir / "set.conf").read_text()  # the name on comments, as vmrename
    assert (vmdir / "disk").stat().st_size == 8 << 20 and (folder / "disk").exists()  # copied
    assert "-s 1,nvme," + str(vmdir / "disk") in bhyve_line(install, env, "new1")
    res = cmd(install, env, "vmimport", "--from", "shell-kvm", folder, "--move")
    assert res.returncode == 0, res.stderr
    assert not (folder / "set.conf").exists() and (install / "vm" / "old1" / "run").exists()


def test_bad_shell_kvm_folders_are_one_line_errors_and_change_nothing(install, env, pool, store):
    folder = shell_vm(install, env, store)
    before = datasets(pool)
    (folder / "run").rename(folder / "run.x")
    one_line_error(cmd(install, env, "vmimport", "--from", "shell-kvm", folder), "old1: ", "needs set.conf and run", status=6)
    (folder / "run.x").rename(folder / "run")
    (folder / "set.conf").chmod(0o666)
    one_line_error(cmd(install, env, "vmimport", "--from", "shell-kvm", folder), "old1: ", "writable by group or others")
    (folder / "set.conf").chmod(0o644)
    text = (folder / "set.conf").read_text()
    (folder / "set.conf").write_text(text + 'Cores="many"\n')
    one_line_error(cmd(install, env, "vmimport", "--from", "shell-kvm", folder), "old1: ", "Cores='many'")
    (folder / "set.conf").write_text(text)
    (folder / "disk").unlink()
    one_line_error(cmd(install, env, "vmimport", "--from", "shell-kvm", folder), "old1: ", "disk", "does not exist", status=6)
    assert datasets(pool) == before
    res = cmd(install, env, "vmimport", "--from", "xen", folder)
    assert res.returncode == 2 and "invalid choice: 'xen'" in res.stderr
    folder.chmod(0o755)
    one_line_error(as_nobody(env, ["./vmimport", "--from", "shell-kvm", str(folder)], install), "old1: ",
                   "you need to be root")
    assert datasets(pool) == before


def test_a_copy_that_fails_half_way_leaves_no_vm(env, scratch_pool, store):
    from tests.conftest import kvm
    pool = scratch_pool(160)
    assert kvm(env, "kvminst", "-p", pool, "-y").returncode == 0
    root = Path(f"/{pool}/kvm")
    folder = store / "big"
    folder.mkdir()
    (folder / "set.conf").write_text('VMrom="uefi"\nDisk="disk"\n')
    (folder / "run").write_text("preRun()\n{\n\t:\n}\npostRun()\n{\n\t:\n}\n")
    with open(folder / "disk", "wb") as fh:  # no zeros: nothing of it can be a hole
        fh.write(b"\xab" * (160 << 20))
    before = datasets(pool)
    res = cmd(root, env, "vmimport", "--from", "shell-kvm", folder, "--move", timeout=120)
    one_line_error(res, "vmimport: big: ", "cannot copy")
    assert datasets(pool) == before and not (root / "vm" / "big").exists()
    assert (folder / "disk").stat().st_size == 160 << 20


def test_a_kill_during_the_copy_leaves_no_vm_and_the_source_whole(install, env, pool, store):
    import signal
    import subprocess
    import time
    from tests.images.test_image_kills import settle
    folder = store / "big"
    folder.mkdir()
    (folder / "set.conf").write_text('VMrom="uefi"\nDisk="disk"\n')
    (folder / "run").write_text("preRun()\n{\n\t:\n}\npostRun()\n{\n\t:\n}\n")
    with open(folder / "disk", "wb") as fh:
        fh.write(b"\xab" * (128 << 20))
    before = datasets(pool)
    proc = subprocess.Popen(["./vmimport", "--from", "shell-kvm", str(folder), "--move"], cwd=install, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    target, end = install / "vm" / "big" / "disk", time.time() + 60
    while not target.exists() and proc.poll() is None and time.time() < end:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    settle(f"{pool}/kvm/vm/big")
    assert proc.returncode == -9, proc.stderr.read()  # killed while it copied, not after
    assert datasets(pool) == before and not (install / "vm" / "big").exists()
    assert (folder / "disk").stat().st_size == 128 << 20 and (folder / "set.conf").exists()


# ------------------------------------------------ what an import may touch (issue 19.1, 19.2)

MINIMAL = 'loader="uefi"\ncpu=1\nmemory=1G\ndisk0_type="nvme"\n'


def test_a_disk_outside_the_guest_folder_is_never_copied_or_removed_unless_named(install, env, pool, store,
                                                                                  tmp_path):
    """disk0_name="../../x" and disk_dev="custom" with an absolute path were copied into the VM
    and then removed at the source by --move (/etc/shadow would be lost)."""
    victim = tmp_path / "victim.img"
    disk_file(victim)
    data = victim.read_bytes()
    before = datasets(pool)
    for i, (conf, disks) in enumerate([
            (MINIMAL + f'disk0_name="{os.path.relpath(victim, store / "c0" / "web")}"\n', ()),
            (MINIMAL + f'disk0_name="{victim}"\ndisk0_dev="custom"\n', ()),
            (MINIMAL + 'disk0_name="disk0.img"\n', ("link",))]):
        g = store / f"c{i}" / "web"
        g.mkdir(parents=True)
        (g / "web.conf").write_text(conf)
        if disks:
            (g / "disk0.img").symlink_to(victim)  # a link leading out of the folder
        for move in (["--move"], []):
            res = cmd(install, env, "vmimport", "--from", "vm-bhyve", g, *move)
            one_line_error(res, "vmimport: web:", "disk0_name=", str(victim), "outside the guest folder",
                           f"--allow-path {victim}")
            assert datasets(pool) == before and victim.read_bytes() == data
    # named on the command line: referenced in place, in AllowPath, never moved
    g = store / "c1" / "web"
    res = cmd(install, env, "vmimport", "--from", "vm-bhyve", g, "--move", "--allow-path", victim)
    assert res.returncode == 0, res.stderr
    conf = (install / "vm" / "web" / "set.conf").read_text()
    assert f'Disk="{victim}"' in conf and f'AllowPath="{victim}"' in conf
    assert victim.read_bytes() == data and "kept in place" in res.stdout
    assert f"-s 1,nvme,{victim}" in bhyve_line(install, env, "web")


def _nobody(path):
    os.chown(path, 65534, 65534)


UNTRUSTED = {
    "conf owned by nobody": (lambda g: _nobody(g / "web.conf"), "not owned by root"),
    "guest folder 0777": (lambda g: g.chmod(0o777), "writable by group or others"),
    "guest folder owned by nobody": (lambda g: _nobody(g), "not owned by root"),
    "prestart owned by nobody, 0777": (lambda g: (_nobody(g / "hook.sh"), (g / "hook.sh").chmod(0o777)),
                                       "not owned by root"),
    "prestart a link": (lambda g: ((g / "hook.sh").unlink(), (g / "hook.sh").symlink_to("/bin/true")),
                        "symbolic link"),
    "system.conf owned by nobody": (lambda g: _nobody(g.parent / ".config" / "system.conf"), "not owned by root"),
    "conf larger than 256 KiB": (lambda g: (g / "web.conf").write_text(UEFI_CONF + "# x\n" * 70000),
                                 "larger than 256 KiB"),
    "conf a FIFO": (lambda g: ((g / "web.conf").unlink(), os.mkfifo(g / "web.conf")), "not a regular file"),
    "a switch port that is no interface": (lambda g: (g.parent / ".config" / "system.conf").write_text(
        'switch_list="public"\nports_public="em0;reboot"\n'), "'em0;reboot' is not an interface name"),
}


@pytest.mark.parametrize("case", list(UNTRUSTED))
def test_what_an_import_reads_must_be_roots(install, env, pool, store, case):
    """prestart was mapped into preRun with no ownership check (run as root at every start)."""
    g = guest(store, UEFI_CONF.replace('uuid=', 'prestart="hook.sh"\nuuid='))
    (g / "hook.sh").write_text("#!/bin/sh\necho prestart \"$@\" >> /tmp/kvm-prestart-ran\n")
    (g / "hook.sh").chmod(0o755)
    change, needle = UNTRUSTED[case]
    change(g)
    before = datasets(pool)
    res = cmd(install, env, "vmimport", "--from", "vm-bhyve", g, timeout=30)
    one_line_error(res, "vmimport: web:", needle)
    assert datasets(pool) == before and (g / "disk0.img").exists()


def test_a_trusted_prestart_is_copied_and_run_from_the_vm_folder(install, env, store):
    g = guest(store, UEFI_CONF.replace('uuid=', 'prestart="hook.sh"\nuuid='))
    (g / "hook.sh").write_text("#!/bin/sh\necho prestart \"$@\"\n")
    (g / "hook.sh").chmod(0o755)
    res = cmd(install, env, "vmimport", "--from", "vm-bhyve", g)
    assert res.returncode == 0, res.stderr
    copy = install / "vm" / "web" / "prestart"
    assert copy.read_bytes() == (g / "hook.sh").read_bytes() and copy.stat().st_mode & 0o777 == 0o700
    run = (install / "vm" / "web" / "run").read_text()
    assert '"$VMdir/prestart" "$VMname"' in run and "hook.sh" not in run
    assert "copied into the VM folder as prestart" in (install / "vm" / "web" / "vmimport.txt").read_text()


def test_a_shell_kvm_disk_elsewhere_and_an_open_folder_are_refused(install, env, pool, store, tmp_path):
    folder = shell_vm(install, env, store)
    before = datasets(pool)
    folder.chmod(0o777)
    one_line_error(cmd(install, env, "vmimport", "--from", "shell-kvm", folder), "old1: ",
                   "writable by group or others")
    folder.chmod(0o755)
    outside = disk_file(tmp_path / "outside.img")
    text = (folder / "set.conf").read_text()
    (folder / "set.conf").write_text(text.replace('Disk="disk"', f'Disk="{outside}"'))
    one_line_error(cmd(install, env, "vmimport", "--from", "shell-kvm", folder, "--move"), "old1: ",
                   str(outside), f"--allow-path {outside}")
    assert datasets(pool) == before and outside.exists()
    res = cmd(install, env, "vmimport", "--from", "shell-kvm", folder, "--move", "--allow-path", outside)
    assert res.returncode == 0, res.stderr
    assert f'AllowPath="{outside}"' in (install / "vm" / "old1" / "set.conf").read_text() and outside.exists()
