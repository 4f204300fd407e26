"""cloud-init NoCloud seed: written by vmcreate --cloud-init and cloudinit NAME, read back by
xorriso (a second ISO reader): label cidata, the three files, 0600, a new instance-id each time.
The real-guest check (a guest mounting cidata and printing its hostname and key) belongs to the
guest tests' owner: not here."""

import json
import shutil
import subprocess

import pytest

from tests.conftest import cmd, one_line_error

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtestkeytestkeytestkeytestkeytestkeytest admin@host"
pytestmark = pytest.mark.skipif(not shutil.which("xorriso"), reason="xorriso not installed (tests/setup.sh)")


def iso_files(iso, tmp_path):
    """(volume label, {name: text}) as xorriso reads the ISO."""
    res = subprocess.run(["xorriso", "-indev", str(iso), "-pvd_info"], capture_output=True, text=True)
    label = [ln.split(":", 1)[1].strip() for ln in (res.stdout + res.stderr).splitlines()
             if ln.startswith("Volume Id")][0]
    res = subprocess.run(["xorriso", "-indev", str(iso), "-find", "/", "-type", "f"], capture_output=True, text=True)
    names = sorted(ln.strip().strip("'").lstrip("/") for ln in res.stdout.splitlines() if ln.strip())
    out = {}
    for name in names:
        dst = tmp_path / f"x-{name}"
        subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", f"/{name}", str(dst)],
                       check=True, capture_output=True)
        out[name] = dst.read_text()
    return label, out


@pytest.fixture
def key(tmp_path):
    p = tmp_path / "id.pub"
    p.write_text(KEY + "\n")
    return p


def test_vmcreate_cloud_init_writes_a_seed_a_second_reader_reads(install, env, tmp_path, key):
    res = cmd(install, env, "vmcreate", "ci", "-y", "--cloud-init", "--user", "admin", "--ssh-key", key,
              "--hostname", "web1", "--ip", "192.0.2.10/24", "--gateway", "192.0.2.1", "--dns", "192.0.2.53")
    assert res.returncode == 0, res.stderr
    d = install / "vm" / "ci"
    seed = d / "seed.iso"
    assert seed.stat().st_mode & 0o777 == 0o600 and (d / "cloud-init.json").stat().st_mode & 0o777 == 0o600
    label, files = iso_files(seed, tmp_path)
    assert label == "cidata" and sorted(files) == ["meta-data", "network-config", "user-data"]
    assert files["user-data"].startswith("#cloud-config\n")
    user = json.loads(files["user-data"].split("\n", 1)[1])
    assert user["hostname"] == "web1" and user["users"][1]["ssh_authorized_keys"] == [KEY]
    assert "passwd" not in user["users"][1] and user["users"][1]["lock_passwd"] is True
    net = json.loads(files["network-config"])
    assert net["version"] == 2 and net["ethernets"]["all"]["addresses"] == ["192.0.2.10/24"]
    first = json.loads(files["meta-data"])["instance-id"]
    assert 'CloudInit="1"' in (d / "set.conf").read_text()
    info = cmd(install, env, "vminfo", "ci").stdout
    assert "cloud-init" in info and "slot 28" in info
    # cloudinit NAME changes one thing, keeps the rest, and makes a new instance-id
    res = cmd(install, env, "cloudinit", "ci", "--hostname", "web2")
    assert res.returncode == 0, res.stderr
    _, files = iso_files(seed, tmp_path)
    user = json.loads(files["user-data"].split("\n", 1)[1])
    assert user["hostname"] == "web2" and user["users"][1]["ssh_authorized_keys"] == [KEY]
    assert json.loads(files["meta-data"])["instance-id"] != first
    res = cmd(install, env, "start", "ci", "--dry-run")
    assert f"28,ahci-cd,{seed}" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("flags, words", [
    (["--password-hash", "secret"], ["never a plain-text password"]),
    (["--ip", "192.0.2.10"], ["'192.0.2.10'", "prefix length"]),
    (["--gateway", "192.0.2.1"], ["--gateway", "--ip"]),
    (["--hostname", "bad_host!"], ["'bad_host!'"]),
    (["--ssh-key", "/nonexistent/k.pub"], ["/nonexistent/k.pub"]),
])
def test_bad_seed_flags_are_one_line_errors_and_make_nothing(install, env, pool, flags, words):
    res = cmd(install, env, "vmcreate", "ci", "-y", "--cloud-init", *flags)
    one_line_error(res, "vmcreate: ci:", *words, status=2)
    assert not (install / "vm" / "ci").exists()
