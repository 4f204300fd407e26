"""set.conf is never run by commands that only read it; start runs it only once every file it
sources is root's; edits keep a password private, clean up after a killed write, and never
leave a reader without a set.conf."""

import json
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import REPO, calls, cmd, create_vm, fake_iso, one_line_error, run_folder
from tests.cli.test_run import boots, make, wait_for

NOBODY = 65534


def hostile(d, marker):
    """A set.conf that would create `marker` if anything evaluated it."""
    with open(d / "set.conf", "a") as fh:
        fh.write(f'X=$(touch {marker}.1)\nCores=`touch {marker}.2`\n'
                 f'if touch {marker}.3; then Mem=2G; fi\n')


READ_ONLY = [["vminfo", "web"], ["vminfo", "--json", "web"], ["start", "-n", "web"], ["stop", "web"],
             ["console", "web"], ["status", "web"], ["snap", "c", "web", "s1"], ["snap", "d", "web", "s1"],
             ["insert", "web", "/etc/hostname"], ["eject", "web"]]


@pytest.mark.parametrize("argv", READ_ONLY, ids=lambda a: " ".join(a))
def test_commands_that_read_set_conf_never_run_it(install, env, tmp_path, argv):
    d = create_vm(install, env, "web")
    marker = tmp_path / "ran"
    hostile(d, marker)
    cmd(install, env, *argv)
    assert list(tmp_path.glob("ran*")) == [], f"{argv[0]} evaluated set.conf"


def test_vminfo_says_what_it_did_not_evaluate(install, env, tmp_path):
    d = create_vm(install, env, "web")
    hostile(d, tmp_path / "ran")
    res = cmd(install, env, "vminfo", "web")
    assert res.returncode == 0, res.stderr
    cores = next(line for line in res.stdout.splitlines() if line.startswith("cores:"))
    assert "not evaluated: uses `...`" in cores and "line " in cores
    assert "not evaluated" in res.stderr  # the warnings: X and the if-line too
    data = json.loads(cmd(install, env, "vminfo", "--json", "web").stdout)
    assert set(data["unevaluated"]) == {"X", "Cores"}
    assert data["unevaluated"]["X"].endswith("not evaluated: uses $(...)")


def test_start_evaluates_a_safe_set_conf(install, env, tmp_path):
    from tests.cli.test_run import script
    d = make(install, env)
    with open(d / "set.conf", "a") as fh:
        fh.write('Cores=$(echo 2)\n')
    script(env, "web", "poweroff after=0")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 0, res.stdout + res.stderr
    argv = boots(env)[0]
    assert argv[argv.index("-c") + 1] == "2"  # sh evaluated $(echo 2) for the launch


def _chown_nobody(path):
    os.chown(path, NOBODY, NOBODY)


UNSAFE = {
    "set.conf owned by nobody": lambda d, root: _chown_nobody(d / "set.conf"),
    "set.conf 0666": lambda d, root: (d / "set.conf").chmod(0o666),
    "run 0666": lambda d, root: (d / "run").chmod(0o666),
    "run owned by nobody": lambda d, root: _chown_nobody(d / "run"),
    "functions 0666": lambda d, root: (root / "functions").chmod(0o666),
    "VM folder 0777": lambda d, root: d.chmod(0o777),
    "VM folder owned by nobody": lambda d, root: _chown_nobody(d),
    "set.conf a symbolic link": lambda d, root: ((d / "real.conf").write_text((d / "set.conf").read_text()),
                                                 (d / "set.conf").unlink(),
                                                 (d / "set.conf").symlink_to(d / "real.conf")),
}


@pytest.mark.parametrize("unsafe", list(UNSAFE))
def test_start_refuses_unsafe_files_before_running_any(install, env, tmp_path, unsafe):
    d = make(install, env)
    hostile(d, tmp_path / "ran")
    UNSAFE[unsafe](d, install)
    try:
        res = cmd(install, env, "start", "web")
    finally:
        d.chmod(0o755)
        (install / "functions").chmod(0o644)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert any(why in out for why in ("not owned by root", "writable by group or others", "link")), out
    assert list(tmp_path.glob("ran*")) == [], "set.conf was run before the ownership check"
    assert boots(env) == [] and not (d / "hooks.log").exists()


def test_an_oversized_set_conf_or_run_is_refused_in_one_line(install, env):
    """Files kvm reads have a size limit (issue 19.6): a set.conf over 256 KiB is no settings file
    (every reader says so in one line), a run over 1 MiB is not run."""
    d = make(install, env)
    text = (d / "set.conf").read_text()
    (d / "set.conf").write_text(text + ("# padding" + " " * 90 + "\n") * 3000)
    one_line_error(cmd(install, env, "vminfo", "web"), "vminfo: web:", "set.conf", "larger than 256 KiB")
    one_line_error(cmd(install, env, "vmset", "web", "Cores=2"), "vmset: web:", "larger than 256 KiB")
    (d / "set.conf").write_text(text)
    run = (d / "run").read_text()
    (d / "run").write_text(run + ("# padding" + " " * 90 + "\n") * 12000)
    res = cmd(install, env, "start", "web")
    assert res.returncode != 0 and "larger than 1 MiB" in res.stdout + res.stderr, res.stdout + res.stderr
    assert boots(env) == [] and not (d / "hooks.log").exists()


# ------------------------------------------------------------------------- passwords

def test_a_password_makes_every_write_0640(install, env, tmp_path):
    d = create_vm(install, env, "web", "--vnc", "yes")
    assert stat.S_IMODE((d / "set.conf").stat().st_mode) == 0o644  # no password: as before
    with open(d / "set.conf", "a") as fh:
        fh.write('VNCpassword="s3cret"\n')
    iso = tmp_path / "x.iso"
    fake_iso(iso)
    assert cmd(install, env, "insert", "web", iso).returncode == 0
    assert stat.S_IMODE((d / "set.conf").stat().st_mode) == 0o640
    assert stat.S_IMODE((d / "set.conf.sav").stat().st_mode) == 0o640  # the old copy has it too
    (d / "set.conf").chmod(0o600)
    assert cmd(install, env, "eject", "web").returncode == 0
    assert stat.S_IMODE((d / "set.conf").stat().st_mode) == 0o600, "an edit never widens the mode"


# ------------------------------------------------------------------------- leftovers

def test_an_edit_removes_temp_files_of_a_killed_write(install, env, tmp_path):
    d = create_vm(install, env, "web")
    for name in (".set.conf.abc123.tmp", ".set.conf.sav.x1y2.tmp"):
        (d / name).write_text("half")
    (d / ".other.tmp").write_text("not ours")
    assert cmd(install, env, "insert", "web", fake_iso(tmp_path / "x.iso")).returncode == 0
    assert sorted(p.name for p in d.glob(".*")) == [".other.tmp"]


# ---------------------------------------------------------------- races with readers

READER = """
import sys, time
from kvm.conf import config
vmdir, seconds = sys.argv[1], float(sys.argv[2])
end, n, bad = time.time() + seconds, 0, []
while time.time() < end:
    n += 1
    try:
        config.load("web", vmdir, evaluate=False)
    except Exception as exc:
        bad.append(str(exc))
print(n, len(bad), bad[:3])
"""


def test_readers_always_see_a_set_conf_while_insert_and_eject_replace_it(install, env, tmp_path):
    d = create_vm(install, env, "web")
    iso = tmp_path / "x.iso"
    fake_iso(iso)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(d), "20"], env=env, text=True,
                              stdout=subprocess.PIPE)
    rounds = 0
    end = time.time() + 15
    while time.time() < end and reader.poll() is None:
        for argv in (["insert", "web", iso], ["eject", "web"]):
            res = cmd(install, env, *argv)
            assert res.returncode == 0, res.stderr
        rounds += 1
    out, _ = reader.communicate(timeout=30)
    reads, failures, examples = out.split(" ", 2)
    assert rounds >= 5 and int(reads) > 100
    assert failures == "0", examples


HOLDER = """
import sys, time
from kvm.host import lock, runfiles
with lock.hold_config(runfiles.of(sys.argv[2], "web"), "test"):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_an_edit_waits_for_the_config_lock(install, env, tmp_path):
    """Edits, and the supervisor's read before a launch, hold the VM's conf.lock: an insert
    started while another holder has it waits for it, then succeeds (it never refuses)."""
    create_vm(install, env, "web")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "1.5", str(install)], env=env, text=True,
                              stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    start = time.time()
    res = cmd(install, env, "insert", "web", fake_iso(tmp_path / "x.iso"))
    assert res.returncode == 0, res.stderr
    assert time.time() - start > 1.0, "the insert did not wait for the config lock"
    holder.wait(timeout=10)
    assert (run_folder(env, install, "web") / "conf.lock").is_file()


def _ended(d):
    log = (d / "web.log").read_text()
    return "cannot launch" in log or "preRun failed" in log


def test_reboots_survive_insert_and_eject_hammering(install, env, tmp_path):
    """Item 13: at every guest reboot the supervisor re-reads set.conf (and preRun sources it)
    while insert/eject replace it; it must always find one, old or new."""
    from tests.cli.test_run import guest_up, script
    d = make(install, env)
    iso = tmp_path / "x.iso"
    fake_iso(iso)
    reboots = 25
    script(env, "web", *["reboot after=0.05"] * reboots, "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    end = time.time() + 90
    while len(boots(env)) <= reboots and time.time() < end and not _ended(d):
        for argv in (["insert", "web", iso], ["eject", "web"]):
            res = cmd(install, env, *argv)
            assert res.returncode == 0, res.stderr
    log = (d / "web.log").read_text()
    assert "not found" not in log and "cannot launch" not in log, log
    assert len(boots(env)) == reboots + 1, log
    assert cmd(install, env, "stop", "web").returncode == 0
