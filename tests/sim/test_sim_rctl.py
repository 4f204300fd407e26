"""The simulated rctl(8): rules checked as rctl.c and kern_rctl.c check them, with their messages
and exit statuses; a process's rules go with it; RACCT off is said as rctl says it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim.test_simulator import run


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def rules(env):
    return json.loads((Path(env["KVM_SIM_DIR"]) / "rctl.json").read_text())


def test_adds_expands_and_removes(env, sleeper):
    res = run(env, "rctl", "-a", f"process:{sleeper}:pcpu:deny=50", f"p:{sleeper}:readbps:throttle=100M",
              f"process:{sleeper}:vmemoryuse:deny=2G")
    assert res.returncode == 0, res.stderr
    assert rules(env) == [f"process:{sleeper}:pcpu:deny=50", f"process:{sleeper}:readbps:throttle=104857600",
                          f"process:{sleeper}:vmemoryuse:deny=2147483648"]
    assert run(env, "rctl").stdout.split() == rules(env)
    assert run(env, "rctl", "-r", f"process:{sleeper}").returncode == 0
    assert rules(env) == []


@pytest.mark.parametrize("rule, message", [
    ("process:{pid}:pcpu:throttle=50", "failed to add rule 'process:{pid}:pcpu:throttle=50': Operation not supported"),
    ("process:{pid}:readbps:deny=1M", "failed to add rule 'process:{pid}:readbps:deny=1M': Operation not supported"),
    ("process:{pid}:cpus:deny=1", "failed to add rule 'process:{pid}:cpus:deny=1': Invalid argument"),
    ("process:{pid}:pcpu:deny=5x", "malformed rule 'process:{pid}:pcpu:deny=5x': invalid numeric value '5x'"),
    ("process:{pid}:pcpu:deny", "failed to add rule 'process:{pid}:pcpu:deny': Invalid argument"),
    ("process", "malformed rule 'process': missing subject"),
    ("process:999999999:pcpu:deny=5", "failed to add rule 'process:999999999:pcpu:deny=5': No such process"),
])
def test_refuses_as_rctl_and_the_kernel_do(env, sleeper, rule, message):
    rule, message = rule.format(pid=sleeper), message.format(pid=sleeper)
    res = run(env, "rctl", "-a", rule)
    assert res.returncode == 1 and message in res.stderr, res.stderr


def test_usage_racct_off_and_rules_gone_with_the_process(env, sleeper):
    assert run(env, "rctl", "-a", "-r", "process:1").returncode == 1
    assert run(env, "rctl", "-x").returncode == 1
    (Path(env["KVM_SIM_DIR"]) / "racct.json").write_text('{"enable": 0}')
    res = run(env, "rctl", "-a", f"process:{sleeper}:pcpu:deny=50")
    assert res.returncode == 1
    assert res.stderr.strip() == "rctl: RACCT/RCTL present, but disabled; enable using kern.racct.enable=1 tunable"
    (Path(env["KVM_SIM_DIR"]) / "racct.json").write_text('{"enable": 1}')
    short = subprocess.Popen([sys.executable, "-c", "pass"])
    short.wait()
    assert run(env, "rctl", "-a", f"process:{sleeper}:pcpu:deny=50").returncode == 0
    assert run(env, "rctl", "-r", f"process:{short.pid}").returncode == 1   # no such process any more
