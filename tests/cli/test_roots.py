"""Two install roots on one host (issues 20.3, 19.5): run state, locks and the stop request are per
root and per VM; bhyve's VM names are host-wide, so a name another root has is refused; VM
`cx.conf` shares no file with VM `cx`."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.cli.test_run import guest_up, guests, make, script, status, wait_for
from tests.conftest import cmd, create_vm, datasets, destroy_dataset, fake_iso, kvm, one_line_error, run_folder


@pytest.fixture
def second(scratch_pool, env, install):
    """A second install root on a pool of its own, on the same host (same run dir): (path, pool)."""
    name = scratch_pool(160)
    res = kvm(env, "kvminst", "-p", name, "-y")
    assert res.returncode == 0, res.stderr
    yield Path(f"/{name}/kvm"), name
    for vm in ("ncdup", "web"):
        subprocess.run([sys.executable, "-m", "kvm", "--root", f"/{name}/kvm", "stop", "-f", vm], env=env,
                       capture_output=True)
    destroy_dataset(f"{name}/kvm")


def same_name_in(root, env, name, *flags):
    """VM `name` in `root` although another root has one, as made before kvm refused that (by a
    vmcreate that knew no other root: a run dir of its own)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as run:
        Path(run).chmod(0o755)
        return create_vm(root, dict(env, KVM_RUN_DIR=run), name, "--disk-size", "1G", *flags)


def test_a_vm_of_another_root_with_the_same_name_is_not_this_ones(install, env, second):
    """ncdup runs in the first root: the second root's ncdup reads stopped, its start is refused
    naming the other root (bhyve's names are host-wide), and its stop leaves the other alone."""
    other, pool = second
    make(install, env, "ncdup")
    (same_name_in(other, env, "ncdup") / "run").write_text((install / "vm" / "ncdup" / "run").read_text())
    script(env, "ncdup", "run")
    assert cmd(install, env, "start", "-b", "ncdup").returncode == 0
    wait_for(lambda: guest_up(install, env, "ncdup"), what="the first root's ncdup")
    pid = status(install, env, "ncdup")
    res = cmd(other, env, "status", "ncdup")
    assert (res.returncode, res.stdout) == (1, "0\n"), "the second root's ncdup does not run"
    assert json.loads(cmd(other, env, "status", "--json", "ncdup").stdout)["state"] == "stopped"
    listed = cmd(other, env, "vmlist", "-H", "-o", "name,state")
    assert listed.stdout == "ncdup\tstopped\n" and listed.stderr == ""
    one_line_error(cmd(other, env, "start", "-b", "ncdup"), "start: ncdup:", f"of {install}", "host-wide", status=8)
    one_line_error(cmd(other, env, "start", "-n", "ncdup"), "start: ncdup:", f"of {install}", "host-wide", status=8)
    one_line_error(cmd(other, env, "stop", "ncdup"), "stop: ncdup: is not running", str(install), status=9)
    one_line_error(cmd(other, env, "stop", "-f", "ncdup"), "stop: ncdup: is not running", status=9)
    assert status(install, env, "ncdup") == pid, "the first root's VM still runs"
    assert len(guests(env, "ncdup")) == 1
    assert not (run_folder(env, other, "ncdup") / "state").exists() or \
        not json.loads((run_folder(env, other, "ncdup") / "state").read_text()).get("bhyve")
    assert cmd(install, env, "stop", "-f", "ncdup").returncode == 0
    # stopped there: the second root's ncdup runs now, in its own run folder
    res = cmd(other, env, "start", "-b", "ncdup")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(other, env, "ncdup"), what="the second root's ncdup")
    assert status(install, env, "ncdup") == 0
    assert json.loads((run_folder(env, other, "ncdup") / "state").read_text())["root"] == str(other)
    assert cmd(other, env, "stop", "-f", "ncdup").returncode == 0


def test_each_root_has_its_own_run_folder(install, env, second):
    other, _ = second
    run = Path(env["KVM_RUN_DIR"])
    folders = {p.name: p.joinpath(".root").read_text() for p in run.iterdir() if (p / ".root").exists()}
    assert sorted(folders.values()) == sorted([f"{install}\n", f"{other}\n"])  # kvminst recorded both
    assert run_folder(env, install, "web").parent != run_folder(env, other, "web").parent


def test_a_name_another_root_has_is_refused_everywhere_with_bhyve(install, env, second):
    other, pool = second
    create_vm(install, env, "ncdup")
    create_vm(other, env, "mine")
    before = datasets(pool)
    why = ("ncdup", f"the name is taken on this host by the VM ncdup of {install}", "host-wide")
    one_line_error(cmd(other, env, "vmcreate", "ncdup", "-y", "--no-disk"), "vmcreate: ncdup:", *why, status=7)
    one_line_error(cmd(other, env, "vmrename", "mine", "ncdup"), *why, status=7)
    one_line_error(cmd(other, env, "vmclone", "mine", "ncdup", "-y"), *why, status=7)
    store = Path(tempfile.mkdtemp(prefix="shellkvm", dir="/var/tmp"))
    try:  # a shell kvm VM folder called ncdup (not the first root's own)
        shutil.copytree(other / "vm" / "mine", store / "ncdup")
        one_line_error(cmd(other, env, "vmimport", "--from", "shell-kvm", store / "ncdup"), *why, status=7)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    # vmrecv of a stream that is not the first root's ncdup (nor a copy of it)
    res = subprocess.run([sys.executable, "-m", "kvm", "--root", str(other), "vmrecv", "ncdup"], env=env,
                         input="recv s1 - 12345\n", capture_output=True, text=True, timeout=60)
    probe = json.loads(res.stdout.splitlines()[0])
    assert [e["root"] for e in probe["elsewhere"]] == [str(install)]
    one_line_error(res, "vmrecv: ncdup:", *why[1:], status=7)
    assert datasets(pool) == before
    # the first root's own copies may share its name: vmsend --local moves it there
    res = cmd(install, env, "vmsend", "ncdup", "--local", other, "--copy", timeout=120)
    assert res.returncode == 0, res.stderr
    assert (other / "vm" / "ncdup" / "set.conf").is_file()


def test_qemu_lets_each_root_have_its_name(install, env, second):
    """qemu's run files are per root: two roots may each have (and run) a `web`."""
    other, _ = second
    create_vm(install, env, "web")
    qenv = dict(env, KVM_HYPERVISOR="qemu")
    res = cmd(other, qenv, "vmcreate", "web", "-y", "--no-disk", "--no-network", "--vnc", "no", "--com", "no",
              "--loader", "grub")
    assert res.returncode == 0, res.stderr


def test_vm_cx_conf_shares_no_file_with_vm_cx(install, env):
    """VM cx.conf's lock was VM cx's config lock (RUN_DIR/cx.conf.lock): with cx.conf running,
    insert, vmset and start of cx waited 10 s and failed (issue 19.5)."""
    make(install, env, "cx.conf")
    make(install, env, "cx")
    script(env, "cx.conf", "run")
    script(env, "cx", "run")
    assert cmd(install, env, "start", "-b", "cx.conf").returncode == 0
    wait_for(lambda: guest_up(install, env, "cx.conf"), what="cx.conf")
    iso = fake_iso(install / "iso" / "cx.iso")
    for argv in (["insert", "cx", str(iso)], ["vmset", "cx", "Cores=2"]):
        res = cmd(install, env, *argv, timeout=30)
        assert res.returncode == 0, (argv, res.stderr)
    res = cmd(install, env, "start", "-b", "cx", timeout=30)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(install, env, "cx"), what="cx")
    for name in ("cx", "cx.conf"):
        assert cmd(install, env, "stop", "-f", name).returncode == 0


def test_commands_on_path_work_on_the_root_holding_the_current_folder(install, env, second):
    """Issue 20.8: with several roots, `kvm vminfo NAME` inside one (or below it) works on that one."""
    other, _ = second
    create_vm(install, env, "web")
    create_vm(other, env, "db")
    for where, name, root in ((install, "web", install), (install / "vm" / "web", "web", install),
                              (other / "vm", "db", other)):
        res = kvm(env, "vminfo", "--json", name, cwd=where)
        assert res.returncode == 0, (where, res.stderr)
        assert json.loads(res.stdout)["dir"] == str(root / "vm" / name)
    one_line_error(kvm(env, "vminfo", "db", cwd=install), "vminfo: db: no such VM", status=6)


UPGRADED = """
import sys
from kvm import vm as vmmod
from kvm.host import runfiles
from kvm.run.supervisor import Supervisor, write_line
from kvm.vm.root import Root
# a supervisor of an earlier version: its run files in RUN_DIR/NAME.*
vm = vmmod.Vm(Root(sys.argv[1]), sys.argv[2], run=runfiles.legacy(sys.argv[2]))
sys.exit(Supervisor(vm, write_line).run())
"""


def test_a_vm_an_earlier_version_started_is_still_found_and_stopped(install, env):
    """kvm upgraded while a VM runs: its supervisor keeps RUN_DIR/web.lock and web.state."""
    make(install, env, "web")
    script(env, "web", "run")
    run = Path(env["KVM_RUN_DIR"])
    old = subprocess.Popen([sys.executable, "-c", UPGRADED, str(install), "web"], env=env, cwd=install,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: guest_up(install, env, "web"), what="the guest of the earlier supervisor")
        state = json.loads((run / "web.state").read_text())
        assert status(install, env, "web") == state["bhyve"]
        assert not (run_folder(env, install, "web") / "state").exists()
        one_line_error(cmd(install, env, "start", "-b", "web"), "start: web: already running", str(run / "web.lock"), status=9)
        assert cmd(install, env, "vmset", "web", "Cores=2").returncode == 0  # its config lock: the old one
        assert cmd(install, env, "vmlist", "-H", "-o", "name,state").stdout == "web\trunning\n"
        res = cmd(install, env, "stop", "web")
        assert res.returncode == 0, res.stderr
        assert old.wait(30) == 0 and status(install, env, "web") == 0
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()
    res = cmd(install, env, "start", "-b", "web")  # its next start: the root's own folder
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(install, env, "web", boots=2), what="the new start")
    assert json.loads((run_folder(env, install, "web") / "state").read_text())["supervisor"] > 0
    assert cmd(install, env, "stop", "-f", "web").returncode == 0
