"""The run dir and its locks: name spaces, modes, links, a lock removed under a supervisor."""

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

from tests.cli.test_run import guest_up, guests, make, script, wait_for
from tests.conftest import cmd, one_line_error, run_folder


def test_a_vm_named_vnc_does_not_block_other_vnc_starts(install, env):
    # The VNC port lock is host-wide, in RUN_DIR/host/: a VM called vnc has its own lock in its folder.
    make(install, env, "vnc", "--vnc", "yes")
    make(install, env, "other", "--vnc", "yes")
    for name in ("vnc", "other"):
        script(env, name, "run")
    assert cmd(install, env, "start", "-b", "vnc").returncode == 0
    wait_for(lambda: guest_up(install, env, "vnc"), what="vnc")
    res = cmd(install, env, "start", "-b", "other", timeout=30)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(install, env, "other"), what="other")
    run = Path(env["KVM_RUN_DIR"])
    assert (run / "host" / "vnc.lock").is_file() and (run_folder(env, install, "vnc") / "lock").is_file()
    for name in ("vnc", "other"):
        assert cmd(install, env, "stop", "-f", name).returncode == 0


def test_run_dir_and_files_are_made_safe_whatever_the_umask(install, env):
    run = Path(env["KVM_RUN_DIR"])
    shutil.rmtree(run)
    make(install, env)
    script(env, "web", "run")
    res = subprocess.run(["sh", "-c", "umask 000; exec ./start -b web"], env=env, cwd=install,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(install, env), what="the guest")
    folder = run_folder(env, install, "web")
    for path in (run, folder.parent, folder):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    assert stat.S_IMODE((folder / "lock").stat().st_mode) == 0o644
    assert stat.S_IMODE((folder.parent / ".root").stat().st_mode) == 0o644
    assert stat.S_IMODE((install / "vm" / "web" / "web.log").stat().st_mode) == 0o640
    assert cmd(install, env, "stop", "-f", "web").returncode == 0


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(install, env, tmp_path):
    make(install, env)
    script(env, "web", "run")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    folder = run_folder(env, install, "web")
    folder.mkdir(parents=True)
    (folder / "lock").symlink_to(victim)
    one_line_error(cmd(install, env, "start", "web"), "start: web:", "symbolic link")
    assert victim.read_text() == "precious\n"
    assert not guests(env)


def test_a_run_dir_writable_by_others_is_refused(install, env):
    make(install, env)
    run = Path(env["KVM_RUN_DIR"])
    run.chmod(0o777)
    one_line_error(cmd(install, env, "start", "web"), "start: web:", "writable by others", str(run))
    assert not run_folder(env, install, "web").exists()


def test_removing_the_run_dir_during_prerun_never_gives_two_bhyves(install, env):
    # preRun waits for a go file: while the first supervisor waits in it, the run dir goes
    # (its lock with it) and a second start comes in. Only one guest may ever be launched.
    vmdir = make(install, env, pre_extra='while [ ! -e "$VMdir/go" ]; do sleep 0.05; done')
    script(env, "web", "run")
    first = subprocess.Popen([str(install / "start"), "web"], env=env, cwd=install,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hooks = vmdir / "hooks.log"
    wait_for(lambda: hooks.exists() and hooks.read_text().count("pre web") == 1, what="first preRun")
    shutil.rmtree(env["KVM_RUN_DIR"])
    second = subprocess.Popen([str(install / "start"), "web"], env=env, cwd=install,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: hooks.read_text().count("pre web") == 2, what="second preRun")
    (vmdir / "go").write_text("")
    out_first = first.communicate(timeout=30)[0]
    assert first.returncode == 1, out_first
    assert "not launching a second bhyve" in out_first
    wait_for(lambda: guest_up(install, env), what="the one guest")
    time.sleep(0.5)
    assert len(guests(env)) == 1
    assert cmd(install, env, "stop", "-f", "web").returncode == 0
    second.communicate(timeout=30)
    assert second.returncode == 0


def test_start_b_refused_by_a_held_lock_touches_nothing_of_the_vm(install, env):
    # start -b takes the VM's lock before it reads set.conf or opens NAME.log, and hands that
    # same lock to its supervisor: a command holding the lock (a rollback) never finds a start
    # half-way in (it used to open NAME.log in the dataset and spawn a supervisor first).
    import fcntl
    d = make(install, env)
    script(env, "web", "run")
    run_folder(env, install, "web").mkdir(parents=True)
    fd = os.open(run_folder(env, install, "web") / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} snap rollback\n".encode())
        res = cmd(install, env, "start", "-b", "web", timeout=30)
    finally:
        os.close(fd)
    one_line_error(res, "web", "busy", "snap rollback", status=8)
    assert not (d / "web.log").exists() and not guests(env, "web")


def test_a_supervisor_refuses_a_handed_lock_that_is_not_the_vms(install, env, tmp_path):
    make(install, env)
    script(env, "web", "run")
    other = tmp_path / "not-a-lock"
    other.write_text("")
    res = subprocess.run(["sh", "-c", f"exec ./start --lock-fd 7 web 7<{other}"], env=env, cwd=install,
                         capture_output=True, text=True, timeout=30)
    one_line_error(res, "web", "descriptor 7", "web/lock")
    assert not guests(env, "web")
