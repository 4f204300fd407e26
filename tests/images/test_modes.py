"""Modes (issue 19.4, 20.6): every disk 0600, logs 0640, every set.conf holding a secret 0640
whoever wrote it, and nothing of a VM's secrets in an image."""

import os
import re
import stat
import subprocess

from tests.cli.test_run import boots, make, script
from tests.conftest import cmd, create_vm
from tests.images.test_images import raw_image


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_image_disks_and_vms_made_from_images_are_0600(install, env, pool, tmp_path):
    src = raw_image(tmp_path)
    os.chmod(src, 0o644)
    assert cmd(install, env, "image", "import", "deb", src).returncode == 0
    assert mode(install / "images" / "deb" / "disk") == 0o600
    q = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", src, q], check=True)
    assert cmd(install, env, "image", "import", "q", q).returncode == 0
    assert mode(install / "images" / "q" / "disk") == 0o600
    # an image made by an earlier kvm (0644): a VM made from it gets its disk 0600 all the same
    ds = f"{pool}/kvm/images/deb"
    subprocess.run(["zfs", "set", "readonly=off", ds], check=True)
    os.chmod(install / "images" / "deb" / "disk", 0o644)
    subprocess.run(["zfs", "set", "readonly=on", ds], check=True)
    subprocess.run(["zfs", "snapshot", f"{ds}@old"], check=True)
    subprocess.run(["zfs", "destroy", f"{ds}@base"], check=True)
    subprocess.run(["zfs", "rename", f"{ds}@old", f"{ds}@base"], check=True)
    res = cmd(install, env, "vmcreate", "a", "-y", "--from", "deb")
    assert res.returncode == 0, res.stderr
    assert mode(install / "vm" / "a" / "disk") == 0o600


def test_a_published_image_holds_no_secret_of_the_vm(install, env, pool):
    d = create_vm(install, env, "web", "--disk-size", "4M", "--vnc", "yes")
    os.chmod(d / "disk", 0o644)  # a disk of the shell toolkit's (truncate, umask 022)
    assert cmd(install, env, "vmset", "web", "VNCpassword=s3cret").returncode == 0
    assert (d / "set.conf.sav").exists()
    res = cmd(install, env, "image", "publish", "web", "tmpl")
    assert res.returncode == 0, res.stderr
    img = install / "images" / "tmpl"
    assert sorted(os.listdir(img)) == ["disk", "image.conf", "set.conf"]
    text = (img / "set.conf").read_text()
    assert "s3cret" not in text and not re.search(r"^\s*VNCpassword=", text, re.M)
    assert mode(img / "disk") == 0o600


def test_a_secret_written_by_hand_or_vmedit_makes_set_conf_0640(install, env, tmp_path):
    d = make(install, env, "web", "--vnc", "yes")
    with open(d / "set.conf", "a") as fh:  # by hand, 0644 as the editor left it
        fh.write('VNCpassword="s3cret"\n')
    os.chmod(d / "set.conf", 0o644)
    (d / "set.conf.sav").write_text((d / "set.conf").read_text())
    os.chmod(d / "set.conf.sav", 0o644)
    script(env, "web", "poweroff after=0")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 0, res.stdout + res.stderr
    assert boots(env)
    assert mode(d / "set.conf") == 0o640 and mode(d / "set.conf.sav") == 0o640
    assert "0640" in res.stdout + res.stderr
    # vmedit bringing a password sh alone can evaluate
    e = create_vm(install, env, "ed", "--vnc", "yes")
    ed = tmp_path / "ed.sh"
    ed.write_text("#!/bin/sh\necho 'VNCpassword=\"$(cat /root/vnc-password)\"' >> \"$1\"\n")
    ed.chmod(0o755)
    env["EDITOR"] = str(ed)
    res = cmd(install, env, "vmedit", "ed")
    assert res.returncode == 0, res.stderr
    assert mode(e / "set.conf") == 0o640


def test_console_log_and_the_supervisor_log_are_0640(tmp_path):
    from kvm.hypervisor.qemu.backend import open_console_log
    log = tmp_path / "console.log"
    open_console_log(log)
    assert mode(log) == 0o640
    os.chmod(log, 0o644)
    open_console_log(log)
    assert mode(log) == 0o640


def test_copied_disks_are_0600(install, env, pool, tmp_path):
    from tests.cli.test_vmimport import shell_vm
    d = create_vm(install, env, "web", "--disk-size", "4M")
    os.chmod(d / "disk", 0o644)
    assert cmd(install, env, "vmclone", "web", "solo", "-y", "--independent").returncode == 0
    assert mode(install / "vm" / "solo" / "disk") == 0o600
    assert cmd(install, env, "vmclone", "web", "twin", "-y").returncode == 0
    assert mode(install / "vm" / "twin" / "disk") == 0o600
    folder = shell_vm(install, env, tmp_path, "old2")
    os.chmod(folder / "disk", 0o644)
    assert cmd(install, env, "vmimport", "--from", "shell-kvm", folder).returncode == 0
    assert mode(install / "vm" / "old2" / "disk") == 0o600
