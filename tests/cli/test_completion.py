"""Shell completion: kvminst writes it from the parsers; bash completes commands, VM names,
snapshot names, verbs, flags and option values by calling the function as bash does."""

import importlib
import shlex
import shutil
import subprocess

import pytest

from kvm.manage.commands import ALL
from tests.conftest import cmd, create_vm


def complete(root, env, words, cwd=None, shell="bash", script="kvm.bash"):
    """What the completion function answers for `words` (the last one is being typed)."""
    array = " ".join(shlex.quote(w) for w in words)
    prog = (f". {shlex.quote(str(root / 'completion' / script))}\n"
            f"COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}\n"
            "_kvm; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    res = subprocess.run([shell, "-c", prog], env=env, cwd=cwd or root, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    return sorted(w for w in res.stdout.splitlines() if w)


@pytest.fixture
def vms(install, env):
    for name in ("web", "web2", "db"):
        create_vm(install, env, name)
    for snap in ("s1", "s2"):
        assert cmd(install, env, "snap", "create", "web", snap).returncode == 0
    return install


def test_kvminst_installs_it_and_bash_registers_every_command(install, env):
    for name in ("kvm.bash", "kvm.zsh"):
        assert (install / "completion" / name).is_file()
    prog = f". {install}/completion/kvm.bash; complete -p kvm ./start ./snap {install}/vminfo vmlist"
    res = subprocess.run(["bash", "-c", prog], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 5 and all("-F _kvm" in line for line in res.stdout.splitlines())


def test_commands_of_kvm_and_help(install, env):
    assert complete(install, env, ["kvm", "vmc"]) == ["vmclone", "vmcreate"]
    assert complete(install, env, ["kvm", "--debug", "st"]) == ["start", "status", "stop"]
    assert complete(install, env, ["kvm", "help", "sn"]) == ["snap"]


def test_vm_names_from_the_root_found_as_commands_find_it(vms, env, tmp_path):
    assert complete(vms, env, ["./start", "w"]) == ["web", "web2"]
    assert complete(vms, env, ["kvm", "vminfo", ""], cwd=tmp_path) == ["db", "web", "web2"]  # kvminst's root
    other = tmp_path / "other"
    (other / "vm" / "alpha").mkdir(parents=True)
    assert complete(vms, env, ["kvm", "--root", str(other), "stop", ""]) == ["alpha"]
    assert complete(vms, env, ["./stop", "--root", str(other), ""]) == ["alpha"]
    assert complete(vms, dict(env, KVM_ROOT=str(other)), ["kvm", "status", ""], cwd=tmp_path) == ["alpha"]


def test_snapshot_names_and_verbs(vms, env):
    assert complete(vms, env, ["./snap", ""]) == ["auto", "create", "destroy", "list", "prune", "rollback"]
    assert complete(vms, env, ["./snap", "rollback", "web", ""]) == ["s1", "s2"]
    assert complete(vms, env, ["kvm", "snap", "-r", "rollback", "web", "s"]) == ["s1", "s2"]
    assert complete(vms, env, ["./snap", "rollback", "db", ""]) == []
    assert complete(vms, env, ["./vmclone", "web", "--snapshot", ""]) == ["s1", "s2"]


def test_every_option_of_every_parser_is_offered(install, env):
    for command in ALL:
        parser = importlib.import_module(f"kvm.cli.{command}").build_parser()
        shown = {s for a in parser._actions if a.option_strings and a.help != "==SUPPRESS==" for s in a.option_strings}
        word = "./" + command if command != "kvminst" else "kvminst"
        offered = set(complete(install, env, [word, "-"]))
        assert offered == shown, command
    assert "--lock-fd" not in complete(install, env, ["./start", "--"])  # hidden: not offered


def test_option_values(vms, env, pool):
    assert complete(vms, env, ["vmcreate", "x", "--vnc", ""]) == ["no", "wait", "yes"]
    assert pool in complete(vms, env, ["kvminst", "-p", ""])
    assert complete(vms, env, ["./stop", "-t", ""]) == []  # a number: nothing to offer
    assert complete(vms, env, ["./insert", "web", "fun"]) == ["functions"]  # a file
    assert complete(vms, env, ["./vmrename", "web", ""]) == []  # a new name


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed (apt-get install zsh)")
def test_zsh_runs_the_same_completion(vms, env):
    assert complete(vms, env, ["./snap", "rollback", "web", ""], shell="zsh", script="kvm.zsh") == ["s1", "s2"]
