"""Where run files go (kvm/host/runfiles.py): a folder per VM per install root, one name per kind
of file, and an earlier version's run files still found while its supervisor runs."""

import json
import os
import re
import subprocess

import pytest

from kvm.host import lock, runfiles
from kvm.vm import NAME_RE, Vm
from kvm.vm.root import Root


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    path = tmp_path / "run"
    monkeypatch.setenv("KVM_RUN_DIR", str(path))
    return path


def test_a_root_id_is_stable_readable_short_and_a_name_cron_and_sh_take():
    ids = {p: runfiles.root_id(p) for p in ("/zroot/kvm", "/nc2pool/kvm", "/zroot_kvm", "/a/b-kvm", "/a-b/kvm",
                                             "/" + "x" * 200 + "/kvm", "/")}
    assert ids["/zroot/kvm"] == runfiles.root_id("/zroot/kvm")   # the path decides, every time
    assert ids["/zroot/kvm"].startswith("zroot_kvm_") and ids["/nc2pool/kvm"].startswith("nc2pool_kvm_")
    assert len(set(ids.values())) == len(ids)                    # same readable part: the hash differs
    for rid in ids.values():
        assert re.fullmatch(r"[A-Za-z0-9_]{1,20}_[0-9a-f]{8}", rid), rid
        assert rid != runfiles.HOST_DIR and "." not in rid


def test_every_kind_of_file_has_a_name_space_of_its_own(run_dir):
    """VM cx.conf's lock is not VM cx's config lock (issue 19.5), nor another root's."""
    cx, cx_conf, other = runfiles.of("/zroot/kvm", "cx"), runfiles.of("/zroot/kvm", "cx.conf"), \
        runfiles.of("/tank/kvm", "cx")
    names = {"host", "vnc", "cx", "cx.conf", "cx.lock", "cx.state", "lock", "state", "conf.lock"}
    paths = [runfiles.of(root, n).path(kind) for root in ("/zroot/kvm", "/tank/kvm") for n in names
             for kind in runfiles.KINDS]
    assert len(set(paths)) == len(paths)
    assert cx.conf_lock != cx_conf.lock and cx.lock != other.lock
    assert cx.lock == run_dir / runfiles.root_id("/zroot/kvm") / "cx" / "lock"
    assert not (run_dir / runfiles.HOST_DIR).is_relative_to(cx.root_folder)


def test_the_lock_of_vm_cx_conf_leaves_vm_cx_free(run_dir):
    root = Root("/zroot/kvm")
    with lock.hold_vm(Vm(root, "cx.conf").run, "test"):
        with lock.hold_config(Vm(root, "cx").run, "vmset"), lock.hold_vm(Vm(root, "cx").run, "start"):
            pass
    record = runfiles.root_dir("/zroot/kvm") / runfiles.ROOT_FILE
    assert record.read_text() == "/zroot/kvm\n"  # who the folder is, for whoever reads the run dir
    assert runfiles.recorded_roots() == ["/zroot/kvm"]


def holder_process(path):
    """A process holding the flock on `path` as a supervisor does (its pid, no text)."""
    code = ("import fcntl, os, sys, time\n"
            f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, f'{os.getpid()}\\n'.encode())\n"
            "print('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen(["python3", "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_an_earlier_versions_running_supervisor_is_found_in_the_old_place(run_dir):
    """kvm upgraded while VMs run: their supervisors keep RUN_DIR/NAME.lock and NAME.state."""
    run_dir.mkdir()
    (run_dir / "web.state").write_text(json.dumps({"supervisor": 1, "bhyve": 0, "root": "/zroot/kvm"}))
    sup = holder_process(run_dir / "web.lock")
    try:
        web = runfiles.for_vm("/zroot/kvm", "web")
        assert web.legacy and web.lock == run_dir / "web.lock" and web.state == run_dir / "web.state"
        assert web.stop == run_dir / "web.stop" and web.conf_lock == run_dir / "web.conf.lock"
        assert web.path("qmp") == run_dir / "web.qmp"
        assert not runfiles.for_vm("/tank/kvm", "web").legacy  # the state names its root
        assert runfiles.for_vm("/zroot/kvm", "web", legacy_names=set()).legacy is False
        with pytest.raises(Exception, match="is running"):
            lock.hold_vm(web, "vmset")
    finally:
        sup.kill()
        sup.wait()
    assert not runfiles.for_vm("/zroot/kvm", "web").legacy  # it ended: the next start uses the new place


def test_an_old_state_without_a_root_counts_for_every_root(run_dir):
    run_dir.mkdir()
    (run_dir / "web.state").write_text(json.dumps({"supervisor": 0, "bhyve": os.getpid()}))
    assert runfiles.for_vm("/zroot/kvm", "web").legacy and runfiles.for_vm("/tank/kvm", "web").legacy
    (run_dir / "web.state").write_text(json.dumps({"supervisor": 0, "bhyve": 0}))
    assert not runfiles.for_vm("/zroot/kvm", "web").legacy


def test_all_runs_lists_every_root_and_the_old_place(run_dir):
    for root, name in (("/zroot/kvm", "web"), ("/tank/kvm", "web"), ("/tank/kvm", "db")):
        runfiles.of(root, name).make_folder()
    (run_dir / "old.state").write_text("{}")
    lock.host_dir()
    found = {(r.name, r.legacy, runfiles.recorded_root(r)) for r in runfiles.all_runs()}
    assert found == {("web", False, "/zroot/kvm"), ("web", False, "/tank/kvm"), ("db", False, "/tank/kvm"),
                     ("old", True, None)}
    assert all(NAME_RE.match(r.name) for r in runfiles.all_runs())
