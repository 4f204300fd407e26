"""vmset NAME KEY=VALUE... [-u KEY]: validated, atomic, set.conf.sav kept, other lines untouched;
every refusal is one line and leaves set.conf byte for byte as it was."""

import subprocess
import sys
import time

import pytest

from tests.conftest import cmd, create_vm, fake_iso, one_line_error, run_folder
from tests.cli.test_conf_safety import HOLDER

EXTRA = '# my own notes: keep me\nLAN="tapWEB"   # the tap\nif true; then : ; fi\n'


@pytest.fixture
def web(install, env):
    d = create_vm(install, env, "web", "--cores", "1", "--mem", "1G")
    with open(d / "set.conf", "a") as fh:
        fh.write(EXTRA)
    return d


def test_sets_and_removes_keeping_every_other_line_and_the_old_file(install, env, web, tmp_path):
    conf = web / "set.conf"
    before = conf.read_bytes()
    iso = tmp_path / "x.iso"
    fake_iso(iso)
    assert cmd(install, env, "insert", "web", iso).returncode == 0
    inserted = conf.read_bytes()
    res = cmd(install, env, "vmset", "web", "Cores=2", "-u", "ISO", "Mem=2G", "VNCpassword=s3cret")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ['web: set Cores="2" (was "1")', 'web: set Mem="2G" (was "1G")',
                                       'web: set VNCpassword="***" (was unset)', f'web: unset ISO (was "{iso}")']
    text = conf.read_text()
    assert 'Cores="2"' in text and 'Mem="2G"' in text and "ISO=" not in text
    assert EXTRA in text                                # comments and lines kvm does not read: as they were
    assert (web / "set.conf.sav").read_bytes() == inserted
    assert conf.stat().st_mode & 0o777 == 0o640         # it holds a password now
    # nothing left to change: the file is not rewritten
    res = cmd(install, env, "vmset", "web", "Cores=2")
    assert res.returncode == 0 and res.stdout == "" and "nothing changed" in res.stderr
    assert (web / "set.conf.sav").read_bytes() == inserted
    info = cmd(install, env, "vminfo", "web", "--json")
    assert '"cores": 2' in info.stdout and before != conf.read_bytes()


@pytest.mark.parametrize("args, needles, status", [
    (["Cores=abc"], ["vmset: web: set.conf: Cores='abc' is not a whole number"], 1),
    (["Cores=0"], ["Cores='0'", "out of range"], 1),
    (["Mem=12"], ["Mem='12'", "too small"], 1),
    (["VMoptions=AZ"], ["VMoptions='AZ'", "'Z'"], 1),
    (["DiskDriver=scsi"], ["DiskDriver='scsi'"], 1),
    (["VNC=maybe"], ["VNC='maybe'"], 1),
    (["Devices=3,nosuch,x"], ["web:", "nosuch"], 1),
    (["cores=2"], ["vmset: web: 'cores' is not a kvm setting (did you mean 'Cores'?); --force"], 2),
    (["-u", "Memory"], ["'Memory' is not a kvm setting (did you mean 'Mem'?)"], 2),
    (["Cores"], ["vmset: web: 'Cores' is not KEY=VALUE"], 2),
    (["1x=2", "--force"], ["'1x' is not a variable name"], 2),
    (["ISO=/a\nb"], ["ISO='/a\\nb' holds a control character"], 2),
    (["Cores=2", "-u", "Cores"], ["Cores is both set and removed"], 2),
    ([], ["nothing to change"], 2),
])
def test_a_bad_change_is_one_line_and_leaves_set_conf_byte_for_byte(install, env, web, args, needles, status):
    before = (web / "set.conf").read_bytes()
    one_line_error(cmd(install, env, "vmset", "web", *args), *needles, status=status)
    assert (web / "set.conf").read_bytes() == before
    assert not (web / "set.conf.sav").exists()


@pytest.mark.parametrize("typed, written, said", [
    ("2GB", "2G", "web: Mem '2GB' read as 2G"), ("0.5G", "512M", "web: Mem '0.5G' read as 512M"),
    ("512", "512M", "web: Mem '512' read as 512M (MiB: a number without a unit)"), ("3g", "3g", None),
])
def test_mem_is_read_by_the_rule_vmcreate_uses(install, env, web, typed, written, said):
    res = cmd(install, env, "vmset", "web", f"Mem={typed}")
    assert res.returncode == 0, res.stderr
    assert f"Mem={written}" in (web / "set.conf").read_text().replace('"', "")
    assert (said in res.stderr) if said else res.stderr == "", res.stderr


def test_force_sets_your_own_variable_and_a_missing_vm_is_named(install, env, web):
    res = cmd(install, env, "vmset", "web", "--force", "MYVAR=x y", "LAN=tap9")
    assert res.returncode == 0, res.stderr
    text = (web / "set.conf").read_text()
    assert 'MYVAR="x y"' in text and 'LAN="tap9"   # the tap' in text   # rewritten in place, comment kept
    one_line_error(cmd(install, env, "vmset", "nope", "Cores=2"), "vmset: nope:", status=6)


def test_dry_run_says_what_it_would_change_and_changes_nothing(install, env, web):
    before = (web / "set.conf").read_bytes()
    res = cmd(install, env, "vmset", "web", "-n", "Cores=4", "-u", "Mem")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert 'web: would set Cores="4" (was "1")' in lines and 'web: would unset Mem (was "1G")' in lines
    assert any(line.startswith(f"would write {web}/set.conf ") for line in lines), lines
    assert not any(line.startswith(("web: set", "web: unset")) for line in lines)
    assert (web / "set.conf").read_bytes() == before and not (web / "set.conf.sav").exists()
    assert not (run_folder(env, install, "web") / "conf.lock").exists()


def test_vmset_waits_for_the_config_lock(install, env, web):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "1.5", str(install)], env=env, text=True,
                              stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    start, res = time.time(), cmd(install, env, "vmset", "web", "Cores=3")
    assert res.returncode == 0 and time.time() - start > 1.0, ("did not wait for the config lock", res.stderr)
    assert holder.wait(timeout=10) == 0 and 'Cores="3"' in (web / "set.conf").read_text()


LOCK_HOLDER = """
import sys, time
from kvm.host import lock, runfiles
with lock.hold_vm(runfiles.for_vm(sys.argv[1], sys.argv[2]), "test"):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def test_a_vm_named_like_another_ones_config_lock_does_not_block_its_edits(install, env, web):
    """VM `web.conf` running (its lock held) is no edit of VM `web` under way: vmset web goes
    through at once (issue 19.5: VM web.conf's lock RUN_DIR/web.conf.lock was VM web's config lock)."""
    create_vm(install, env, "web.conf")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(install), "web.conf", "15"], env=env, text=True,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        start, res = time.time(), cmd(install, env, "vmset", "web", "Cores=2")
        assert res.returncode == 0, res.stderr
        assert time.time() - start < 5, "vmset waited for another VM's lock"
        assert 'Cores="2"' in (web / "set.conf").read_text()
    finally:
        holder.kill()

