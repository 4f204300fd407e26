"""tests/demo prints each command before running it: the printed line is what a reader types
again, quotes included (`sh -c './console --log guest | grep -a KVMGUEST'` lost them once)."""

import re
import subprocess

import pytest

from tests.conftest import REPO


def show_function():
    text = (REPO / "tests" / "demo").read_text()
    m = re.search(r"^show\(\) \{\n.*?^\}\n", text, re.M | re.S)
    assert m, "tests/demo has no show() function"
    return m.group(0)


@pytest.mark.parametrize("argv, shown", [
    (["sh", "-c", "echo a | tr a b"], "sh -c 'echo a | tr a b'"),
    (["sh", "-c", "echo ./console --log guest | grep -a console"],
     "sh -c 'echo ./console --log guest | grep -a console'"),
    (["echo", "it's", "", "plain-word", "x=1", "/a/b.c"], "echo 'it'\\''s' '' plain-word x=1 /a/b.c"),
])
def test_shown_lines_run_again_as_they_ran(argv, shown):
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in argv)
    res = subprocess.run(["bash", "-c", f"{show_function()}\nshow {quoted}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    blank, line, *output = res.stdout.split("\n")
    assert blank == "" and line == f"$ {shown}"
    again = subprocess.run(["bash", "-c", line[2:]], capture_output=True, text=True)
    assert again.stdout.split("\n") == output  # the printed command does what the demo ran
