"""A command reads set.conf once: every open of the VM's set.conf during a command, counted in the
command's own process by an audit hook (Python's `open` event: open(), Path.read_text(),
os.open()), the command run as its launcher runs it (kvm.cli.main, the root its folder)."""

import subprocess
import sys

import pytest

from tests.conftest import cmd, fake_iso
from tests.cli.test_run import guest_up, make, script, wait_for

# Prints the count on stderr's last line, whatever the command did.
DRIVER = r"""
import os, sys
suffix, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
opens = []
def count(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and os.fsdecode(args[0]).endswith(suffix):
        opens.append(args[0])
sys.addaudithook(count)
from kvm.cli import main
try:
    status = main(command, args, launcher_dir=os.getcwd())
finally:
    print(f"set.conf opened {len(opens)} times", file=sys.stderr, flush=True)
sys.exit(status)
"""


def opens(install, env, *argv, status=0):
    """How many times the command ./ARGV opened vm/web/set.conf (its own process only)."""
    res = subprocess.run([sys.executable, "-c", DRIVER, "/vm/web/set.conf", *map(str, argv)], env=env,
                         cwd=install, capture_output=True, text=True, timeout=60)
    *_, last = res.stderr.splitlines()
    assert res.returncode == status, res.stderr
    assert last.startswith("set.conf opened "), res.stderr
    return int(last.split()[2])


@pytest.fixture
def web(install, env, tmp_path):
    make(install, env, "web", "--com", "yes")
    iso = tmp_path / "x.iso"
    fake_iso(iso)
    return iso


def test_a_command_reads_set_conf_once(install, env, web):
    readers = [["vminfo", "web"], ["vminfo", "--json", "web"], ["start", "-n", "web"], ["snap", "list", "web"],
               ["snap", "c", "-n", "web", "s1"], ["snap", "c", "web", "s1"], ["snap", "r", "-n", "web"],
               ["snap", "prune", "-n", "web", "--keep", "0"], ["vmclone", "-n", "web", "cl", "-y"]]
    assert {" ".join(argv): opens(install, env, *argv) for argv in readers} == {" ".join(a): 1 for a in readers}
    # an edit reads the file once more, under the config lock, whatever the command read before
    assert opens(install, env, "vmset", "web", "Cores=2") == 1
    assert opens(install, env, "insert", "web", web) == 1
    assert opens(install, env, "eject", "web") == 2   # the ISO it names first, then the edit
    assert opens(install, env, "status", "web", status=1) == 0


def test_a_command_on_a_running_vm_reads_set_conf_once(install, env, web):
    script(env, "web", "run")
    assert opens(install, env, "start", "-b", "web") == 1   # start -b's own process: its supervisor reads it to launch
    wait_for(lambda: guest_up(install, env), what="the guest")
    for argv in (["vminfo", "web"], ["stop", "-n", "web"], ["stop", "-n", "-f", "web"]):
        assert opens(install, env, *argv) == 1, argv
    assert opens(install, env, "stop", "web") == 1
    assert cmd(install, env, "status", "web").stdout.strip() == "0"
