"""Bytes that are not UTF-8 (a Latin-1 comment, a user variable's value) in set.conf and run:
every command that edits or copies them finishes and keeps them byte for byte; a cloud-init
file cloud-init could not read is refused in one line (issue 19.7)."""

import subprocess

from tests.conftest import cmd, create_vm, fake_iso, one_line_error

LATIN1 = b"# caf\xe9 de web: \xe0 garder\nLAN=\"tap\xe9\"\n"


def raw(install, env, *argv):
    """./COMMAND ARGV with bytes out: what is printed may hold the file's own bytes."""
    return subprocess.run([f"./{argv[0]}", *map(str, argv[1:])], env=env, cwd=install, capture_output=True)


def latin1_vm(install, env, name="web"):
    d = create_vm(install, env, name, "--cores", "1")
    for f in ("set.conf", "run"):
        with open(d / f, "ab") as fh:
            fh.write(LATIN1)
    return d


def test_edits_clone_and_rename_keep_the_bytes_and_finish(install, env, sysroot, tmp_path):
    d = latin1_vm(install, env)
    (d / "web.log").write_text("log\n")
    assert cmd(install, env, "dorc", "web", "-y", "--enable").returncode == 0
    res = raw(install, env, "vmset", "web", "Cores=2", "--force", "LAN=tap0")   # the old value: its bytes
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == b'web: set LAN="tap0" (was "tap\xe9")'
    iso = fake_iso(tmp_path / "x.iso")
    for argv in (["insert", "web", iso], ["vmset", "web", "--force", "LAN=tap\udce9"], ["eject", "web"]):
        res = raw(install, env, *argv)
        assert res.returncode == 0, (argv, res.stderr)
    env["EDITOR"] = "sed -i s/^Cores=.*/Cores=1/"
    res = cmd(install, env, "vmedit", "web")
    assert res.returncode == 0, res.stderr
    assert b"# caf\xe9 de web: \xe0 garder\n" in (d / "set.conf").read_bytes()
    res = cmd(install, env, "vmclone", "web", "copy", "-y")
    assert res.returncode == 0, res.stderr
    assert b"# caf\xe9 de copy: \xe0 garder\n" in (install / "vm" / "copy" / "run").read_bytes()
    res = cmd(install, env, "vmrename", "web", "www")
    assert res.returncode == 0, res.stderr
    new = install / "vm" / "www"
    for f in ("set.conf", "run"):
        assert b"# caf\xe9 de www: \xe0 garder\n" in (new / f).read_bytes(), f
    assert not (new / ".kvm-rename").exists() and (new / "www.log").exists() and not (new / "web.log").exists()
    assert (sysroot / "rc.d" / "www").exists() and not (sysroot / "rc.d" / "web").exists()
    assert cmd(install, env, "vminfo", "www").returncode == 0


def test_a_cloud_init_file_that_is_not_utf8_is_refused_in_one_line(install, env, tmp_path):
    d = latin1_vm(install, env)
    before = (d / "set.conf").read_bytes()
    key = tmp_path / "id.pub"
    key.write_bytes(b"ssh-ed25519 AAAA jos\xe9@host\n")
    one_line_error(cmd(install, env, "cloudinit", "web", "--ssh-key", key),
                   f"cloudinit: web: SSH key file '{key}' is not UTF-8 text (byte 0xe9 at offset 20)", status=2)
    data = tmp_path / "user-data"
    data.write_bytes(b"#cloud-config\n# \xe9\n")
    one_line_error(cmd(install, env, "cloudinit", "web", "--user-data", data), "user-data file", "0xe9", status=2)
    assert (d / "set.conf").read_bytes() == before and not (d / "seed.iso").exists()
    res = cmd(install, env, "cloudinit", "web", "--hostname", "h1")   # the set.conf edit keeps the bytes
    assert res.returncode == 0, res.stderr
    assert LATIN1 in (d / "set.conf").read_bytes()
