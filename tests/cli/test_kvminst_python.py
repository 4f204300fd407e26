"""kvminst --python (the launchers' interpreter, said in the output) and --verify/--uninstall --root."""

import os
import sys

import pytest

from tests.conftest import cmd, datasets, kvm, one_line_error, snapshot_tree

SYSTEM_PYTHON = "/usr/bin/python3"


def shebang(root, name="start"):
    return (root / name).read_text().splitlines()[0]


def test_kvminst_says_which_interpreter_the_commands_run(install, pool, env):
    res = kvm(env, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    assert f"the commands run {sys.executable}" in res.stderr
    # the suite runs from a virtualenv: moving it would break every ./NAME, and kvminst says so
    assert "warning:" in res.stderr and "--python PATH" in res.stderr
    assert shebang(install) == f"#!{sys.executable}"


def test_on_linux_the_virtualenv_warning_says_what_to_do_on_debian(install, pool, env):
    """Debian's python3 takes no pip install (PEP 668): the system's python3 is no way out there."""
    res = kvm({**env, "KVM_PLATFORM": "linux"}, "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    warning = next(line for line in res.stderr.splitlines() if "warning: the commands' interpreter" in line)
    assert "the system's python3 with kvm installed" not in warning
    assert "PEP 668" in warning and "python3 -m venv /opt/kvm && /opt/kvm/bin/pip install ." in warning
    assert "after a move run its kvminst again" in warning


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="no /usr/bin/python3")
def test_python_names_the_launchers_interpreter_and_they_run(install, pool, env):
    # the system interpreter imports kvm through PYTHONPATH (env has the checkout in it)
    res = kvm(env, "kvminst", "-p", pool, "-y", "--python", SYSTEM_PYTHON)
    assert res.returncode == 0, res.stderr
    assert f"the commands run {SYSTEM_PYTHON}" in res.stderr
    assert "warning" not in res.stderr
    for name in ("start", "vmlist", "status"):
        assert shebang(install, name) == f"#!{SYSTEM_PYTHON}"
    res = cmd(install, env, "status", "nosuch")
    assert res.returncode == 2 and res.stdout == "-1\n", res.stderr


def _bad_pythons(tmp_path, env):
    plain = tmp_path / "python-not-executable"
    plain.write_text("#!/bin/sh\n")
    failing = tmp_path / "python-without-kvm"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    return [("/nonexistent/python3", "no such executable file"),
            (str(plain), "no such executable file"),
            ("python3", "absolute path"),
            (str(failing), "cannot import kvm"),
            (str(tmp_path), "no such executable file")]


def test_a_bad_python_is_one_line_and_changes_nothing(install, pool, env, tmp_path):
    before, ds = snapshot_tree(install), datasets(pool)
    for value, needle in _bad_pythons(tmp_path, env):
        res = kvm(env, "kvminst", "-p", pool, "-y", "--python", value)
        one_line_error(res, f"--python {value}", needle, status=2)
        assert snapshot_tree(install) == before and datasets(pool) == ds


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="no /usr/bin/python3")
def test_an_interpreter_that_lacks_kvm_is_refused(install, pool, env):
    env = dict(env)
    env.pop("PYTHONPATH")  # kvminst's own interpreter has kvm installed; the system one does not
    before = snapshot_tree(install)
    res = kvm(env, "kvminst", "-p", pool, "-y", "--python", SYSTEM_PYTHON)
    one_line_error(res, SYSTEM_PYTHON, "cannot import kvm", status=2)
    assert snapshot_tree(install) == before


def test_verify_takes_root(install, env):
    res = kvm(env, "kvminst", "--verify", "--root", install)
    assert res.returncode == 0, res.stderr
    assert f"{install}/firmware/BHYVE_UEFI.fd: OK" in res.stdout
    (install / "firmware" / "BHYVE_UEFI.fd").write_bytes(b"evil")
    res = kvm(env, "kvminst", "--verify", f"--root={install}")
    assert res.returncode == 1 and f"{install}/firmware/BHYVE_UEFI.fd: FAILED" in res.stdout


def test_root_that_is_no_install_and_root_without_verify(install, env, pool, tmp_path):
    res = kvm(env, "kvminst", "--verify", "--root", tmp_path)
    one_line_error(res, str(tmp_path), "is not a kvm install root", status=6)
    before = datasets(pool)
    res = kvm(env, "kvminst", "--root", install, "-y")
    one_line_error(res, "--root goes with --verify or --uninstall", status=2)
    res = kvm(env, "kvminst", "--verify", "--root", install, "-p", pool)
    one_line_error(res, "not both", status=2)
    assert datasets(pool) == before


def test_uninstall_takes_root(install, env, pool):
    res = kvm(env, "kvminst", "--uninstall", "--root", install, "-y")
    assert res.returncode == 0, res.stderr
    assert f"{pool}/kvm" not in datasets(pool)
