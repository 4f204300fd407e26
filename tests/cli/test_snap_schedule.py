"""The snapshot schedule kvminst installs: a periodic(8) daily script on a bhyve host, off until
daily_kvm_snap_enable=YES; a cron.d file on a qemu (Linux) host, its line commented out. Both in
the test's own folders (KVM_PERIODIC_DIR, KVM_CRON_DIR): never the host's /etc or /usr/local/etc."""

import os
import re
import stat
import subprocess
from pathlib import Path

from kvm.host import runfiles
from tests.conftest import create_vm, destroy_dataset, kvm


def periodic(sysroot):
    return sysroot / "periodic" / "daily" / "150.kvm-snap"


def cron(sysroot):
    return sysroot / "cron.d" / "kvm-snap"


def snaps_of(ds):
    res = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot"], capture_output=True, text=True)
    return [s.split("@")[1] for s in res.stdout.split() if s.startswith(f"{ds}@")]


def run_periodic(sysroot, env, **conf):
    """The script as periodic(8) runs it, with periodic.conf's variables in its environment (no
    /etc/defaults/periodic.conf on Linux to read them from)."""
    return subprocess.run(["/bin/sh", str(periodic(sysroot))], env=dict(env, **conf), capture_output=True,
                          text=True, timeout=120)


def test_the_periodic_script_is_off_until_enabled_then_snapshots_every_vm(install, env, pool, sysroot):
    script = periodic(sysroot)
    assert stat.S_IMODE(script.stat().st_mode) == 0o755 and not cron(sysroot).exists()
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "sysrc -f /etc/periodic.conf daily_kvm_snap_enable=YES" in text
    assert f': ${{daily_kvm_snap_root:="{install}"}}' in text
    create_vm(install, env, "web", "--disk-size", "4M")
    res = run_periodic(sysroot, env)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    assert snaps_of(f"{pool}/kvm/vm/web") == []
    res = run_periodic(sysroot, env, daily_kvm_snap_enable="YES", daily_kvm_snap_keep_monthly="2")
    assert res.returncode == 1, (res.stdout, res.stderr)  # periodic(8): 1 = there is a report
    (taken,) = snaps_of(f"{pool}/kvm/vm/web")
    assert re.fullmatch(r"auto-\d{8}-\d{4}", taken) and f"created web@{taken}" in res.stdout


def test_the_periodic_script_reports_a_failure_as_an_error(install, env, pool, sysroot):
    create_vm(install, env, "web", "--disk-size", "4M")
    res = run_periodic(sysroot, env, daily_kvm_snap_enable="YES", daily_kvm_snap_keep_daily="-3")
    assert res.returncode == 3 and "--keep-daily '-3' must be 0 or more" in res.stdout
    assert snaps_of(f"{pool}/kvm/vm/web") == []


def test_kvminst_says_how_to_enable_it_and_an_upgrade_rewrites_it(install, env, pool, sysroot):
    periodic(sysroot).write_text("#!/bin/sh\necho edited\n")
    res = kvm(env, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    assert f"snapshot schedule {periodic(sysroot)} written, off (enable: sysrc -f /etc/periodic.conf " \
           "daily_kvm_snap_enable=YES)" in res.stderr
    assert "daily_kvm_snap_enable" in periodic(sysroot).read_text()


def test_a_dry_run_writes_no_schedule(install, env, pool, sysroot):
    periodic(sysroot).unlink()
    res = kvm(env, "kvminst", "-p", pool, "-y", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert str(periodic(sysroot)) in res.stdout and not periodic(sysroot).exists()


def test_on_linux_a_cron_file_commented_out_that_kvminst_never_rewrites(install, env, pool, sysroot):
    qemu = dict(env, KVM_HYPERVISOR="qemu", KVM_PLATFORM="linux")
    res = kvm(qemu, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    path = cron(sysroot)
    assert f"snapshot schedule {path} written, off (enable: remove the # of its last line)" in res.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert all(line.startswith("#") for line in lines), "off by default"
    entry = lines[-1][1:].split(None, 6)  # m h dom mon dow user command
    assert entry[:6] == ["17", "*", "*", "*", "*", "root"]
    assert entry[6].startswith(f'"{install}/snap" auto --all --keep-hourly 24')
    create_vm(install, env, "web", "--disk-size", "4M")
    done = subprocess.run(["/bin/sh", "-c", entry[6]], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # the line cron would run works
    assert len(snaps_of(f"{pool}/kvm/vm/web")) == 1
    path.write_text(path.read_text().replace("\n#17 ", "\n17 "))  # the admin enables it
    enabled = path.read_text()
    res = kvm(qemu, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0 and "kept as it is" in res.stderr
    assert path.read_text() == enabled


def test_no_cron_folder_no_cron_file(install, env, pool, sysroot):
    os.rmdir(sysroot / "cron.d")
    res = kvm(dict(env, KVM_HYPERVISOR="qemu", KVM_PLATFORM="linux"), "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    assert "(is cron installed?): no snapshot schedule written" in res.stderr
    assert not (sysroot / "cron.d").exists()


def test_uninstall_removes_our_schedule_and_leaves_anothers(install, env, pool, sysroot):
    cron(sysroot).write_text("# the admin's own cron file\n")
    res = kvm(env, "kvminst", "--uninstall", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    assert f"It also removes the snapshot schedule {periodic(sysroot)}." in res.stderr
    assert not periodic(sysroot).exists()
    assert cron(sysroot).read_text() == "# the admin's own cron file\n"


def second_root(scratch_pool, env):
    pool = scratch_pool(128)
    return pool, Path(f"/{pool}/kvm")


def test_a_second_root_gets_a_schedule_of_its_own_and_is_told(install, env, pool, sysroot, scratch_pool):
    """Issue 20.3: the second root's kvminst took the first root's periodic script over (and on
    Linux was told nothing while it got no schedule)."""
    first = periodic(sysroot).read_text()
    pool2, root2 = second_root(scratch_pool, env)
    try:
        res = kvm(env, "kvminst", "-p", pool2, "-y")
        assert res.returncode == 0, res.stderr
        rid = runfiles.root_id(root2)
        own = periodic(sysroot).with_name(f"150.kvm-snap-{rid}")
        var = f"daily_kvm_snap_{rid}"
        assert f"snapshot schedule {own} written, off (enable: sysrc -f /etc/periodic.conf {var}_enable=YES); " \
               f"{periodic(sysroot)} is the schedule of {install}" in res.stderr
        assert periodic(sysroot).read_text() == first, "the first root's script is left alone"
        text = own.read_text()
        assert f': ${{{var}_root:="{root2}"}}' in text and "daily_kvm_snap_enable" not in text
        assert subprocess.run(["sh", "-n", str(own)]).returncode == 0
        create_vm(root2, env, "db", "--disk-size", "4M")
        done = subprocess.run(["/bin/sh", str(own)], env=dict(env, **{f"{var}_enable": "YES"}), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 1 and "created db@auto-" in done.stdout, (done.stdout, done.stderr)
        assert len(snaps_of(f"{pool2}/kvm/vm/db")) == 1
        res = kvm(env, "kvminst", "-p", pool2, "-y")  # an upgrade of either root keeps to its own file
        assert res.returncode == 0 and f"snapshot schedule {own} written" in res.stderr, res.stderr
        res = kvm(env, "kvminst", "-p", pool, "-y")
        assert res.returncode == 0 and f"snapshot schedule {periodic(sysroot)} written" in res.stderr, res.stderr
        res = kvm(env, "kvminst", "--uninstall", "-p", pool2, "-y")
        assert res.returncode == 0 and f"removes the snapshot schedule {own}." in res.stderr, res.stderr
        assert not own.exists() and periodic(sysroot).read_text() == first
    finally:
        destroy_dataset(f"{pool2}/kvm")


def test_on_linux_a_second_root_gets_a_cron_file_of_its_own(install, env, pool, sysroot, scratch_pool):
    qemu = dict(env, KVM_HYPERVISOR="qemu", KVM_PLATFORM="linux")
    assert kvm(qemu, "kvminst", "-p", pool, "-y").returncode == 0
    first = cron(sysroot).read_text()
    pool2, root2 = second_root(scratch_pool, env)
    try:
        res = kvm(qemu, "kvminst", "-p", pool2, "-y")
        assert res.returncode == 0, res.stderr
        own = cron(sysroot).with_name(f"kvm-snap-{runfiles.root_id(root2)}")
        assert f"snapshot schedule {own} written, off (enable: remove the # of its last line); " \
               f"{cron(sysroot)} is the schedule of {install}" in res.stderr
        assert re.fullmatch(r"[A-Za-z0-9_-]+", own.name), "a name Debian's cron reads"
        assert f'"{root2}/snap" auto --all' in own.read_text() and cron(sysroot).read_text() == first
        res = kvm(qemu, "kvminst", "-p", pool2, "-y")
        assert res.returncode == 0 and f"snapshot schedule {own} kept as it is" in res.stderr
    finally:
        destroy_dataset(f"{pool2}/kvm")
