"""Images, vmcreate --from, vmclone and their dependencies on real ZFS (zfs-fuse: clones work,
no zvols, no `clones` property)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cmd, create_vm, one_line_error


def zget(prop, ds):
    return subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", prop, ds], capture_output=True,
                          text=True).stdout.strip()


def exists(ds):
    return subprocess.run(["zfs", "list", "-H", ds], capture_output=True).returncode == 0


def raw_image(tmp_path, size=8 << 20, name="img.raw"):
    p = tmp_path / name
    with open(p, "wb") as fh:
        fh.write(b"BOOTSECTOR" * 50)
        fh.seek(size - 5)
        fh.write(b"LAST!")
    return p


@pytest.fixture
def imported(install, env, tmp_path):
    src = raw_image(tmp_path)
    res = cmd(install, env, "image", "import", "deb", src, "--os", "debian12")
    assert res.returncode == 0, res.stderr
    return src


def test_import_raw_is_a_read_only_image_with_its_conf_and_base(install, env, pool, imported):
    import hashlib
    d = install / "images" / "deb"
    assert (d / "disk").read_bytes() == imported.read_bytes()
    assert os.stat(d / "disk").st_blocks * 512 < 1 << 20  # the zero middle stayed a hole
    conf = (d / "image.conf").read_text()
    assert hashlib.sha256(imported.read_bytes()).hexdigest() in conf and 'format="raw"' in conf
    assert 'os="debian12"' in conf
    ds = f"{pool}/kvm/images/deb"
    # zfs-fuse shows readonly as "off (temporary)" while it is on: what counts is that writes fail
    with pytest.raises(OSError):
        (d / "x").write_text("no")
    assert exists(f"{ds}@base")
    rows = json.loads(cmd(install, env, "image", "list", "--json").stdout)
    assert [(r["name"], r["size"], r["os"], r["clones"]) for r in rows] == [("deb", 8 << 20, "debian12", [])]
    res = cmd(install, env, "image", "list", "-H")
    assert res.stdout.split("\t")[0] == "deb" and res.stdout.strip().endswith("debian12")


def test_import_qcow2_is_converted_to_raw(install, env, tmp_path):
    src = raw_image(tmp_path)
    q = tmp_path / "img.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", src, q], check=True)
    res = cmd(install, env, "image", "import", "q", q)
    assert res.returncode == 0, res.stderr
    assert (install / "images" / "q" / "disk").read_bytes() == src.read_bytes()
    assert 'format="qcow2"' in (install / "images" / "q" / "image.conf").read_text()


def test_import_errors_are_one_line_and_change_nothing(install, env, pool, imported, tmp_path):
    one_line_error(cmd(install, env, "image", "import", "deb", imported), "image 'deb' already exists", status=7)
    one_line_error(cmd(install, env, "image", "import", "x", tmp_path / "nope"), "'", "does not exist", status=6)
    one_line_error(cmd(install, env, "image", "import", "bad/name", imported), "bad/name", status=2)
    res = cmd(install, env, "image", "import", "dry", imported, "--dry-run")
    assert res.returncode == 0 and "zfs create" in res.stdout and not exists(f"{pool}/kvm/images/dry")
    one_line_error(cmd(install, env, "image", "destroy", "nope"), "no image 'nope'", "deb", status=6)


def test_vmcreate_from_is_a_clone_that_grows_sparsely_and_never_shrinks(install, env, pool, imported):
    res = cmd(install, env, "vmcreate", "a", "-y", "--from", "deb", "--disk-size", "1G")
    assert res.returncode == 0, res.stderr
    d = install / "vm" / "a"
    assert zget("origin", f"{pool}/kvm/vm/a") == f"{pool}/kvm/images/deb@base"
    assert os.path.getsize(d / "disk") == 1 << 30 and (d / "disk").read_bytes()[:10] == b"BOOTSECTOR"
    assert 'Disk="disk"' in (d / "set.conf").read_text() or "Disk=disk" in (d / "set.conf").read_text()
    assert not (d / "image.conf").exists()
    (d / "written").write_text("a VM's clone is writable")
    info = cmd(install, env, "vminfo", "a").stdout
    assert f"origin: image deb ({pool}/kvm/images/deb@base)" in info.replace("  ", " ").replace("origin:  ", "origin: ")
    one_line_error(cmd(install, env, "vmcreate", "b", "-y", "--from", "deb", "--disk-size", "4M"),
                   "vmcreate: b:", "'4M'", "never shrinks", status=2)
    one_line_error(cmd(install, env, "vmcreate", "b", "-y", "--from", "nope"), "no image 'nope'", status=6)
    assert not exists(f"{pool}/kvm/vm/b")
    # the image cannot go while a VM is cloned from it; the refusal names the clone
    one_line_error(cmd(install, env, "image", "destroy", "deb"), "has clones", f"{pool}/kvm/vm/a", status=8)
    assert cmd(install, env, "vmdestroy", "a", "-y").returncode == 0
    assert cmd(install, env, "image", "destroy", "deb").returncode == 0 and not exists(f"{pool}/kvm/images/deb")


@pytest.fixture
def web(install, env):
    d = create_vm(install, env, "web", "--disk-size", "16M", "--bridge", "bridgeLOCAL")
    conf = d / "set.conf"
    text = conf.read_text().replace("3,virtio-net,tapWEB", "3,virtio-net,tapWEB,mac=58:9c:fc:00:00:01")
    conf.write_text(text + "# web's own comment\n")
    (d / "web.log").write_text("old log\n")
    with open(d / "disk", "r+b") as fh:
        fh.write(b"WEBDATA")
    return d


def test_vmclone_gives_a_new_identity(install, env, pool, web):
    res = cmd(install, env, "vmclone", "web", "copy", "-y")
    assert res.returncode == 0, res.stderr
    d = install / "vm" / "copy"
    conf = (d / "set.conf").read_text()
    assert "mac=58:9c:fc:00:00:01" not in conf and "mac=02:" in conf
    assert "tapCOPY" in conf and "tapWEB" not in conf and "# copy's own comment" in conf
    assert "tapCOPY" in (d / "run").read_text() and "tapWEB" not in (d / "run").read_text()
    assert not (d / "web.log").exists() and (d / "disk").read_bytes()[:7] == b"WEBDATA"
    assert (d / "UEFI_VARS.fd").read_bytes() == (web / "UEFI_VARS.fd").read_bytes()  # a fresh template copy
    assert (d / "UEFI_VARS.fd").stat().st_ino != (web / "UEFI_VARS.fd").stat().st_ino
    origin = zget("origin", f"{pool}/kvm/vm/copy")
    assert origin.startswith(f"{pool}/kvm/vm/web@clone-copy-")
    assert "origin: VM web" in cmd(install, env, "vminfo", "copy").stdout.replace("  ", " ")
    # the snapshot and the VM are refused while the clone lives, each naming it
    snap = origin.split("@")[1]
    one_line_error(cmd(install, env, "snap", "destroy", "web", snap, "-y"), "has clones", f"{pool}/kvm/vm/copy", status=8)
    one_line_error(cmd(install, env, "vmdestroy", "web", "-y"), "has clones", f"{pool}/kvm/vm/copy", status=8)
    assert exists(f"{pool}/kvm/vm/web") and exists(f"{pool}/kvm/vm/copy")
    res = cmd(install, env, "vmdestroy", "web", "-R", "-y")
    assert res.returncode == 0, res.stderr
    assert not exists(f"{pool}/kvm/vm/web") and not exists(f"{pool}/kvm/vm/copy")


def test_vmclone_independent_depends_on_nothing(install, env, pool, web):
    res = cmd(install, env, "vmclone", "web", "solo", "-y", "--independent")
    assert res.returncode == 0, res.stderr
    assert zget("origin", f"{pool}/kvm/vm/solo") in ("", "-")
    assert (install / "vm" / "solo" / "disk").read_bytes() == (web / "disk").read_bytes()
    assert not [s for s in subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot"],
                                          capture_output=True, text=True).stdout.split() if "clone-solo" in s]
    assert cmd(install, env, "vmdestroy", "web", "-y").returncode == 0


def test_vmclone_errors(install, env, pool, web):
    one_line_error(cmd(install, env, "vmclone", "web", "web", "-y"), "already exists", status=7)
    one_line_error(cmd(install, env, "vmclone", "web", "x", "--snapshot", "nope", "-y"), "no snapshot 'nope'", status=6)
    one_line_error(cmd(install, env, "vmclone", "nope", "x", "-y"), "nope", status=6)
    res = cmd(install, env, "vmclone", "web", "dry", "-y", "--dry-run")
    assert res.returncode == 0 and "zfs clone" in res.stdout and not exists(f"{pool}/kvm/vm/dry")


def test_publish_leaves_the_identity_out_and_holds_the_snapshot(install, env, pool, web):
    res = cmd(install, env, "image", "publish", "web", "tmpl")
    assert res.returncode == 0, res.stderr
    d = install / "images" / "tmpl"
    assert sorted(os.listdir(d)) == ["disk", "image.conf", "set.conf"]
    assert "mac=" not in (d / "set.conf").read_text()
    assert zget("origin", f"{pool}/kvm/images/tmpl").startswith(f"{pool}/kvm/vm/web@publish-tmpl-")
    one_line_error(cmd(install, env, "vmdestroy", "web", "-y"), "has clones", f"{pool}/kvm/images/tmpl", status=8)
    res = cmd(install, env, "vmcreate", "n", "-y", "--from", "tmpl")
    assert res.returncode == 0, res.stderr
    assert (install / "vm" / "n" / "disk").read_bytes()[:7] == b"WEBDATA"


def test_snap_destroy_R_takes_the_clones_after_asking(install, env, pool, web):
    assert cmd(install, env, "snap", "c", "web", "gold").returncode == 0
    assert cmd(install, env, "vmclone", "web", "c1", "--snapshot", "gold", "-y").returncode == 0
    assert cmd(install, env, "vmclone", "c1", "c2", "-y").returncode == 0  # a clone of the clone
    res = cmd(install, env, "snap", "destroy", "web", "gold", "-R", input="n\n")
    assert res.returncode == 1 and exists(f"{pool}/kvm/vm/c1") and exists(f"{pool}/kvm/vm/web@gold")
    assert f"{pool}/kvm/vm/c2" in res.stderr and f"{pool}/kvm/vm/c1" in res.stderr
    res = cmd(install, env, "snap", "destroy", "web", "gold", "-R", "-y")
    assert res.returncode == 0, res.stderr
    assert not exists(f"{pool}/kvm/vm/c1") and not exists(f"{pool}/kvm/vm/c2")
    assert not exists(f"{pool}/kvm/vm/web@gold") and exists(f"{pool}/kvm/vm/web")


def test_vmclone_refuses_a_vm_with_disks_elsewhere(install, env, pool, web):
    ext = f"{pool}/ext12"
    subprocess.run(["zfs", "create", ext], check=True)
    try:
        Path(f"/{ext}/d2").write_bytes(b"x")
        with open(web / "set.conf", "a") as fh:
            fh.write(f'Devices="$Devices 4,virtio-blk,/{ext}/d2"\n')
        one_line_error(cmd(install, env, "vmclone", "web", "x", "-y"), "vmclone: web:", ext, status=2)
        assert not exists(f"{pool}/kvm/vm/x")
    finally:
        subprocess.run(["zfs", "destroy", "-r", ext], capture_output=True)


def test_vmclone_gives_a_seed_its_own_name_and_instance(install, env, pool):
    create_vm(install, env, "ci", "--cloud-init", "--disk-size", "4M")
    assert cmd(install, env, "vmclone", "ci", "ci2", "-y").returncode == 0
    a = json.loads((install / "vm" / "ci" / "cloud-init.json").read_text())
    b = json.loads((install / "vm" / "ci2" / "cloud-init.json").read_text())
    assert b["hostname"] == "ci2" and a["hostname"] in ("", "ci")
    assert (install / "vm" / "ci2" / "seed.iso").read_bytes() != (install / "vm" / "ci" / "seed.iso").read_bytes()


def test_vmcreate_from_dry_run_changes_nothing(install, env, pool, imported):
    res = cmd(install, env, "vmcreate", "a", "-y", "--from", "deb", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "zfs clone -o kvm:creating=" in res.stdout and f"{pool}/kvm/images/deb@base" in res.stdout
    assert not exists(f"{pool}/kvm/vm/a") and not (install / "vm" / "a").exists()


def test_a_large_import_shows_progress_on_stderr_and_stays_sparse(install, env, tmp_path):
    src = raw_image(tmp_path, size=128 << 20, name="big.raw")
    res = cmd(install, env, "image", "import", "big", src, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "copied 128 of 128 MiB" in res.stderr and res.stdout.startswith("imported big (raw, sha256 ")
    assert os.stat(install / "images" / "big" / "disk").st_blocks * 512 < 1 << 20


# ------------------------------------------------------- what an import reads (issue 19.3, 19 Low)

def test_a_qcow2_naming_another_file_is_refused_before_qemu_img_reads_it(install, env, pool, tmp_path):
    """qemu-img create -f qcow2 -b /etc/shadow -F raw evil.qcow2 pulled the backing file into the image."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"root:$6$secret-hash:19000::::::\n" + b"\0" * 65536)
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(evil)], check=True)
    data = tmp_path / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'd.raw'}", str(data),
                    "1M"], check=True)
    before = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", pool], capture_output=True, text=True).stdout
    one_line_error(cmd(install, env, "image", "import", "evil", evil), str(evil), "backing file")
    one_line_error(cmd(install, env, "image", "import", "data", data), str(data), "external data file")
    one_line_error(cmd(install, env, "image", "import", "-n", "evil", evil), str(evil), "backing file")
    after = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", pool], capture_output=True, text=True).stdout
    assert after == before and not (install / "images" / "evil").exists()


def test_what_is_no_image_file_is_named_as_such(install, env, pool, tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("just some notes\n" * 100)
    for path, words in (("/dev/null", ["is not a regular file (a device)"]),
                        (str(tmp_path), ["is not a regular file (a folder)"]),
                        (str(tmp_path / "empty"), ["is empty"]),
                        (str(tmp_path / "notes.txt"), ["is text, not a disk image"]),
                        (str(tmp_path / "nope"), ["does not exist"])):
        status = 6 if words == ["does not exist"] else 1   # 6: not found; 1: a file that is no image
        one_line_error(cmd(install, env, "image", "import", "x", path), f"'{path}'", *words, status=status)
    assert not exists(f"{pool}/kvm/images/x")


def test_options_go_anywhere_as_documented(install, env, pool, tmp_path, web):
    src = raw_image(tmp_path)
    for argv in (["import", "-n", "a", src], ["import", "--os", "x", "a", src], ["publish", "-n", "web", "p"]):
        res = cmd(install, env, "image", *argv)
        assert res.returncode == 0, (argv, res.stderr)
    assert cmd(install, env, "image", "import", "b", src, "--os", "y").returncode == 0
    res = cmd(install, env, "image", "destroy", "-n", "b")
    assert res.returncode == 0 and exists(f"{pool}/kvm/images/b"), res.stderr
    assert json.loads(cmd(install, env, "image", "list", "--json").stdout)[0]["os"] == "x"


def test_a_full_pool_mid_copy_is_one_line_and_leaves_nothing(env, scratch_pool, tmp_path):
    from tests.conftest import kvm
    pool = scratch_pool(160)
    assert kvm(env, "kvminst", "-p", pool, "-y").returncode == 0
    root = Path(f"/{pool}/kvm")
    big = tmp_path / "big.raw"
    with open(big, "wb") as fh:  # no zeros: nothing of it can be a hole
        fh.write(b"\xab" * (160 << 20))
    res = cmd(root, env, "image", "import", "big", big, timeout=180)
    one_line_error(res, "image: cannot copy", "No space left on device")
    assert not exists(f"{pool}/kvm/images/big")


def test_vmclone_derives_its_tap_as_vmcreate_does(install, env, pool, web):
    """vmclone wrote tapABCDEFGHIJKLMNOPQRSTU (over 15 characters), which vmcreate refuses (issue 19.10)."""
    before = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", pool], capture_output=True,
                            text=True).stdout
    long = "abcdefghijklmnopqrstu"
    for argv in (["vmclone", "web", long, "-y"], ["vmcreate", long, "-y", "--bridge", "bridgeLOCAL"]):
        one_line_error(cmd(install, env, *argv), f": {long}:", "'tapABCDEFGHIJKLMNOPQRSTU' is longer than 15",
                       status=2)
    after = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", pool], capture_output=True,
                           text=True).stdout
    assert after == before and not (install / "vm" / long).exists()
    create_vm(install, env, "plain")  # no tap of its own: any valid name will do
    assert cmd(install, env, "vmclone", "plain", long, "-y").returncode == 0


def snapshots_of(ds):
    res = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot"], capture_output=True, text=True)
    return sorted(s.split("@")[1] for s in res.stdout.split() if s.startswith(ds + "@"))


def test_the_snapshot_taken_for_a_clone_goes_with_its_last_clone(install, env, pool, web):
    """vmdestroy of a clone left SRC@clone-DST-TIMESTAMP on the source forever (issue 19 Low);
    image destroy left VM@publish-NAME-... likewise. A snapshot of the user's always stays."""
    ds = f"{pool}/kvm/vm/web"
    assert cmd(install, env, "vmclone", "web", "c1", "-y").returncode == 0
    own = [s for s in snapshots_of(ds) if s.startswith("clone-c1-")]
    assert len(own) == 1
    assert cmd(install, env, "vmclone", "web", "c2", "--snapshot", own[0], "-y").returncode == 0
    assert cmd(install, env, "vmdestroy", "c1", "-y").returncode == 0
    assert own[0] in snapshots_of(ds)  # c2 still depends on it
    assert cmd(install, env, "vmdestroy", "c2", "-y").returncode == 0
    assert snapshots_of(ds) == []
    assert cmd(install, env, "snap", "create", "web", "gold").returncode == 0
    assert cmd(install, env, "vmclone", "web", "c3", "--snapshot", "gold", "-y").returncode == 0
    assert cmd(install, env, "vmdestroy", "c3", "-y").returncode == 0
    assert snapshots_of(ds) == ["gold"]
    assert cmd(install, env, "image", "publish", "web", "tmpl").returncode == 0
    assert cmd(install, env, "image", "destroy", "tmpl").returncode == 0
    assert snapshots_of(ds) == ["gold"]
