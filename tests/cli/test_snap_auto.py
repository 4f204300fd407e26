"""snap auto on a real pool: the auto-YYYYmmdd-HHMM set across every dataset of the VM, the keep
rules on snapshots whose names carry controlled dates (the rule reads the date from the name,
so a test can make last year's snapshots), only auto- snapshots pruned, --dry-run, --all, a
running VM, and the errors."""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import cmd, create_vm, datasets, destroy_dataset, one_line_error
from tests.cli.test_run import guest_up, script, wait_for

AUTO = re.compile(r"auto-\d{8}-\d{4}\Z")
NO_KEEP = ["--keep-hourly", "0", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"]


def snaps_of(ds):
    res = subprocess.run(["zfs", "list", "-H", "-o", "name", "-t", "snapshot"], capture_output=True, text=True)
    return sorted(s.split("@")[1] for s in res.stdout.split() if s.startswith(f"{ds}@"))


def take(install, env, vm, *names):
    for name in names:
        res = cmd(install, env, "snap", "c", vm, name)
        assert res.returncode == 0, res.stderr


def new_auto(names):
    """The one auto- name that looks like now (the dated ones of the tests are of 2025)."""
    found = [n for n in names if AUTO.match(n) and n >= time.strftime("auto-%Y%m%d", time.localtime(time.time() - 120))]
    assert len(found) == 1, names
    return found[0]


@pytest.fixture
def web(install, env, pool):
    create_vm(install, env, "web", "--disk-size", "4M")
    return f"{pool}/kvm/vm/web"


def test_auto_takes_a_set_and_prunes_by_day_keeping_other_snapshots(install, env, web):
    dated = ["auto-20250101-0100", "auto-20250101-2300", "auto-20250102-1200", "auto-20250109-0800"]
    take(install, env, "web", "mine", *dated, "auto-weekly-by-hand", "vmsend-20250101-0000-1")
    res = cmd(install, env, "snap", "auto", "web", *NO_KEEP, "--keep-daily", "3")
    assert res.returncode == 0, res.stderr
    now = new_auto(snaps_of(web))
    # daily buckets, newest first: today's (the new one), 9 Jan, 2 Jan; 1 Jan is the fourth
    assert snaps_of(web) == sorted(["mine", "auto-weekly-by-hand", "vmsend-20250101-0000-1", now,
                                    "auto-20250109-0800", "auto-20250102-1200"])
    assert res.stdout.splitlines() == [f"created web@{now}", "destroyed web@auto-20250101-0100",
                                       "destroyed web@auto-20250101-2300"]


def test_monthly_and_weekly_rules_keep_the_newest_of_their_bucket(install, env, web):
    take(install, env, "web", "auto-20250301-0000", "auto-20250315-0000", "auto-20250331-2359",
         "auto-20250407-0000", "auto-20250409-0000")  # 7 and 9 April: one ISO week
    res = cmd(install, env, "snap", "a", "web", *NO_KEEP, "--keep-monthly", "2", "--keep-weekly", "2")
    assert res.returncode == 0, res.stderr
    now = new_auto(snaps_of(web))
    # monthly: now, April (the 9th); weekly: now, the week of 7-9 April (the 9th): March goes
    assert snaps_of(web) == sorted([now, "auto-20250409-0000"])


def test_the_set_covers_every_dataset_of_the_vm(install, env, pool, web):
    ext = f"{pool}/ext"
    destroy_dataset(ext)
    subprocess.run(["zfs", "create", ext], check=True)
    try:
        Path(f"/{ext}/disk").write_bytes(b"ext")
        with open(Path(f"/{web}") / "set.conf", "a") as fh:
            fh.write(f'Disk="/{ext}/disk"\n')
        take(install, env, "web", "auto-20250101-0000")
        res = cmd(install, env, "snap", "auto", "web", *NO_KEEP)
        assert res.returncode == 0, res.stderr
        now = new_auto(snaps_of(web))
        assert snaps_of(web) == snaps_of(ext) == [now], "taken on both, the old one destroyed on both"
        data = json.loads(cmd(install, env, "snap", "list", "web", "--json").stdout)
        assert [(s["name"], s["complete"]) for s in data] == [(now, True)]
    finally:
        destroy_dataset(ext)


def test_dry_run_says_what_it_would_create_and_destroy_and_changes_nothing(install, env, web):
    take(install, env, "web", "auto-20250101-0000", "auto-20250102-0000", "keep-me")
    before = snaps_of(web)
    res = cmd(install, env, "snap", "auto", "web", *NO_KEEP, "--keep-daily", "2", "--dry-run")
    assert res.returncode == 0, res.stderr
    would = [line for line in res.stdout.splitlines() if line.startswith("would ")]
    assert len(would) == 2 and re.fullmatch(r"would create web@auto-\d{8}-\d{4}", would[0]), res.stdout
    assert would[1] == "would destroy web@auto-20250101-0000"
    assert snaps_of(web) == before


def test_a_run_in_a_minute_that_has_its_set_takes_nothing_and_still_prunes(install, env, web):
    from kvm.storage.snapauto import name_at
    t = time.time()
    minutes = sorted({name_at(t + 60 * k) for k in range(4)})  # this one and the next: the run falls in one
    take(install, env, "web", "auto-20250101-0000", *minutes)
    res = cmd(install, env, "snap", "auto", "web", *NO_KEEP)
    assert res.returncode == 0, res.stderr
    if res.stdout.startswith("created"):
        pytest.skip("the machine is so slow that the run came more than 3 minutes later")
    assert "exists already (one auto- snapshot a minute): not taken again" in res.stderr
    (left,) = snaps_of(web)
    assert left in minutes
    assert sorted(res.stdout.splitlines()) == sorted(f"destroyed web@{n}" for n in
                                                     ["auto-20250101-0000", *minutes] if n != left)


def test_a_cloned_auto_snapshot_is_kept_with_a_warning(install, env, web):
    take(install, env, "web", "auto-20250101-0000")
    assert cmd(install, env, "vmclone", "web", "copy", "-y", "--snapshot", "auto-20250101-0000").returncode == 0
    res = cmd(install, env, "snap", "auto", "web", *NO_KEEP)
    assert res.returncode == 0, res.stderr
    assert "snap: web: warning: keeping auto-20250101-0000: clones depend on it" in res.stderr
    assert "auto-20250101-0000" in snaps_of(web)


def test_all_does_every_vm_and_reports_the_one_that_fails(install, env, pool):
    for name in ("a1", "a2", "a3"):
        create_vm(install, env, name, "--disk-size", "4M")
    (install / "vm" / "a2" / "set.conf").write_text('VMrom="uefi"\nCores="many"\n')
    res = cmd(install, env, "snap", "auto", "--all")
    assert res.returncode == 1
    assert [line.split("@")[0] for line in res.stdout.splitlines()] == ["created a1", "created a3"]
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("snap: a2: ")
    assert snaps_of(f"{pool}/kvm/vm/a2") == []
    assert len(snaps_of(f"{pool}/kvm/vm/a1")) == len(snaps_of(f"{pool}/kvm/vm/a3")) == 1


def test_a_running_vm_is_snapshotted_with_a_warning_and_keeps_running(install, env, web):
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    try:
        wait_for(lambda: guest_up(install, env), what="the guest")
        take(install, env, "web", "auto-20250101-0000")
        res = cmd(install, env, "snap", "auto", "web", *NO_KEEP)
        assert res.returncode == 0, res.stderr
        assert "snap: web: warning: the VM is running: its auto- snapshot is crash-consistent" in res.stderr
        assert snaps_of(web) == [new_auto(snaps_of(web))]
        assert guest_up(install, env)
    finally:
        assert cmd(install, env, "stop", "-f", "web").returncode == 0


@pytest.mark.parametrize("args, needle", [
    (["auto"], "auto needs a VM name or --all"),
    (["auto", "web", "--all"], "auto needs a VM name or --all (not both)"),
    (["auto", "web", "--keep-daily", "-1"], "web: --keep-daily '-1' must be 0 or more"),
    (["auto", "web", "s1"], "web: auto names its snapshots itself"),
    (["c", "--all"], "create needs one VM name (--all is for auto only)"),
])
def test_bad_usage_is_one_line_and_changes_nothing(install, env, web, args, needle):
    take(install, env, "web", "auto-20250101-0000")
    before = snaps_of(web)
    one_line_error(cmd(install, env, "snap", *args), needle, status=2)
    assert snaps_of(web) == before


def test_an_unknown_vm_and_a_non_root_user_are_refused(install, env, pool, web):
    before = datasets(pool)
    one_line_error(cmd(install, env, "snap", "auto", "nosuch"), "snap: nosuch:", status=6)
    from tests.conftest import as_nobody
    one_line_error(as_nobody(env, [str(install / "snap"), "auto", "--all"], install), "you need to be root")
    assert datasets(pool) == before
