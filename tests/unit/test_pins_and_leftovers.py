"""kvminst's manifest rules and leftover cleaning, and vmcreate's stale-dataset choice, on plain folders."""

import subprocess

import pytest

from kvm.manage import install
from kvm.zfs import txn
from kvm.manage.install import InstallReport


@pytest.fixture
def host_fw(tmp_path, monkeypatch):
    src = tmp_path / "host"
    src.mkdir()
    (src / "BHYVE_UEFI.fd").write_bytes(b"code-v1")
    (src / "BHYVE_UEFI_VARS.fd").write_bytes(b"vars-v1")
    monkeypatch.setenv("KVM_FIRMWARE_DIRS", str(src))
    monkeypatch.setenv("KVM_GRUB_BHYVE", str(tmp_path / "no-grub"))
    root = tmp_path / "root"
    root.mkdir()
    return src, root


def pin(root, repin=False):
    report = InstallReport("tank/kvm", root, True)
    install.pin_firmware(root, report, repin)
    return report


def test_only_pinned_files_change_the_manifest(host_fw):
    src, root = host_fw
    pin(root)
    first = install.read_manifest(root / "firmware")
    assert sorted(first) == ["BHYVE_UEFI.fd", "BHYVE_UEFI_VARS.fd"]
    (root / "firmware" / "BHYVE_UEFI.fd").write_bytes(b"tampered")
    (root / "firmware" / ".BHYVE_UEFI.fd.x1.tmp").write_bytes(b"half")
    (src / "BHYVE_UEFI.fd").write_bytes(b"code-v2")
    report = pin(root)
    assert report.pinned == [] and install.read_manifest(root / "firmware") == first
    assert dict(install.verify_firmware(root))["BHYVE_UEFI.fd"] == "FAILED"
    pin(root, repin=True)
    assert dict(install.verify_firmware(root)) == {"BHYVE_UEFI.fd": "OK", "BHYVE_UEFI_VARS.fd": "OK"}


def test_clean_leftovers_removes_ours_only(host_fw):
    _, root = host_fw
    (root / "templates").mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    ours = [root / ".start.a1.tmp", root / "templates" / ".rc.j2.b2.tmp", root / f".kvminst-probe-{dead.pid}"]
    theirs = [root / ".notes.c3.tmp", root / "start.tmp", root / ".kvminst-probe-x"]
    for p in ours + theirs:
        p.write_text("x")
    install.clean_leftovers(root)
    assert [p for p in ours if p.exists()] == [] and all(p.exists() for p in theirs)


def test_stale_takes_only_local_markers_of_dead_creators():
    dead = subprocess.Popen(["true"])
    dead.wait()
    mark = txn.CREATING
    rows = {"t/vm": {mark: (None, "-")},
            "t/vm/a": {mark: (str(dead.pid), "local")},
            "t/vm/b": {mark: (str(1), "local")},                  # its creator (pid 1) runs
            "t/vm/c": {mark: (str(dead.pid), "inherited from t")},
            "t/vm/d": {mark: (None, "-")}}
    assert txn.stale("t/vm", rows) == ["t/vm/a"]
