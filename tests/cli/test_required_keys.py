"""One validator for every writer of set.conf (issue 19.9): what kvm writes is a set.conf a VM
can start from (VMrom there), and every value is checked on its own (hVNC without wVNC, a Mem
beyond what bhyve takes). Each refusal is one line and leaves everything as it was."""

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import cmd, create_vm, datasets, one_line_error, snapshot_tree

REQUIRED = "set.conf: VMrom is not set (uefi, grub or the absolute path of a loader)"


@pytest.fixture
def web(install, env):
    return create_vm(install, env, "web")


@pytest.mark.parametrize("args, needles", [
    (["-u", "VMrom"], [f"vmset: web: {REQUIRED}"]),
    (["VMrom="], [REQUIRED]),
    (["hVNC=99999"], ["hVNC='99999' is out of range (480..2160)"]),
    (["wVNC=5"], ["wVNC='5' is out of range"]),
    (["Mem=99999999999999999999G"], ["Mem='99999999999999999999G' is more than bhyve can take"]),
])
def test_vmset_refuses_what_would_leave_the_vm_unable_to_start(install, env, web, args, needles):
    before = (web / "set.conf").read_bytes()
    one_line_error(cmd(install, env, "vmset", "web", *args), *needles)
    assert (web / "set.conf").read_bytes() == before and not (web / "set.conf.sav").exists()


def test_a_missing_vmrom_is_still_shown_by_readers(install, env, web):
    text = (web / "set.conf").read_text()
    (web / "set.conf").write_text(re.sub(r"(?m)^VMrom=.*\n", "", text))
    res = cmd(install, env, "vminfo", "web")
    assert res.returncode == 0 and "NOT SET (start will refuse)" in res.stdout, res.stderr
    res = cmd(install, env, "vmset", "web", "VMrom=uefi")   # the edit that mends it is taken
    assert res.returncode == 0, res.stderr


def test_vmedit_refuses_a_file_without_an_assignment(install, env, web, tmp_path):
    before = (web / "set.conf").read_bytes()
    env["EDITOR"] = "truncate -s 0"
    res = cmd(install, env, "vmedit", "web", input="n\n")
    assert res.returncode == 1, res.stderr
    assert f"vmedit: web: {REQUIRED}" in res.stderr and "edit again? [Y/n]" in res.stderr
    assert (web / "set.conf").read_bytes() == before and not (web / "set.conf.sav").exists()


def test_cloudinit_checks_its_set_conf_edit_before_writing_anything(install, env, web):
    assert cmd(install, env, "vmset", "web", "Devices=28,virtio-rnd").returncode == 0
    before = snapshot_tree(web)
    one_line_error(cmd(install, env, "cloudinit", "web", "--hostname", "h1"),
                   "cloudinit: web: set.conf: CloudInit='1' needs slot 28")
    assert snapshot_tree(web) == before and not (web / "seed.iso").exists()


def test_vmclone_and_vmimport_refuse_a_vm_without_vmrom(install, env, pool, web):
    text = (web / "set.conf").read_text()
    (web / "set.conf").write_text(re.sub(r"(?m)^VMrom=.*\n", "", text))
    before = datasets(pool)
    one_line_error(cmd(install, env, "vmclone", "web", "copy", "-y"), REQUIRED)
    store = Path(tempfile.mkdtemp(prefix="shellkvm", dir="/var/tmp"))
    try:
        shutil.copytree(web, store / "old1")
        one_line_error(cmd(install, env, "vmimport", "--from", "shell-kvm", store / "old1"), "old1: ", REQUIRED)
    finally:
        shutil.rmtree(store)
    assert datasets(pool) == before
