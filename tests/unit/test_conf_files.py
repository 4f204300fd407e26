"""set.conf on disk, without ZFS: the launch's safety check, edits (lock, mode, leftovers), and
hooks holding the config lock only while they source the files."""

import os
import stat
import threading
import time

import pytest

from kvm.conf import edit, hooks
from kvm.host import lock
from kvm.errors import ConfigError, PermissionDenied, StateError
from kvm.run import power
from kvm.vm.root import Root
from kvm.vm import Vm

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, root-only checks)")


@pytest.fixture
def vm(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_RUN_DIR", str(tmp_path / "run"))
    root = tmp_path / "kvm"
    (root / "vm" / "web").mkdir(parents=True)
    for folder in (tmp_path, root, root / "vm", root / "vm" / "web"):
        folder.chmod(0o755)
    (root / "functions").write_text("CreateIF() { :; }\n")
    d = root / "vm" / "web"
    (d / "set.conf").write_text('VMrom="uefi"\nCores="2"\n')
    (d / "run").write_text('preRun() { echo "pre" > "$VMdir/pre.log"; sleep 2; }\npostRun() { :; }\n')
    return Vm(Root(root), "web")


@needs_root
@pytest.mark.parametrize("spoil, needle", [
    (lambda v: v.conf_path.chmod(0o666), "set.conf is writable by group or others"),
    (lambda v: os.chown(v.run_path, 65534, 65534), "run is not owned by root (uid 65534)"),
    (lambda v: (v.root.path / "functions").chmod(0o646), "functions is writable by group or others"),
    (lambda v: v.dir.chmod(0o775), "web is writable by group or others"),
    (lambda v: v.root.vm_dir.chmod(0o777), "vm is writable by group or others"),
    (lambda v: (v.run_path.unlink(), v.run_path.symlink_to("/etc/passwd")), "a symbolic link?"),
])
def test_the_launch_refuses_any_unsafe_file_or_folder_before_reading(vm, tmp_path, spoil, needle):
    with open(vm.conf_path, "a") as fh:
        fh.write(f"X=$(touch {tmp_path}/ran)\n")
    spoil(vm)
    with pytest.raises(PermissionDenied) as err:
        vm.config(evaluate=True)
    assert needle in err.value.message and err.value.vm == "web"
    assert not (tmp_path / "ran").exists()
    assert vm.config().unevaluated["X"].startswith("line 3 not evaluated")  # readers still can


@needs_root
def test_the_launch_evaluates_once_all_is_safe(vm):
    with open(vm.conf_path, "a") as fh:
        fh.write("Cores=$(echo 3)\n")
    assert vm.config().cores == 1 and "Cores" in vm.config().unevaluated  # unknown: the default
    assert vm.config(evaluate=True).cores == 3


def test_a_vm_reads_its_set_conf_once_unless_asked_for_the_file_as_it_is_now(vm):
    first = vm.config()
    vm.conf_path.write_text('VMrom="uefi"\nCores="3"\nStopTimeout="30"\n')
    assert vm.config() is first and first.cores == 2     # one read for the life of the command
    assert power.vm_timeout(vm) == 60                      # stop: the same reading
    assert power.vm_timeout(vm, fresh=True) == 30          # the supervisor: the file now
    assert vm.config().cores == 3 and vm.config(fresh=True) is not first


def test_a_fresh_read_that_fails_keeps_no_older_reading(vm):
    assert vm.config().cores == 2
    vm.conf_path.write_text('VMrom="uefi"\nCores="x"\n')
    with pytest.raises(ConfigError, match="Cores='x' is not a whole number"):
        vm.config(fresh=True)
    with pytest.raises(ConfigError, match="Cores='x' is not a whole number"):
        vm.config()  # read again: not the reading from before the failed one


def test_an_edit_makes_the_next_read_see_the_new_file(vm):
    assert vm.config().cores == 2
    assert edit.set_values(vm, [("Cores", "3")]) == [("Cores", "2", "3")]
    assert vm.config().cores == 3


@needs_root
def test_the_launch_reads_the_file_as_it_is_now(vm):
    assert vm.config().cores == 2
    vm.conf_path.write_text('VMrom="uefi"\nCores="3"\n')
    assert vm.config(evaluate=True).cores == 3 and vm.config().cores == 2


def test_an_edit_keeps_a_password_private_and_never_widens(vm):
    vm.conf_path.write_text('VMrom="uefi"\nVNC=1\nVNCpassword="pw"\n')
    vm.conf_path.chmod(0o644)
    assert edit.apply(vm, lambda t: t + 'ISO="/x.iso"\n')
    assert stat.S_IMODE(vm.conf_path.stat().st_mode) == 0o640
    assert stat.S_IMODE((vm.dir / edit.BACKUP).stat().st_mode) == 0o640
    vm.conf_path.chmod(0o600)
    assert edit.apply(vm, lambda t: t.replace('VNCpassword="pw"\n', ""))
    assert stat.S_IMODE(vm.conf_path.stat().st_mode) == 0o600


def test_an_edit_never_runs_the_file(vm, tmp_path):
    with open(vm.conf_path, "a") as fh:
        fh.write(f"X=$(touch {tmp_path}/ran)\n")
    assert edit.apply(vm, lambda t: t + 'ISO="/x.iso"\n')
    assert not (tmp_path / "ran").exists()


def test_an_edit_removes_leftover_temp_files(vm):
    (vm.dir / ".set.conf.k1.tmp").write_text("half")
    (vm.dir / ".set.conf.sav.k2.tmp").write_text("half")
    edit.apply(vm, lambda t: t + 'ISO="/x.iso"\n')
    assert sorted(p.name for p in vm.dir.iterdir()) == ["run", "set.conf", "set.conf.sav"]


def test_an_edit_waits_for_the_config_lock_and_gives_up_with_one_line(vm, monkeypatch):
    held = lock.hold_config(vm.run, "test")
    done = []
    worker = threading.Thread(target=lambda: done.append(edit.apply(vm, lambda t: t + "A=1\n")))
    worker.start()
    time.sleep(0.3)
    assert not done, "the edit went ahead while the lock was held"
    held.release()
    worker.join(10)
    assert done == [True]
    held = lock.hold_config(vm.run, "test")
    monkeypatch.setattr(lock, "CONF_TRIES", 2)
    with pytest.raises(StateError, match=r"set.conf is being changed: pid \d+ \(test\) holds"):
        edit.apply(vm, lambda t: t + "B=1\n")
    held.release()


@needs_root
def test_a_hook_holds_the_config_lock_only_while_it_sources_the_files(vm):
    proc = hooks.start_hook(vm, "preRun")
    try:
        end = time.time() + 10
        while not (vm.dir / "pre.log").exists() and time.time() < end:
            time.sleep(0.02)
        assert (vm.dir / "pre.log").exists()
        start = time.time()
        with lock.hold_config(vm.run, "test"):  # free although preRun still runs
            assert time.time() - start < 1
        assert proc.poll() is None
    finally:
        proc.wait(10)
    assert proc.returncode == 0
