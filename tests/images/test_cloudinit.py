"""cloud-init NoCloud seed: written by vmcreate --cloud-init and cloudinit NAME, read back by
xorriso (a second ISO reader): label cidata, the three files, 0600, a new instance-id each time.
The real-guest check (a guest mounting cidata and printing its hostname and key) belongs to the
guest tests' owner: not here."""

import json
import os
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


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def big_file(tmp_path, size=2 << 20, name="big"):
    path = tmp_path / name
    path.write_text(KEY + "\n" + "#" * size + "\n")
    return path


@pytest.mark.parametrize("flag", ["--ssh-key", "--user-data", "--network-config"])
def test_seed_files_must_be_small_regular_files(install, env, pool, tmp_path, fifo, flag):
    """cloudinit --ssh-key /dev/zero grew without end (issue 19.6): a device, a FIFO, a folder or a
    file over the limit is one line, read no further than the limit."""
    for path, words in (("/dev/zero", ["/dev/zero", "is not a regular file (a device)"]),
                        (str(fifo), ["is not a regular file (a FIFO)"]),
                        (str(tmp_path), ["is not a regular file (a folder)"]),
                        (str(big_file(tmp_path)), ["is larger than"])):
        res = cmd(install, env, "vmcreate", "ci", "-y", "--cloud-init", flag, path, timeout=30)
        one_line_error(res, "vmcreate: ci:", *words, status=2)
        assert not (install / "vm" / "ci").exists()


SHADOW_LINE = "root:$6$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH:19000:0:99999:7:::"


def test_a_bad_key_file_is_named_never_shown(install, env, tmp_path):
    """The first 40 characters of a file that is no key were printed (an /etc/shadow line)."""
    bad = tmp_path / "shadow"
    bad.write_text(SHADOW_LINE + "\n")
    res = cmd(install, env, "vmcreate", "ci", "-y", "--cloud-init", "--ssh-key", bad)
    line = one_line_error(res, "vmcreate: ci:", str(bad), "line 1", "not an SSH public key", status=2)
    assert "root" not in line.replace(str(bad), "") and "$6$" not in line


def test_a_key_file_holds_one_key_a_line_and_no_options(install, env, tmp_path):
    """A multi-line key file was taken as one key, command= lines included."""
    two = tmp_path / "two.pub"
    other = KEY.replace("admin@host", "ops@host")
    two.write_text(f"# my keys\n{KEY}\n\n{other}\n")
    res = cmd(install, env, "vmcreate", "ci", "-y", "--cloud-init", "--user", "u", "--ssh-key", two)
    assert res.returncode == 0, res.stderr
    state = json.loads((install / "vm" / "ci" / "cloud-init.json").read_text())
    assert state["ssh_keys"] == [KEY, other]
    forced = tmp_path / "forced.pub"
    forced.write_text(f"{KEY}\ncommand=\"/bin/sh -c 'id'\" {other}\n")
    one_line_error(cmd(install, env, "cloudinit", "ci", "--ssh-key", forced), "cloudinit: ci:", str(forced),
                   "line 2", status=2)
    assert json.loads((install / "vm" / "ci" / "cloud-init.json").read_text()) == state


@pytest.mark.parametrize("flags, words", [
    (["--password-hash", "$6$salt$hash\nroot::0:0::/:/bin/sh"], ["--password-hash", "control character"]),
    (["--hostname", ".".join(["a" * 63] * 5)], ["longer than 253"]),
    (["--ip", "2001:db8::5/64", "--gateway", "192.0.2.1"], ["--gateway", "192.0.2.1", "IPv4", "IPv6"]),
])
def test_more_bad_seed_values_are_one_line_errors(install, env, pool, flags, words):
    res = cmd(install, env, "vmcreate", "ci", "-y", "--cloud-init", *flags)
    one_line_error(res, "vmcreate: ci:", *words, status=2)
    assert not (install / "vm" / "ci").exists()
