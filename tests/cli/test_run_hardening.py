"""The running side under stress: Ctrl-C on a terminal, secrets in logs, a full pool, orphans."""

import json
import os
import pty
import signal
import time
from pathlib import Path

from tests.conftest import calls, cmd, one_line_error
from tests.cli.test_run import boots, guest_up, make, script, status, wait_for


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


def test_ctrl_c_on_a_foreground_start_presses_the_power_button(install, env):
    """^C typed on the terminal reaches the supervisor only: it stops the guest through ACPI,
    bhyve is not killed by the SIGINT meant for the supervisor."""
    d = make(install, env)
    script(env, "web", "run")
    pid, master = pty.fork()
    if pid == 0:  # the child: a session of its own with the pty as its terminal, like a login shell
        os.chdir(install)
        os.execve(str(install / "start"), [str(install / "start"), "web"], env)
    out = []
    try:
        wait_for(lambda: _read_all(master, out) or guest_up(install, env), what="the guest")
        os.write(master, b"\x03")  # what the terminal sends for Ctrl-C: SIGINT to its foreground group
        end = time.time() + 30
        while time.time() < end and os.waitpid(pid, os.WNOHANG) == (0, 0):
            _read_all(master, out)
            time.sleep(0.05)
        text = b"".join(out).decode(errors="replace")
    finally:
        os.close(master)
    assert [argv for _, argv in calls(env, "bhyve-acpi")] == [["web", "yes"]], text
    assert (d / "hooks.log").read_text().splitlines()[-1] == "post 1 poweroff", text
    assert "powered off (exit 1)" in text and "stopped (acpi)" in text
    assert status(install, env) == 0


def test_vnc_password_is_masked_in_every_line_but_bhyve_gets_it(install, env):
    d = make(install, env, "web", "--vnc", "yes")
    with open(d / "set.conf", "a") as fh:
        fh.write('VNCpassword="s3cretpw"\n')
    dry = cmd(install, env, "start", "--dry-run", "web")
    assert dry.returncode == 0, dry.stderr
    assert "password=***" in dry.stdout and "s3cretpw" not in dry.stdout
    script(env, "web", "run")
    res = cmd(install, env, "start", "-b", "web")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(install, env), what="the guest")
    log = (d / "web.log").read_text()
    assert "password=***" in log and "s3cretpw" not in log
    assert any(a.endswith(",password=s3cretpw") for a in boots(env)[0]), "bhyve itself gets the password"
    assert cmd(install, env, "stop", "-f", "web").returncode == 0


def test_start_of_an_orphan_says_so_once(install, env):
    make(install, env)
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    state = json.loads((Path(env["KVM_RUN_DIR"]) / "web.state").read_text())
    os.kill(state["supervisor"], signal.SIGKILL)
    wait_for(lambda: "orphaned" in cmd(install, env, "vmlist", "-H").stdout, what="the orphan")
    for argv in (["start", "-b", "web"], ["start", "web"]):
        res = cmd(install, env, *argv)
        one_line_error(res, "start: web:", "without a supervisor")
        assert res.stderr.count("web:") == 1, res.stderr
    assert status(install, env) == state["bhyve"], "the orphan's record is kept: it still runs"
    assert cmd(install, env, "stop", "web").returncode == 0
