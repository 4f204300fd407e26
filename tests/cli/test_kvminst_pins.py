"""kvminst upgrades never approve a changed pin, only --repin (or a first pin) writes SHA256SUMS
entries; a killed kvminst's temp and probe files are cleaned by the next one."""

import subprocess
from pathlib import Path

from tests.conftest import kvm


def manifest(root):
    return dict(reversed(line.split("  ", 1)) for line in (root / "firmware" / "SHA256SUMS").read_text().splitlines())


def test_an_upgrade_does_not_approve_a_changed_pin(install, pool, env):
    before = manifest(install)
    (install / "firmware" / "BHYVE_UEFI.fd").write_bytes(b"modified by someone")
    assert kvm(env, "kvminst", "-p", pool, "-y").returncode == 0
    assert manifest(install) == before
    res = kvm(env, "kvminst", "--verify", "-p", pool)
    assert res.returncode == 1 and f"{install}/firmware/BHYVE_UEFI.fd: FAILED" in res.stdout


def test_leftovers_of_a_killed_kvminst_are_removed_and_never_pinned(install, pool, env):
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftovers = [install / "firmware" / ".BHYVE_UEFI.fd.k2j3h4.tmp", install / ".start.ab12cd.tmp",
                 install / "templates" / ".run.j2.zz9.tmp", install / "rc.d" / ".kvm.q1.tmp",
                 install / f".kvminst-probe-{dead.pid}", Path(f"/{pool}") / f".kvminst-probe-{dead.pid}"]
    for path in leftovers:
        path.write_bytes(b"half-written")
    mine = install / "firmware" / "notes.txt"  # not ours: kept, and never pinned either
    mine.write_text("my notes")
    assert kvm(env, "kvminst", "-p", pool, "-y").returncode == 0
    assert [p for p in leftovers if p.exists()] == []
    assert mine.exists()
    assert sorted(manifest(install)) == ["BHYVE_UEFI.fd", "BHYVE_UEFI_VARS.fd", "grub-bhyve"]


def test_a_newly_pinned_file_gets_its_entry_and_the_others_stay(install, pool, env):
    fw = install / "firmware"
    (fw / "grub-bhyve").unlink()
    kept = {k: v for k, v in manifest(install).items() if k != "grub-bhyve"}
    (fw / "SHA256SUMS").write_text("".join(f"{v}  {k}\n" for k, v in kept.items()))
    (fw / "BHYVE_UEFI.fd").write_bytes(b"changed")
    res = kvm(env, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0 and "pinned firmware grub-bhyve" in res.stderr
    now = manifest(install)
    assert {k: now[k] for k in kept} == kept and "grub-bhyve" in now
    res = kvm(env, "kvminst", "--verify", "-p", pool)
    assert "grub-bhyve: OK" in res.stdout and "BHYVE_UEFI.fd: FAILED" in res.stdout


def test_a_pin_missing_from_the_manifest_is_reported_not_approved(install, pool, env):
    fw = install / "firmware"
    kept = {k: v for k, v in manifest(install).items() if k != "BHYVE_UEFI_VARS.fd"}
    (fw / "SHA256SUMS").write_text("".join(f"{v}  {k}\n" for k, v in kept.items()))
    res = kvm(env, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0 and "BHYVE_UEFI_VARS.fd is pinned but not in SHA256SUMS" in res.stderr
    assert manifest(install) == kept
