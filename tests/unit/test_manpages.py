"""The man pages: lint-clean mdoc, and complete against the code they document.

kvm(8) has one subsection (`.Ss NAME`) per command under COMMANDS; every option of every
command's parser must appear there as `Fl x` / `Fl \\-long` markup (the options every command
shares, in `.Ss Common options`). kvm.conf(5) has an entry for every set.conf key kvm knows.
A new option, command, variable or key without its documentation fails here: that is the point.
"""

import argparse
import configparser
import importlib
import os
import re
import shutil
import subprocess

import pytest

from kvm.manage import commands
from kvm.conf import config
from tests.conftest import REPO

MAN = REPO / "man"
PAGES = (MAN / "kvm.8", MAN / "kvm.conf.5")
COMMON = {"-h", "--help", "--debug", "--root"}   # every command's: documented once
DRY_RUN = "--dry-run"  # documented once too; each command that has it shows its -n
# mdoc macros that can follow Fl's arguments on a line (they end a run of flags)
MACRO = re.compile(r"^(?:A[cdopqr]|B[cdkoq]|Brq|Cm|D[oqv]|E[cmv]|Fl|Ic|Li|N[mos]|O[cop]|P[acfoq]|Q[cloq]|"
                   r"S[cqxy]|Ta|Va|X[cor])$")
PUNCT = {",", "|", ";", ".", ":", "(", ")", "[", "]"}


def text(page):
    return page.read_text()


def lint(page):
    return subprocess.run(["mandoc", "-Tlint", "-W", "warning", str(page)], capture_output=True, text=True)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_page_is_lint_clean_mdoc(page):
    if shutil.which("mandoc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mandoc is missing (tests/setup.sh installs Debian's mandoc)")
        pytest.skip("mandoc is not installed (apt-get install mandoc)")
    res = lint(page)
    assert res.returncode == 0 and not res.stdout and not res.stderr, res.stdout + res.stderr


def sections(page):
    """{title: body} of the page's `.Sh` sections (their `.Ss` lines included)."""
    out, title = {}, None
    for line in text(page).splitlines():
        if line.startswith(".Sh "):
            title = line[4:].strip()
            out[title] = []
        elif title is not None:
            out[title].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def subsections():
    """{command: its subsection under COMMANDS in kvm(8)}, keyed by the subsection's first word."""
    body = sections(MAN / "kvm.8")["COMMANDS"]
    out, name = {}, None
    for line in body.splitlines():
        if line.startswith(".Ss "):
            name = line[4:].split()[0]
            out[name] = []
        elif name:
            out[name].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def flags(mdoc):
    """Every option an mdoc text shows with Fl: `.Fl n` -> -n, `Fl \\-dry\\-run` -> --dry-run."""
    found = set()
    for line in mdoc.splitlines():
        if not line.startswith("."):
            continue
        words = line[1:].split()
        for i, word in enumerate(words):
            if word != "Fl":
                continue
            for arg in words[i + 1:]:
                if MACRO.match(arg):
                    break
                if arg not in PUNCT:
                    found.add("-" + arg.replace("\\-", "-").replace("\\&", ""))
    return found


def macro_args(mdoc, macro):
    """The words given to `macro` (Cm, Va...) anywhere in mdoc, without their markup escapes."""
    words = set()
    for line in mdoc.splitlines():
        for m in re.finditer(rf"(?:^\.|\s){macro}\s+(\S+)", line):
            words.add(m.group(1).replace("\\-", "-").replace("\\&", ""))
    return words


def options(command):
    """The option strings of a command's parser (hidden ones left out), and its positional choices."""
    parser = importlib.import_module(f"kvm.cli.{command}").build_parser()
    opts, choices = set(), set()
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        opts.update(action.option_strings)
        if not action.option_strings and action.choices:
            choices.update(action.choices)
    return opts, choices


def test_kvm_8_has_a_subsection_for_every_command():
    missing = [c for c in commands.ALL if c not in subsections()]
    assert not missing, f"kvm.8 has no `.Ss NAME` under COMMANDS for: {missing}"


@pytest.mark.parametrize("command", commands.ALL)
def test_every_option_of_the_command_is_in_its_subsection(command):
    opts, choices = options(command)
    section = subsections().get(command, "")
    missing = sorted(o for o in opts - COMMON - {DRY_RUN} if o not in flags(section))
    assert not missing, f"kvm.8, .Ss {command}: no `Fl` for {missing}"
    verbs = sorted(choices - macro_args(section, "Cm"))
    assert not verbs, f"kvm.8, .Ss {command}: no `Cm` for {verbs}"


def test_the_options_every_command_shares_are_in_common_options():
    shared = set.intersection(*(options(c)[0] for c in commands.ALL if c != "kvminst"))
    assert COMMON <= shared  # what the test exempts is indeed every command's
    assert any(DRY_RUN in options(c)[0] for c in commands.ALL)
    missing = sorted((COMMON | {"-n", DRY_RUN}) - flags(subsections().get("Common", "")))
    assert not missing, f"kvm.8, .Ss Common options: no `Fl` for {missing}"


def test_snap_documents_every_verb():
    from kvm.cli import snap
    missing = sorted(set(snap.VERBS.values()) - macro_args(subsections()["snap"], "Cm"))
    assert not missing, f"kvm.8, .Ss snap: no `Cm` for {missing}"


def env_vars_read():
    """Every KVM_* name the library quotes (os.environ.get("KVM_X"), ENV = "KVM_X")."""
    names = set()
    for path in (REPO / "kvm").rglob("*.py"):
        names.update(re.findall(r"""["'](KVM_[A-Z0-9_]+)["']""", path.read_text()))
    return names


def test_environment_lists_every_kvm_variable_the_code_reads():
    names = env_vars_read()
    assert {"KVM_ROOT", "KVM_RUN_DIR", "KVM_HYPERVISOR"} <= names  # the grep finds what it must
    documented = macro_args(sections(MAN / "kvm.8")["ENVIRONMENT"], "Ev")
    assert not sorted(names - documented), f"kvm.8 ENVIRONMENT lacks {sorted(names - documented)}"


def test_exit_status_lists_every_status_a_command_ends_with():
    from kvm import errors
    from kvm.run import supervisor
    statuses = set(supervisor.EXIT_STATUS.values()) | {errors.KvmError.exit_status,
                                                       errors.UsageError.exit_status, 130} | {
        e.exit_status for e in (errors.NotFound, errors.AlreadyExists, errors.Refused, errors.NothingToDo)}
    documented = {int(m) for m in re.findall(r"^\.It (\d+)$", sections(MAN / "kvm.8")["EXIT STATUS"],
                                             re.M)}
    assert statuses - documented == set(), f"kvm.8 EXIT STATUS lacks {sorted(statuses - documented)}"


def test_kvm_conf_5_has_an_entry_for_every_set_conf_key():
    documented = macro_args(sections(MAN / "kvm.conf.5")["SETTINGS"], "Va")
    missing = sorted(set(config.KNOWN) - documented)
    assert not missing, f"kvm.conf.5 SETTINGS has no `Va` entry for {missing}"


def test_kvm_conf_5_documents_the_hooks_and_what_they_see():
    hooks = sections(MAN / "kvm.conf.5")["HOOKS"]
    assert {"preRun", "postRun"} <= macro_args(hooks, "Fn")
    assert {"VMname", "VMdir", "VMd", "VMexit", "VMreason"} <= macro_args(hooks, "Ev")
    helpers = set(re.findall(r"^(\w+)\(\)", (REPO / "templates" / "functions").read_text(), re.M))
    assert helpers and not helpers - macro_args(hooks, "Ic"), f"undocumented helpers: {helpers}"


def test_pip_installs_the_pages_into_share_man():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    files = cfg["options.data_files"]
    assert files["share/man/man8"].split() == ["man/kvm.8"]
    assert files["share/man/man5"].split() == ["man/kvm.conf.5"]
