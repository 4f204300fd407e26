"""start -b's supervisor (kvm/run/detached.py): it gets the VM as start -b resolved it (root path,
name) with the VM's lock, and reads set.conf only for its launch; its command line, log and
refusals are start's."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import cmd, one_line_error, run_folder
from tests.cli.test_run import guest_up, guests, make, script, wait_for

NEAR_MISS = "start: web: warning: set.conf: 'cores' is not a kvm setting; did you mean 'Cores'?"


def test_start_b_hands_the_resolved_vm_and_its_lock_to_the_detached_supervisor(install, env):
    d = make(install, env)
    with open(d / "set.conf", "a") as fh:
        fh.write("cores=2\n")  # a warning: start -b prints it, and the log has it first, as before
    script(env, "web", "run")
    res = cmd(install, env, "start", "-b", "web")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(install, env), what="the guest")
    state = json.loads((run_folder(env, install, "web") / "state").read_text())
    argv = Path(f"/proc/{state['supervisor']}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    assert argv[1:4] == ["-m", "kvm.run.detached", "start"]
    assert argv[4] == "--lock-fd" and argv[5].isdigit() and argv[6:] == ["--root", str(install), "web"]
    assert res.stderr.splitlines()[0] == NEAR_MISS
    assert res.stdout.startswith(f"web: started, bhyve pid {state['bhyve']}, supervisor pid {state['supervisor']} ")
    log = (d / "web.log").read_text().splitlines()
    assert log[0] == NEAR_MISS and f"launched bhyve pid {state['bhyve']} (boot 1)" in log[-1]
    assert cmd(install, env, "stop", "web").returncode == 0


def detached(install, env, *args, shell_prefix=""):
    """Run the detached supervisor's entry as start -b does (through sh for a descriptor)."""
    argv = " ".join([sys.executable, "-m", "kvm.run.detached", *map(str, args)])
    return subprocess.run(["sh", "-c", f"exec {argv} {shell_prefix}"], env=env, cwd=install,
                          capture_output=True, text=True, timeout=30)


def test_the_detached_supervisor_refuses_a_descriptor_that_is_not_the_vms_lock(install, env, tmp_path):
    make(install, env)
    script(env, "web", "run")
    other = tmp_path / "not-a-lock"
    other.write_text("")
    res = detached(install, env, "start", "--lock-fd", 7, "--root", install, "web", shell_prefix=f"7<{other}")
    one_line_error(res, "start: web: ", "descriptor 7", "web/lock")
    assert not guests(env, "web") and not (install / "vm" / "web" / "web.log").exists()


def test_the_detached_supervisor_takes_only_the_command_line_start_b_writes(install, env):
    res = detached(install, env, "start", "web")
    assert one_line_error(res, status=2).startswith("start: usage: python -m kvm.run.detached start --lock-fd FD")
    res = detached(install, env, "start", "--lock-fd", 7, "--root", install, "../web")
    assert one_line_error(res, "invalid VM name", status=2).startswith("start: ")
