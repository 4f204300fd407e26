"""vmedit NAME: $EDITOR on a private copy; only a valid result replaces set.conf (atomically, with
set.conf.sav); an invalid one is shown and "edit again? [Y/n]" asked. The editor here is a small
script that plays one edit per run."""

import os
import shutil
import stat

import pytest

from tests.conftest import cmd, create_vm, fake_iso, one_line_error


def editor(tmp_path, *edits):
    """An $EDITOR whose Nth run applies the Nth sed expression to its file (and records the path)."""
    script = tmp_path / "ed.sh"
    cases = "".join(f"  {i}) sed -i '{e}' \"$1\" ;;\n" for i, e in enumerate(edits, 1))
    script.write_text(f"#!/bin/sh\nn=$(cat {tmp_path}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {tmp_path}/n\n"
                      f"echo \"$1\" >> {tmp_path}/paths\nls -l \"$1\" >> {tmp_path}/modes\n"
                      f"case $n in\n{cases}esac\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def web(install, env):
    d = create_vm(install, env, "web", "--cores", "1")
    with open(d / "set.conf", "a") as fh:
        fh.write("# keep this comment\n")
    return d


def runs(tmp_path):
    return int((tmp_path / "n").read_text())


def test_a_valid_edit_replaces_set_conf_and_keeps_the_old_one(install, env, web, tmp_path):
    before = (web / "set.conf").read_bytes()
    env["EDITOR"] = editor(tmp_path, 's/^Cores=.*/Cores="2"/')
    res = cmd(install, env, "vmedit", "web")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "web: replaced set.conf (the old one is kept as set.conf.sav)\n"
    assert 'Cores="2"' in (web / "set.conf").read_text() and "# keep this comment" in (web / "set.conf").read_text()
    assert (web / "set.conf.sav").read_bytes() == before
    copy = (tmp_path / "paths").read_text().strip()
    assert not copy.startswith(str(web)) and not os.path.exists(copy)   # a private copy, removed after
    assert (tmp_path / "modes").read_text().startswith("-rw-------")


def test_an_invalid_edit_is_shown_and_asked_again(install, env, web, tmp_path):
    env["EDITOR"] = editor(tmp_path, 's/^Cores=.*/Cores="lots"/', 's/^Cores=.*/Cores="3"/')
    res = cmd(install, env, "vmedit", "web", input="\n")   # Enter: the default, yes
    assert res.returncode == 0, res.stderr
    assert "vmedit: web: set.conf: Cores='lots' is not a whole number" in res.stderr
    assert "edit again? [Y/n]" in res.stderr and runs(tmp_path) == 2
    assert 'Cores="3"' in (web / "set.conf").read_text()


def test_no_to_edit_again_changes_nothing(install, env, web, tmp_path):
    before = (web / "set.conf").read_bytes()
    env["EDITOR"] = editor(tmp_path, 's/^Cores=.*/Cores="0"/')
    res = cmd(install, env, "vmedit", "web", input="n\n")
    assert res.returncode == 1 and "Cores='0' is out of range" in res.stderr and runs(tmp_path) == 1
    assert (web / "set.conf").read_bytes() == before and not (web / "set.conf.sav").exists()


def test_edit_again_flags_answer_the_question_without_a_terminal(install, env, web, tmp_path):
    before = (web / "set.conf").read_bytes()
    env["EDITOR"] = editor(tmp_path, 's/^Cores=.*/Cores="lots"/', 's/^Cores=.*/Cores="3"/')
    res = cmd(install, env, "vmedit", "web", "--no-edit-again", input="")
    assert res.returncode == 1 and "Cores='lots'" in res.stderr and "edit again?" not in res.stderr, res.stderr
    assert (web / "set.conf").read_bytes() == before and runs(tmp_path) == 1
    (tmp_path / "n").unlink()
    res = cmd(install, env, "vmedit", "web", "--edit-again", input="")
    assert res.returncode == 0 and "edit again?" not in res.stderr and runs(tmp_path) == 2, res.stderr
    assert 'Cores="3"' in (web / "set.conf").read_text()


def test_edit_again_gives_up_when_the_editor_leaves_it_invalid(install, env, web, tmp_path):
    before = (web / "set.conf").read_bytes()
    env["EDITOR"] = editor(tmp_path, 's/^Cores=.*/Cores="lots"/')   # then leaves the file as it is
    res = cmd(install, env, "vmedit", "web", "--edit-again", input="", timeout=30)
    assert res.returncode == 1 and "nothing changed" in res.stderr and runs(tmp_path) == 2, res.stderr
    assert (web / "set.conf").read_bytes() == before


def test_without_a_terminal_the_question_names_its_flags(install, env, web, tmp_path):
    env["EDITOR"] = editor(tmp_path, 's/^Cores=.*/Cores="lots"/')
    res = cmd(install, env, "vmedit", "web", input="")
    assert res.returncode == 2
    assert ("no answer to 'edit again? [Y/n]' (stdin closed): --edit-again or --no-edit-again answers it "
            "(your edit is kept in ") in res.stderr, res.stderr
    shutil.rmtree(os.path.dirname(res.stderr.rsplit("kept in ", 1)[1].strip().rstrip(")")))


def test_editor_order_a_failing_editor_and_an_unchanged_file(install, env, web, tmp_path):
    before = (web / "set.conf").read_bytes()
    env.pop("EDITOR", None)
    env["VISUAL"] = editor(tmp_path, 's/^Cores=.*/Cores="4"/')   # no EDITOR: VISUAL
    assert cmd(install, env, "vmedit", "web").returncode == 0 and 'Cores="4"' in (web / "set.conf").read_text()
    env["EDITOR"] = "true"                                         # EDITOR first; nothing edited
    res = cmd(install, env, "vmedit", "web")
    assert res.returncode == 0 and "no change" in res.stderr
    env["EDITOR"] = "false"
    now = (web / "set.conf").read_bytes()
    line = one_line_error(cmd(install, env, "vmedit", "web"), "vmedit: web: false failed: exited with status 1")
    assert "your edit is kept in" in line and (web / "set.conf").read_bytes() == now != before
    shutil.rmtree(os.path.dirname(line.rsplit("kept in ", 1)[1].rstrip(")")))


def test_a_change_made_meanwhile_is_not_overwritten(install, env, web, tmp_path):
    iso = tmp_path / "x.iso"
    fake_iso(iso)
    script = tmp_path / "meanwhile.sh"   # another command writes set.conf while the editor runs
    script.write_text(f"#!/bin/sh\n{install}/insert web {iso} >/dev/null 2>&1\nsed -i 's/^Cores=.*/Cores=\"2\"/' \"$1\"\n")
    script.chmod(0o755)
    env["EDITOR"] = str(script)
    line = one_line_error(cmd(install, env, "vmedit", "web"), "was changed by another command", "your edit is kept")
    assert str(iso) in (web / "set.conf").read_text() and 'Cores="1"' in (web / "set.conf").read_text()
    kept = line.rsplit("kept in ", 1)[1].rstrip(")")
    assert 'Cores="2"' in open(kept).read() and stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    shutil.rmtree(os.path.dirname(kept))


def test_dry_run_shows_the_diff_and_changes_nothing(install, env, web, tmp_path):
    before = (web / "set.conf").read_bytes()
    env["EDITOR"] = editor(tmp_path, 's/^Cores=.*/Cores="2"/')
    res = cmd(install, env, "vmedit", "web", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert '-Cores="1"' in lines and '+Cores="2"' in lines
    assert lines[-1] == "web: would replace set.conf (the old one would be kept as set.conf.sav)"
    assert (web / "set.conf").read_bytes() == before and not (web / "set.conf.sav").exists()
