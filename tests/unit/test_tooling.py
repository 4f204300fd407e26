"""The test tooling on a real host (issue 20.5, 20.14): tests/setup.sh and tests/zfs-fuse-watch touch
only the pools the test tooling recorded and a zfs-fuse the run itself started; tests/run ends
with the overall result. Each runs in a folder of its own with stand-ins for zpool, zfs-fuse,
umount and the like first on PATH (the watcher also in a mount namespace of its own, with a
private /run): nothing of the host is touched."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the scripts run as root only")


def stub(bindir, name, body):
    path = bindir / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def sandbox(tmp_path, *scripts):
    """tmp/repo/tests with copies of `scripts` (and testpools.sh), tmp/bin for the stand-ins."""
    tests = tmp_path / "repo" / "tests"
    tests.mkdir(parents=True)
    for name in scripts + ("testpools.sh",):
        if (REPO / "tests" / name).exists():
            shutil.copy2(REPO / "tests" / name, tests / name)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    return tests, bindir


def orphan_sleep():
    """The pid of a `sleep 60` that is no child of ours (init reaps it: killed, it is gone)."""
    out = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True)
    return int(out.stdout)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gone(pid, seconds=5):
    end = time.time() + seconds
    while alive(pid) and time.time() < end:
        time.sleep(0.05)
    return not alive(pid)


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@needs_root
def test_setup_destroys_only_recorded_pools_of_runs_that_are_over(tmp_path):
    tests, bindir = sandbox(tmp_path, "setup.sh")
    log = tmp_path / "zpool.log"
    health = {"kvmtank": "FAULTED", "kvmstore": "ONLINE", "kvmtdead": "FAULTED", "kvmtlive": "FAULTED",
              "kvmsgone": "ONLINE", "kvmtleft": "ONLINE"}
    table = "\\n".join(f"{n}\\t{h}" for n, h in health.items())
    names = "\\n".join(health)
    cases = "\n".join(f"  {n}) echo {h} ;;" for n, h in health.items())
    stub(bindir, "zpool", f'''echo "$*" >> {log}
case "$*" in
"list -H -o name,health") printf '{table}\\n' ;;
"list -H -o name") printf '{names}\\n' ;;
"list -H -o health "*) case "$5" in
{cases}
  *) exit 1 ;;
  esac ;;
esac
exit 0''')
    for name in ("zfs-fuse", "setpriv", "qemu-system-x86_64", "grub-mkrescue", "xorriso", "mformat", "cpio",
                 "qemu-img", "ip", "systemd-analyze", "zsh", "mandoc", "apt-get"):
        stub(bindir, name, "exit 0")
    venv = tests.parent / ".venv" / "bin"
    venv.mkdir(parents=True)
    stub(venv, "python", "exit 0")
    records = tmp_path / "records"
    records.mkdir(mode=0o700)
    (records / "kvmtdead").write_text(f"{dead_pid()} {tmp_path}/kvmtdead.img\n")   # its run is over
    (records / "kvmtlive").write_text(f"{os.getpid()} {tmp_path}/kvmtlive.img\n")  # its run goes on
    (records / "kvmsgone").write_text(f"{dead_pid()} {tmp_path}/kvmsgone.img\n")   # ONLINE, file gone
    # ONLINE with its file, its run killed (a session stopped mid-run): a leak, destroyed with its file
    (records / "kvmtleft").write_text(f"{dead_pid()} {tmp_path}/kvmtleft.img\n")
    (tmp_path / "kvmtleft.img").write_bytes(b"")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", KVM_TEST_POOL_RECORDS=str(records))
    res = subprocess.run(["bash", str(tests / "setup.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    destroyed = [line.split()[-1] for line in log.read_text().splitlines() if line.startswith("destroy")]
    # a host's kvmtank and kvmstore are no test pools, whatever their names: never destroyed
    assert sorted(destroyed) == ["kvmsgone", "kvmtdead", "kvmtleft"], res.stderr
    assert sorted(p.name for p in records.iterdir()) == ["kvmtlive"]
    assert not (tmp_path / "kvmtleft.img").exists()


def test_records_are_kept_while_zfs_does_not_answer(tmp_path):
    """A pool missing from no answer (zfs-fuse restarting) is not gone: its record stays."""
    tests, bindir = sandbox(tmp_path)
    log = tmp_path / "zpool.log"
    records = tmp_path / "records"
    records.mkdir(mode=0o700)
    (records / "kvmtold").write_text(f"{dead_pid()} {tmp_path}/kvmtold.img\n")
    clean = ["bash", "-c", f". {tests}/testpools.sh && testpools_clean_stale"]
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", KVM_TEST_POOL_RECORDS=str(records))
    stub(bindir, "zpool", f'echo "$*" >> {log}; echo "connect: Connection refused" >&2; exit 1')
    assert subprocess.run(clean, env=env, timeout=30).returncode == 0
    assert (records / "kvmtold").exists() and "destroy" not in log.read_text()
    stub(bindir, "zpool", f'echo "$*" >> {log}; exit 0')  # it answers: no such pool any more
    assert subprocess.run(clean, env=env, timeout=30).returncode == 0
    assert not (records / "kvmtold").exists() and "destroy" not in log.read_text()


@needs_root
def test_watcher_restarts_only_the_daemon_its_run_started(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    tests, bindir = sandbox(tmp_path, "zfs-fuse-watch")
    daemon_pid = tmp_path / "daemon.pid"   # the stand-in zfs-fuse: a sleep, its pid here
    calls = tmp_path / "calls.log"
    stub(bindir, "pgrep", f'p=$(cat {daemon_pid} 2>/dev/null) && kill -0 "$p" 2>/dev/null && echo "$p"')
    # one process stuck in fuse_get_req at every look until a new zfs-fuse starts: a wedge
    wedged = tmp_path / "wedged"
    wedged.write_text("")
    stub(bindir, "ps", f'[ ! -e {wedged} ] || echo "999 D fuse_get_req"')
    stub(bindir, "umount", f'echo "umount $*" >> {calls}')
    stub(bindir, "zfs-fuse", f'echo "zfs-fuse $*" >> {calls}; rm -f {wedged}; '
                             f'sleep 60 >/dev/null 2>&1 & echo $! > {daemon_pid}')
    stub(bindir, "zpool", "exit 0")
    records = tmp_path / "records"
    records.mkdir(mode=0o700)
    (records / "kvmtours").write_text(f"{os.getpid()} /dev/shm/kvmtours.img\n")
    mounts = tmp_path / "mounts"
    mounts.write_text("kvmtours /kvmtours fuse.zfs rw 0 0\nkvmtours/kvm /kvmtours/kvm fuse.zfs rw 0 0\n"
                      "tank /tank fuse.zfs rw 0 0\ntank/vm /tank/vm fuse.zfs rw 0 0\n")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", KVM_TEST_POOL_RECORDS=str(records),
               WATCH_INTERVAL="0.1", STUCK_SAMPLES="1", WEDGE_SAMPLES="1000", WATCH_MOUNTS=str(mounts),
               WATCH_PIDFILE=str(tmp_path / "zfs-fuse.pid"))

    def watch(*args, seconds=2.0):
        count = tmp_path / "count"
        count.write_text("")
        # a mount namespace with a /run of its own: nothing the watcher removes there is the host's
        proc = subprocess.Popen(["unshare", "--mount", "bash", "-c",
                                 'mount -t tmpfs none /run && exec bash "$@"', "watch",
                                 str(tests / "zfs-fuse-watch"), str(count), *map(str, args)],
                                env=env, stderr=subprocess.PIPE, text=True)
        time.sleep(seconds)
        proc.kill()
        return count.read_text(), proc.communicate()[1]

    host_daemon = orphan_sleep()
    started = tmp_path / "started"
    try:
        daemon_pid.write_text(f"{host_daemon}\n")
        count, err = watch()                   # no daemon file: this run started no zfs-fuse
        assert alive(host_daemon), "the host's zfs-fuse was killed"
        assert count == "" and not calls.exists(), err
        assert err.count("this run did not start it: not restarting it") == 1, err
        started.write_text("99999999\n")       # the run started another one, gone since
        count, err = watch(started)
        assert alive(host_daemon) and count == "" and not calls.exists(), err
    finally:
        os.kill(host_daemon, 9)

    ours = orphan_sleep()                      # the zfs-fuse tests/setup.sh started in this run
    try:
        daemon_pid.write_text(f"{ours}\n")
        started.write_text(f"{ours}\n")
        count, err = watch(started, seconds=3)
        assert gone(ours)
        assert count == "restart\n", err
        lines = calls.read_text().splitlines()
        assert "umount -l /kvmtours/kvm" in lines and "umount -l /kvmtours" in lines
        assert not [x for x in lines if "tank" in x.replace("kvmtours", "")], lines  # no other pool's mount
        assert "/tank/vm (tank/vm) is no test pool's mount: left as it is" in err
        assert started.read_text().strip() == daemon_pid.read_text().strip()  # the new daemon, recorded
    finally:
        for pid in (ours, int(daemon_pid.read_text() or 0)):
            if pid and alive(pid):
                os.kill(pid, 9)


def test_run_ends_with_the_overall_result(tmp_path):
    tests, bindir = sandbox(tmp_path, "run")
    repo = tests.parent
    (tests / "setup.sh").write_text("exit 0\n")
    (tests / "guest").mkdir()
    stub(tests / "guest", "build-guest", "echo /var/tmp/guest.iso")
    # a zfs-fuse restart during the run, so that the failed tests are run again
    (tests / "zfs-fuse-watch").write_text('echo restart >> "$1"\nexec sleep 30\n')
    venv = repo / ".venv" / "bin"
    venv.mkdir(parents=True)
    stub(venv, "lint-imports", "exit 0")
    stub(venv, "python", '''sleep 0.5
case " $* " in
*" --lf "*) echo "3 passed in 1.00s"; echo "3 passed in 1s (exit 0)" > "$KVM_TEST_SUMMARY"; exit 0 ;;
*) echo "3 failed, 800 passed, 2 skipped in 900.00s"
   echo "3 failed, 800 passed, 2 skipped in 900s (exit 1)" > "$KVM_TEST_SUMMARY"; exit 1 ;;
esac''')
    res = subprocess.run(["bash", str(tests / "run")], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}"))
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-3:]
    assert last[0] == "== tests/run: the run: 3 failed, 800 passed, 2 skipped in 900s (exit 1)", res.stdout
    assert last[1].startswith("== tests/run: the re-run of its failed tests (zfs-fuse restarted 1 time(s)): "
                              "3 passed in 1s"), res.stdout
    assert last[2] == "== tests/run: PASSED (the re-run decides)", res.stdout


def test_the_suite_leaves_its_summary_for_tests_run(tmp_path):
    summary = tmp_path / "summary"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          "tests/unit/test_roots.py"], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, KVM_TEST_SUMMARY=str(summary)))
    assert res.returncode == 0, res.stdout
    text = summary.read_text()
    assert re.match(r"\d+ passed in \d+s \(exit 0\)\n\Z", text), text


def test_a_pool_of_a_run_that_goes_on_or_of_nobody_is_never_destroyed(tmp_path, monkeypatch):
    from tests import testpools
    monkeypatch.setenv("KVM_TEST_POOL_RECORDS", str(tmp_path / "records"))
    calls = []
    monkeypatch.setattr(testpools.subprocess, "run", lambda argv, **kw: calls.append(argv))
    with pytest.raises(RuntimeError, match="not made by the test tooling"):
        testpools.destroy("kvmtank")
    (testpools.records() / "kvmtother").write_text(f"{os.getppid()} /dev/shm/kvmtother.img\n")
    with pytest.raises(RuntimeError, match="belongs to a test run that goes on"):
        testpools.destroy("kvmtother")
    assert calls == []
