"""What commands say comes from the platform (its service manager, its install hints) and the
hypervisor (its name, console, options) in use: on FreeBSD with bhyve byte for byte what kvm
always said (golden files, tests/unit/golden/freebsd/), on Linux with qemu none of FreeBSD's
words (rc.d, sysrc, cu, nmdm, bhyve's flags where qemu reads none of them)."""

import os
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SIM_BIN, cmd, destroy_dataset, kvm

GOLDEN = REPO / "tests" / "unit" / "golden" / "freebsd"
# words a Linux admin with qemu must not be told (FreeBSD's tools and paths, bhyve where qemu runs)
FREEBSD_WORDS = re.compile(r"sysrc|/usr/local/etc/rc\.d|rc\.d script|\bcu -l|nmdm|bhyve|rc\.conf|\bpkg install")
ANSWERS = "\n" * 12   # Enter at every question of an interactive vmcreate: its defaults


def linux(env):
    """The env of a Linux host with qemu: no FreeBSD stand-in on PATH."""
    path = ":".join(p for p in env["PATH"].split(":") if p != str(SIM_BIN))
    return {**env, "KVM_PLATFORM": "linux", "KVM_HYPERVISOR": "qemu", "KVM_ACCEL": "tcg", "PATH": path,
            "COLUMNS": "100"}


def freebsd(env):
    return {**env, "COLUMNS": "100"}


def neutral(text, env, root=None, pool=None):
    """A command's output with what differs between runs replaced: the root, the pool, the test's
    stand-ins for system folders, the checkout, the interpreter."""
    if root:
        text = text.replace(str(root), "ROOT")
    if pool:
        text = text.replace(pool, "POOL")
    sysroot = str(Path(env["KVM_RUN_DIR"]).parent)
    return text.replace(sysroot, "SYSROOT").replace(str(REPO), "REPO").replace(sys.prefix, "PREFIX")


def golden(name, text):
    """text must equal the golden file; GOLDEN_UPDATE=1 rewrites it instead (review with git diff)."""
    path = GOLDEN / name
    if os.environ.get("GOLDEN_UPDATE") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from {path}:\n{text}"


def words(text):
    return sorted(set(FREEBSD_WORDS.findall(text)))


@pytest.fixture
def fresh(pool, env):
    """No install on the pool: kvminst's own output is the test's."""
    destroy_dataset(f"{pool}/kvm")
    yield
    destroy_dataset(f"{pool}/kvm")


def test_kvminst_freebsd_golden_linux_words(pool, env, fresh):
    res = kvm(freebsd(env), "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    out = neutral(res.stdout + res.stderr, env, f"/{pool}/kvm", pool)
    # whether kvm's modules needed compiling depends on the checkout, not on the host's words
    golden("kvminst.out", "".join(line for line in out.splitlines(keepends=True)
                                  if not line.startswith("compiled ")))
    destroy_dataset(f"{pool}/kvm")
    res = kvm(linux(env), "kvminst", "-p", pool, "-y")
    assert res.returncode == 0, res.stderr
    said = res.stdout + res.stderr
    assert words(said) == [], said
    assert f"/{pool}/kvm/dorc NAME --enable" in said, said


def test_help_freebsd_golden_linux_words(env):
    for command in ("start", "stop", "dorc", "vmcreate"):
        res = kvm(freebsd(env), "help", command)
        assert res.returncode == 0, res.stderr
        golden(f"help-{command}.out", res.stdout)
    for command in ("start", "stop"):
        said = kvm(linux(env), "help", command).stdout
        assert words(said) == [], said
    assert "preRun, qemu, postRun" in kvm(linux(env), "help", "start").stdout


def test_vmcreate_set_conf_run_and_prompts(install, env):
    """Interactive vmcreate's questions, set.conf and run on each host."""
    res = cmd(install, freebsd(env), "vmcreate", "web", input=ANSWERS)
    assert res.returncode == 0, res.stderr
    golden("vmcreate-web.out", neutral(res.stdout + res.stderr, env, install))
    golden("set.conf.web", (install / "vm" / "web" / "set.conf").read_text())
    golden("run.web", (install / "vm" / "web" / "run").read_text())

    res = cmd(install, linux(env), "vmcreate", "lin", input=ANSWERS)
    assert res.returncode == 0, res.stderr
    assert words(res.stdout + res.stderr) == [], res.stderr
    conf = (install / "vm" / "lin" / "set.conf").read_text()
    run = (install / "vm" / "lin" / "run").read_text()
    assert words(conf) == [] and words(run) == [], conf + run
    assert "./console lin" in conf and "qemu" in conf


def test_dorc_dry_run_names_what_it_writes(install, env, sysroot):
    assert cmd(install, env, "vmcreate", "web", "-y").returncode == 0
    res = cmd(install, freebsd(env), "dorc", "web", "-y", "-n")
    assert res.returncode == 0, res.stderr
    golden("dorc-n.out", neutral(res.stdout + res.stderr, env, install))
    unitdir = sysroot / "units"
    unitdir.mkdir()
    res = cmd(install, {**linux(env), "KVM_UNITDIR": str(unitdir)}, "dorc", "web", "-y", "-n")
    assert res.returncode == 0, res.stderr
    said = res.stdout + res.stderr
    assert words(said) == [] and f"would install the systemd unit {unitdir}/web.service" in said, said
