"""Where a VM's disks and ISOs may lie (issue 19.8): the VM folder, ROOT/iso and ROOT/images;
anything else only when set.conf's AllowPath names it, what the host itself uses never, another
VM's file only when named itself; the shell toolkit's own layout (an ISO image anywhere, a zvol)
is warned about, not refused. Every refusal is one line naming the VM and the value."""

import os
from pathlib import Path

import pytest

from tests.conftest import POOL_DIR, cmd, create_vm, fake_iso, one_line_error
from tests.cli.test_run import boots


def add(d, text):
    with open(d / "set.conf", "a") as fh:
        fh.write(text)


def start_n(install, env, name="web"):
    return cmd(install, env, "start", "-n", name)


def mounted_block_device():
    """A block device mounted on this host (the root filesystem's, usually), or None."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source = line.split()[0]
        if source.startswith("/dev/") and os.path.exists(source) and Path(source).is_block_device():
            return source
    return None


def test_a_host_file_as_disk_is_refused_unless_allowed(install, env, tmp_path):
    d = create_vm(install, env, "web")
    add(d, 'Disk="/etc/shadow"\n')
    one_line_error(start_n(install, env), "start: web:", "Disk='/etc/shadow'", "outside the VM folder", "AllowPath")
    info = cmd(install, env, "vminfo", "web")
    assert info.returncode == 0 and "start will refuse: Disk='/etc/shadow'" in info.stderr
    res = cmd(install, env, "start", "web")
    assert res.returncode != 0 and "outside the VM folder" in res.stdout + res.stderr
    assert boots(env) == []
    # a link in the VM folder leading out of it is outside too
    text = (d / "set.conf").read_text().replace('Disk="/etc/shadow"\n', 'Disk="disk2"\n')
    (d / "set.conf").write_text(text)
    (d / "disk2").symlink_to("/etc/shadow")
    one_line_error(start_n(install, env), "start: web:", "Disk='", "resolving to /etc/shadow")
    mine = tmp_path / "mine.img"
    mine.write_bytes(b"\0" * 4096)
    one_line_error(cmd(install, env, "vmset", "web", f"Disk={mine}"), "vmset: web:", str(mine), "AllowPath")
    assert cmd(install, env, "vmset", "web", f"AllowPath={mine}", f"Disk={mine}").returncode == 0
    res = start_n(install, env)
    assert res.returncode == 0 and f",{mine}" in res.stdout, res.stderr
    info = cmd(install, env, "vminfo", "web")
    assert f"allowed paths: {mine}" in info.stdout
    assert cmd(install, env, "vminfo", "--json", "web").stdout.count(str(mine)) >= 2


def test_what_the_host_uses_is_refused_even_when_allowed(install, env, pool):
    d = create_vm(install, env, "web")
    vdev = POOL_DIR / f"{pool}.img"
    add(d, f'AllowPath="{vdev}"\nDisk="{vdev}"\n')
    one_line_error(start_n(install, env), "start: web:", str(vdev), f"a vdev of ZFS pool {pool}")
    dev = mounted_block_device()
    if dev is None:
        pytest.skip("no block device is mounted here")
    add(d, f'AllowPath="{dev}"\nDisk="{dev}"\n')
    one_line_error(start_n(install, env), "start: web:", f"Disk='{dev}'", "used by the host (mounted at")


def test_another_vms_disk_is_shared_only_when_named(install, env):
    create_vm(install, env, "a", "--disk-size", "1M")
    d = create_vm(install, env, "web")
    other = install / "vm" / "a" / "disk"
    add(d, f'Disk="{other}"\n')
    one_line_error(start_n(install, env), "start: web:", "a file of VM a")
    add(d, f'AllowPath="{install}/vm/a/"\n')  # a folder is not enough for another VM's file
    one_line_error(start_n(install, env), "start: web:", "a file of VM a")
    add(d, f'AllowPath="{other}"\n')
    res = start_n(install, env)
    assert res.returncode == 0 and f",{other}" in res.stdout, res.stderr


def test_an_iso_must_be_an_iso_image_or_allowed(install, env, tmp_path):
    d = create_vm(install, env, "web")
    tree = (d / "set.conf").read_text()
    one_line_error(cmd(install, env, "insert", "web", "/etc/passwd"), "insert: web:", "ISO='/etc/passwd'",
                   "no ISO 9660 or UDF image")
    assert (d / "set.conf").read_text() == tree
    add(d, 'ISO="/etc/passwd"\n')
    one_line_error(start_n(install, env), "start: web:", "ISO='/etc/passwd'", "no ISO 9660")
    (d / "set.conf").write_text(tree)
    res = cmd(install, env, "insert", "--allow-path", "web", "/etc/passwd")
    assert res.returncode == 0, res.stderr
    assert 'AllowPath="/etc/passwd"' in (d / "set.conf").read_text()
    assert start_n(install, env).returncode == 0


def test_the_shell_toolkits_layout_is_warned_about_not_refused(install, env, tmp_path):
    """Its insert took any path: an ISO image outside ROOT/iso starts, with a warning; one in
    ROOT/iso or the VM folder draws none."""
    d = create_vm(install, env, "web")
    iso = fake_iso(tmp_path / "install.iso")
    res = cmd(install, env, "insert", "web", iso)
    assert res.returncode == 0 and "warning: ISO=" in res.stderr and "AllowPath" in res.stderr, res.stderr
    res = start_n(install, env)
    assert res.returncode == 0 and f"2,ahci-cd,{iso}" in res.stdout and "warning: ISO=" in res.stderr
    shared = fake_iso(install / "iso" / "x.iso")
    res = cmd(install, env, "insert", "web", shared)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    res = start_n(install, env)
    assert res.returncode == 0 and "ISO=" not in res.stderr, res.stderr
    assert (install / "iso").is_dir()  # kvminst makes it
