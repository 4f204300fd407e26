"""The running side under stress: Ctrl-C on a terminal, secrets in logs, orphans.

These run on a plain folder laid out as the shell toolkit's install root (no ZFS needed: the
supervisor never asks ZFS anything), through `python -m kvm --root`.
"""

import json
import os
import pty
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_run import HOOKS, script, wait_for
from tests.conftest import _kill_supervisors, calls, kvm, one_line_error, run_folder


@pytest.fixture
def root(sysroot, env):
    """An install root in a plain folder, with VM web (UEFI, a disk, hooks that log); whatever a
    failed test left running in it is ended afterwards."""
    r = sysroot / "kvm"
    (r / "firmware").mkdir(parents=True)
    (r / "functions").write_text("# shell toolkit functions\n")
    (r / "firmware" / "BHYVE_UEFI.fd").write_bytes(b"UEFI")
    d = r / "vm" / "web"
    d.mkdir(parents=True)
    (d / "set.conf").write_text('VMrom="uefi"\nCores="1"\nMem="1G"\nDisk="disk"\n')
    (d / "run").write_text(HOOKS.format(name="web", pre_extra=":"))
    (d / "disk").write_bytes(b"")
    (d / "UEFI_VARS.fd").write_bytes(b"vars")
    yield r
    _kill_supervisors(env)


def cmd(root, env, *args):
    return kvm(env, "--root", root, *args)


def status(root, env):
    return int(cmd(root, env, "status", "web").stdout.strip())


def guest_up(root, env):
    return any(argv[0] == "web" for _, argv in calls(env, "bhyve-guest")) and status(root, env) > 0


def boots(env):
    return [argv for tool, argv in calls(env, "bhyve") if argv and argv[-1] == "web"]


def _read_all(fd, into):
    """Drain what the pty has for us (the child blocks on a full pty otherwise)."""
    import select
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


def test_ctrl_c_on_a_foreground_start_presses_the_power_button(root, env):
    """^C typed on the terminal reaches the supervisor only: it stops the guest through ACPI,
    bhyve is not killed by the SIGINT meant for the supervisor."""
    d = root / "vm" / "web"
    script(env, "web", "run")
    pid, master = pty.fork()
    if pid == 0:  # the child: a session of its own with the pty as its terminal, like a login shell
        argv = [sys.executable, "-m", "kvm", "--root", str(root), "start", "web"]
        os.execve(sys.executable, argv, env)
    out = []
    try:
        wait_for(lambda: _read_all(master, out) or guest_up(root, env), what="the guest")
        os.write(master, b"\x03")  # what the terminal sends for Ctrl-C: SIGINT to its foreground group
        end = time.time() + 30
        while time.time() < end and os.waitpid(pid, os.WNOHANG) == (0, 0):
            _read_all(master, out)
            time.sleep(0.05)
        _read_all(master, out)  # what it wrote last
        text = b"".join(out).decode(errors="replace")
    finally:
        os.close(master)
    assert [argv for _, argv in calls(env, "bhyve-acpi")] == [["web", "yes"]], text
    assert (d / "hooks.log").read_text().splitlines()[-1] == "post 1 poweroff", text
    assert "powered off (exit 1)" in text and "stopped (acpi)" in text
    assert status(root, env) == 0


def test_vnc_password_is_masked_in_every_line_but_bhyve_gets_it(root, env):
    d = root / "vm" / "web"
    with_password(root)
    dry = cmd(root, env, "start", "--dry-run", "web")
    assert dry.returncode == 0, dry.stderr
    assert "password=***" in dry.stdout and "s3cretpw" not in dry.stdout
    script(env, "web", "run")
    res = cmd(root, env, "--debug", "start", "-b", "web")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(root, env), what="the guest")
    log = (d / "web.log").read_text()
    assert "s3cretpw" not in log + res.stdout + res.stderr
    # bhyve gets it in a 0600 -k file, not on its command line (ps shows that)
    argv = boots(env)[0]
    secrets = run_folder(env, root, "web") / "bhyve.conf"   # the VM's run folder: no other root's web shares it
    assert argv[-3:] == ["-k", str(secrets), "web"] and not any("s3cretpw" in a for a in argv)
    assert secrets.stat().st_mode & 0o777 == 0o600 and secrets.read_text() == "pci.0.30.0.password=s3cretpw\n"
    assert json.loads((Path(env["KVM_VMM_DIR"]) / "web").read_text())["vnc_password"] == "s3cretpw"
    assert cmd(root, env, "stop", "-f", "web").returncode == 0
    assert not secrets.exists(), "the password goes with bhyve"


def with_password(root):
    with open(root / "vm" / "web" / "set.conf", "a") as fh:
        fh.write('VNC="1"\nVNCpassword="s3cretpw"\n')


def supervisor_ended(root, env):
    state = json.loads((run_folder(env, root, "web") / "state").read_text())
    return state.get("supervisor") == 0 and state.get("ended")


@pytest.mark.parametrize("ending", ["stop", "crash", "bhyve killed", "reboot then poweroff", "bhyve error"])
def test_the_vnc_password_file_is_gone_when_the_supervisor_ends(root, env, ending):
    """bhyve's -k file (the VNC password, 0600) exists only while bhyve runs: removed when the loop
    ends however it ends, and written again for the next boot of a guest reboot."""
    with_password(root)
    secrets = run_folder(env, root, "web") / "bhyve.conf"
    lines = {"stop": ["run"], "crash": ["triple after=0.3"], "bhyve killed": ["run"],
             "reboot then poweroff": ["reboot after=0.3", "poweroff after=0.3"],
             "bhyve error": ["error after=0"]}[ending]
    script(env, "web", *lines)
    assert cmd(root, env, "start", "-b", "web").returncode == 0
    if ending in ("stop", "bhyve killed"):
        wait_for(lambda: guest_up(root, env), what="the guest")
        assert secrets.stat().st_mode & 0o777 == 0o600
        if ending == "stop":
            assert cmd(root, env, "stop", "web").returncode == 0
        else:
            os.kill(status(root, env), signal.SIGKILL)
    wait_for(lambda: supervisor_ended(root, env), what="the supervisor's end")
    assert not secrets.exists(), ending
    if ending == "reboot then poweroff":   # bhyve read the file at each of its two starts
        assert [a[-3:] for a in boots(env)] == [["-k", str(secrets), "web"]] * 2
        assert [a[0] for _, a in calls(env, "bhyve-guest")] == ["web", "web"], "-k read at each start"
    assert not list(Path(env["KVM_RUN_DIR"]).glob("*.bhyve.conf"))


def test_a_killed_supervisors_password_file_goes_at_the_next_start(root, env):
    """kill -9 of the supervisor leaves bhyve (an orphan) and its -k file; the next start removes
    it, and the one an earlier version left in the shared run dir (RUN_DIR/web.bhyve.conf), even
    when the VM has no VNC password any more."""
    with_password(root)
    secrets = run_folder(env, root, "web") / "bhyve.conf"
    script(env, "web", "run")
    assert cmd(root, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(root, env), what="the guest")
    state = json.loads((run_folder(env, root, "web") / "state").read_text())
    os.kill(state["supervisor"], signal.SIGKILL)
    wait_for(lambda: "orphaned" in cmd(root, env, "vmlist", "-H").stdout, what="the orphan")
    assert secrets.exists(), "the orphan's supervisor could not remove it"
    assert cmd(root, env, "stop", "-f", "web").returncode == 0
    legacy = Path(env["KVM_RUN_DIR"]) / "web.bhyve.conf"
    legacy.write_text("pci.0.30.0.password=older\n")
    legacy.chmod(0o600)
    conf = root / "vm" / "web" / "set.conf"
    conf.write_text(conf.read_text().replace('VNCpassword="s3cretpw"\n', ""))
    script(env, "web", "run")
    res = cmd(root, env, "start", "web", "-b")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(root, env), what="the guest")
    assert not secrets.exists() and not legacy.exists()
    assert "-k" not in boots(env)[-1]
    log = (root / "vm" / "web" / "web.log").read_text()
    assert f"removed {secrets}, left by an earlier run" in log and f"removed {legacy}" in log, log
    assert cmd(root, env, "stop", "-f", "web").returncode == 0


def test_start_of_an_orphan_says_so_once(root, env):
    script(env, "web", "run")
    assert cmd(root, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(root, env), what="the guest")
    state = json.loads((run_folder(env, root, "web") / "state").read_text())
    os.kill(state["supervisor"], signal.SIGKILL)
    wait_for(lambda: "orphaned" in cmd(root, env, "vmlist", "-H").stdout, what="the orphan")
    for argv in (["start", "-b", "web"], ["start", "web"]):
        res = cmd(root, env, *argv)
        one_line_error(res, "start: web:", "without a supervisor", status=8)
        assert res.stderr.count("web:") == 1, res.stderr
    assert status(root, env) == state["bhyve"], "the orphan's record is kept: it still runs"
    assert cmd(root, env, "stop", "web").returncode == 0


def test_start_b_names_a_failed_prerun_even_when_the_log_cannot_say_it(root, env):
    """On a full pool nothing reaches NAME.log; the reason comes from the state file instead."""
    d = root / "vm" / "web"
    (d / "run").write_text(HOOKS.format(name="web", pre_extra="return 3"))
    (d / "web.log").write_text("bhyve -c 1 -m 1G -s 0,hostbri")  # what a full pool left of a line
    (d / "web.log").chmod(0o640)
    res = cmd(root, env, "start", "-b", "web")
    one_line_error(res, "start: web: did not start: preRun failed (exit 3): not launching bhyve")
    assert boots(env) == []
