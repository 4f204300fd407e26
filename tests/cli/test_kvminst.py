"""kvminst end to end on a real pool, as a user runs it."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cmd, datasets, kvm, nobody_env, snapshot_tree


def zget(prop, name):
    return subprocess.run(["zfs", "get", "-H", "-o", "value,source", prop, name],
                          capture_output=True, text=True).stdout.strip()


def test_install_creates_datasets_commands_and_pins_firmware(install, pool, env, sysroot):
    root = install
    assert {f"{pool}/kvm", f"{pool}/kvm/vm"} <= datasets(pool)
    assert zget("kvm:root", f"{pool}/kvm") == "yes\tlocal"
    for name in ("start", "stop", "status", "insert", "eject", "snap", "dorc", "vmcreate", "vminfo",
                 "vmlist", "vmdestroy", "vmrename", "console"):
        res = cmd(root, env, name, "--help")
        assert res.returncode == 0, (name, res.stderr)
        assert "usage:" in res.stdout
    functions = (root / "functions").read_text()
    for helper in ("CreateIF()", "DestroyIF()", "SetResolv()", "SetDefaultRoute()"):
        assert helper in functions
    sums = (root / "firmware" / "SHA256SUMS").read_text().splitlines()
    code = (root / "firmware" / "BHYVE_UEFI.fd").read_bytes()
    assert code == (sysroot / "firmware" / "BHYVE_UEFI.fd").read_bytes()
    assert f"{hashlib.sha256(code).hexdigest()}  BHYVE_UEFI.fd" in sums
    assert (root / "firmware" / "grub-bhyve").exists()
    assert "@KVM_ROOT@" not in (root / "rc.d" / "kvm").read_text()
    assert f'kvm_root:="{root}"' in (root / "rc.d" / "kvm").read_text()


def test_functions_file_is_valid_sh(install):
    res = subprocess.run(["sh", "-n", str(install / "functions")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_second_run_upgrades_scripts_and_leaves_vm_alone(install, pool, env, sysroot):
    root = install
    (root / "vm" / "keep").mkdir()
    (root / "vm" / "keep" / "set.conf").write_text('VMrom="uefi"\n')
    before = snapshot_tree(root / "vm")
    (root / "start").write_text("#!/bin/sh\necho tampered\n")
    pinned = (root / "firmware" / "BHYVE_UEFI.fd").read_bytes()
    (sysroot / "firmware" / "BHYVE_UEFI.fd").write_bytes(b"UEFI-CODE-v2\n")
    res = kvm(env, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    assert "upgraded" in res.stdout
    assert snapshot_tree(root / "vm") == before
    assert "tampered" not in (root / "start").read_text()
    # pinning protects VMs from a firmware package upgrade: not re-pinned without --repin
    assert (root / "firmware" / "BHYVE_UEFI.fd").read_bytes() == pinned
    res = kvm(env, "kvminst", "-p", pool, "-y", "--repin")
    assert res.returncode == 0, res.stderr
    assert (root / "firmware" / "BHYVE_UEFI.fd").read_bytes() == b"UEFI-CODE-v2\n"


def test_missing_firmware_names_the_packages_and_goes_on(pool, env, sysroot, install):
    for f in (sysroot / "firmware").iterdir():
        f.unlink()
    for f in (install / "firmware").iterdir():
        f.unlink()
    env["KVM_GRUB_BHYVE"] = "/nonexistent/grub-bhyve"
    res = kvm(env, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    assert "pkg install edk2-bhyve grub2-bhyve" in res.stderr


def test_unknown_pool_is_one_line_and_creates_nothing(pool, env):
    before = datasets(pool)
    res = kvm(env, "kvminst", "-p", "nosuchpool", "-y")
    assert res.returncode == 6
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "pool 'nosuchpool' does not exist" in res.stderr
    assert datasets(pool) == before


def test_existing_foreign_dataset_is_refused(scratch_pool, env):
    p = scratch_pool()
    subprocess.run(["zfs", "create", f"{p}/kvm"], check=True)
    Path(f"/{p}/kvm/precious").write_text("data")
    res = kvm(env, "kvminst", "-p", p, "-y")
    assert res.returncode == 1
    assert f"dataset {p}/kvm exists and is not a kvm install" in res.stderr
    assert datasets(p) == {f"{p}/kvm"}
    assert sorted(x.name for x in Path(f"/{p}/kvm").iterdir()) == ["precious"]


def test_read_only_pool_is_refused(scratch_pool, env):
    p = scratch_pool()
    subprocess.run(["zfs", "set", "readonly=on", p], check=True)
    res = kvm(env, "kvminst", "-p", p, "-y")
    assert res.returncode == 1
    assert "read-only" in res.stderr
    assert datasets(p) == set()


def test_full_pool_is_refused(scratch_pool, env):
    p = scratch_pool(96)
    subprocess.run(["dd", "if=/dev/zero", f"of=/{p}/fill", "bs=1M"], capture_output=True)
    res = kvm(env, "kvminst", "-p", p, "-y")
    assert res.returncode == 1
    assert "bytes available" in res.stderr
    assert datasets(p) == set()


def test_failure_after_creating_leaves_no_dataset(scratch_pool, env):
    p = scratch_pool()
    subprocess.run(["zfs", "set", "mountpoint=none", p], check=True)
    res = kvm(env, "kvminst", "-p", p, "-y")
    assert res.returncode == 1
    assert "has no mountpoint" in res.stderr
    assert datasets(p) == set(), "a failed kvminst left a dataset behind"


def test_not_root_is_refused(pool, env):
    import sys
    argv = nobody_env(env) + [sys.executable, "-m", "kvm", "kvminst", "-p", pool, "-y"]
    res = subprocess.run(argv, env=env, capture_output=True, text=True, cwd="/")
    assert res.returncode == 1, res.stderr
    assert "kvminst: you need to be root" in res.stderr
    assert f"{pool}/kvm" not in datasets(pool)


def test_pool_prompt_lists_pools(pool, env):
    res = kvm(env, "kvminst", input="\n")
    assert pool in res.stderr
    res = kvm(env, "kvminst", input="")
    assert res.returncode == 2
    assert res.stderr.rstrip().endswith("(stdin closed): -p POOL names it"), res.stderr
    res = kvm(env, "kvminst", "-p", pool, input="")
    assert res.returncode == 2 and res.stderr.rstrip().endswith(
        f"no answer to 'Install kvm into {pool}/kvm (y/N)?' (stdin closed): -y answers yes"), res.stderr
    assert f"{pool}/kvm" not in datasets(pool)


def test_dry_run_prints_and_changes_nothing(pool, env):
    before = datasets(pool)
    res = kvm(env, "kvminst", "-p", pool, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"zfs create -o kvm:root=yes {pool}/kvm" in res.stdout
    assert datasets(pool) == before


def test_root_is_found_from_marked_dataset(install, env, tmp_path):
    # inside the install its root is found, whatever other installs the host has (other test
    # workers make and remove theirs all the time, so what is marked changes between two calls)
    res = kvm(env, "vmlist", cwd=install / "vm")
    assert res.returncode == 0, res.stderr
    # outside every install: ours alone is found, or with others the command asks for --root
    res = kvm(env, "vmlist", cwd=tmp_path)
    if res.returncode != 0:
        one_line = res.stderr.strip()
        assert res.returncode == 2 and "several kvm installs found" in one_line and str(install) in one_line
    env["KVM_ROOT"] = str(tmp_path)
    res = kvm(env, "vmlist")
    assert res.returncode == 6
    assert "is not a kvm install root" in res.stderr


def test_verify_checks_the_pins_against_sha256sums(install, pool, env):
    res = kvm(env, "kvminst", "--verify", "-p", pool)
    assert res.returncode == 0, res.stderr
    fw = install / "firmware"
    assert res.stdout.splitlines() == [f"{fw}/{name}: OK" for name in
                                       ("BHYVE_UEFI.fd", "BHYVE_UEFI_VARS.fd", "grub-bhyve")]
    (fw / "BHYVE_UEFI.fd").write_bytes(b"corrupt")
    (fw / "grub-bhyve").unlink()
    res = kvm(env, "kvminst", "--verify", "-p", pool)
    assert res.returncode == 1
    assert f"{fw}/BHYVE_UEFI.fd: FAILED" in res.stdout and f"{fw}/grub-bhyve: MISSING" in res.stdout
    assert f"{fw}/BHYVE_UEFI_VARS.fd: OK" in res.stdout
    one_line = res.stderr.strip()
    assert "2 pinned file(s) do not match" in one_line and "--repin" in one_line
    assert kvm(env, "kvminst", "-p", pool, "-y", "--repin").returncode == 0
    assert kvm(env, "kvminst", "--verify", "-p", pool).returncode == 0
    (fw / "SHA256SUMS").unlink()
    res = kvm(env, "kvminst", "--verify", "-p", pool)
    assert res.returncode == 6 and "nothing pinned to check" in res.stderr


@pytest.mark.parametrize("action", ["--verify", "--uninstall"])
def test_verify_and_uninstall_of_a_pool_without_kvm(install, pool, env, action):
    before = datasets(pool)
    res = kvm(env, "kvminst", action, "-y", "-p", "nosuchpool")
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1, res.stderr
    assert "no kvm install on pool 'nosuchpool'" in lines[0]
    assert datasets(pool) == before


def test_the_kvm_umbrella_takes_root_before_or_after_the_command(install, env, tmp_path):
    from tests.conftest import create_vm
    create_vm(install, env, "web")
    expected = cmd(install, env, "vmlist", "-H").stdout
    env = dict(env, KVM_ROOT=str(tmp_path))  # not a root: only --root can point at the install
    assert expected.startswith("web\tstopped")
    for argv in (["--root", install, "vmlist", "-H"], [f"--root={install}", "vmlist", "-H"],
                 ["vmlist", "--root", install, "-H"], ["--debug", "--root", install, "vmlist", "-H"]):
        res = kvm(env, *argv, cwd=tmp_path)
        assert (res.returncode, res.stdout) == (0, expected), (argv, res.stderr)
    assert kvm(env, "help", "start").stdout.startswith("usage: start ")
    res = kvm(env, "--root", install, "vmlsit")
    assert res.returncode == 2 and "unknown command 'vmlsit'" in res.stderr


def test_uninstall_refuses_while_a_vm_runs_then_removes_everything(install, pool, env, sysroot):
    from tests.conftest import create_vm
    from tests.cli.test_run import guest_up, script, status, wait_for
    create_vm(install, env, "web")
    assert cmd(install, env, "dorc", "web", "-y", "--enable").returncode == 0
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    res = kvm(env, "kvminst", "--uninstall", "-p", pool, "-y")
    assert res.returncode == 8 and "VMs still running: web" in res.stderr
    assert f"{pool}/kvm/vm/web" in datasets(pool)
    assert cmd(install, env, "stop", "web").returncode == 0
    res = kvm(env, "kvminst", "--uninstall", "-p", pool, input="n\n")
    assert res.returncode == 1 and f"{pool}/kvm" in datasets(pool)
    assert "It also removes the rc.d script" in res.stderr
    res = kvm(env, "kvminst", "--uninstall", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    assert f"{pool}/kvm" not in datasets(pool)
    assert not (sysroot / "rc.d" / "web").exists()
    assert "web_enable" not in (sysroot / "rc.conf").read_text()


def test_a_plain_pip_install_carries_everything_kvminst_needs(pool, env, tmp_path):
    """`pip install .` (not editable): templates, functions and rc.d/kvm come from PREFIX/share/kvm."""
    import importlib.util
    import os
    import shutil
    import sys

    from tests.conftest import REPO, create_vm, destroy_dataset
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "tests", "bench", "__pycache__",
                                                            "*.egg-info", "build", ".pytest_cache", ".hypothesis"))
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True, capture_output=True)
    res = subprocess.run([str(prefix / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert res.returncode == 0, res.stderr
    shutil.rmtree(src)  # nothing may still come from the source folder
    # compiled, even on a host that sets PYTHONDONTWRITEBYTECODE (issue 25: each command would compile again)
    package = next((prefix / "lib").glob("python3*/site-packages/kvm"))
    modules = sorted(package.rglob("*.py"))
    assert len(modules) > 50 and all(Path(importlib.util.cache_from_source(m)).is_file() for m in modules)
    assert (prefix / "share" / "kvm" / "templates" / "set.conf.j2").is_file()
    assert (prefix / "share" / "man" / "man8" / "kvm.8").is_file()  # `man kvm` with MANPATH at PREFIX
    env = dict(env)
    env.pop("PYTHONPATH")  # the installed copy, not the checkout
    where = subprocess.run([str(prefix / "bin" / "python"), "-c", "import kvm; print(kvm.__file__)"],
                           env=env, capture_output=True, text=True, cwd="/")
    assert where.stdout.startswith(str(prefix / "lib")), where
    schemas = subprocess.run([str(prefix / "bin" / "python"), "-c", "import os, kvm.cli.jsonout as j; "
                              "print(sorted(os.listdir(j.schema_dir())))"], env=env, capture_output=True, text=True, cwd="/")
    assert "'vminfo.json'" in schemas.stdout and "'error.json'" in schemas.stdout, schemas  # the --json contract
    help_ = subprocess.run([str(prefix / "bin" / "vmimport"), "--help"], env=env, capture_output=True, text=True)
    assert help_.returncode == 0 and "--from" in help_.stdout, help_.stderr  # kvm.importers is packaged
    destroy_dataset(f"{pool}/kvm")
    for cache in package.rglob("__pycache__"):  # as a checkout run as is: kvminst compiles them
        shutil.rmtree(cache)
    try:
        res = subprocess.run([str(prefix / "bin" / "kvminst"), "-p", pool, "-y"], env=env, capture_output=True,
                             text=True, cwd="/")
        assert res.returncode == 0, res.stderr
        assert f"compiled {len(modules)} of kvm's modules in {package} for {prefix}/bin/python" in res.stderr
        assert all(Path(importlib.util.cache_from_source(m)).is_file() for m in modules)
        root = Path(f"/{pool}/kvm")
        assert (root / "start").read_text().startswith(f"#!{prefix}/bin/python")
        assert "CreateIF()" in (root / "functions").read_text()
        assert f'kvm_root:="{root}"' in (root / "rc.d" / "kvm").read_text()
        d = create_vm(root, env, "web", "--disk-size", "1G")
        assert 'VMrom="uefi"' in (d / "set.conf").read_text()
        res = cmd(root, env, "start", "--dry-run", "web")
        assert res.returncode == 0, res.stderr
        assert any(line.startswith("bhyve -c 1 -m ") for line in res.stdout.splitlines()), res.stdout
    finally:
        destroy_dataset(f"{pool}/kvm")
