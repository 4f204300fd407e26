"""host.run_later: a read-only command started now and collected later (vminfo's zfs call)."""

import pytest

from kvm import host
from kvm.errors import CommandFailed


def test_output_status_and_both_pipes_filled_past_their_buffers():
    big = host.run_later(["sh", "-c", "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2; exit 3"])
    small = host.run_later(["sh", "-c", "echo out; echo err >&2"])  # two at once: each keeps its own pipes
    res = big.result()
    assert (len(res.stdout), len(res.stderr), res.status) == (300000, 200000, 3)
    res = small.result()
    assert (res.stdout, res.stderr, res.status) == ("out\n", "err\n", 0)


def test_stdin_is_empty_not_the_terminal():
    assert host.run_later(["cat"]).result().stdout == ""


def test_a_missing_command_and_a_failure_read_as_run_reports_them():
    assert host.run_later(["kvm-no-such-command"]).result().status == 127
    with pytest.raises(CommandFailed) as err:
        host.run_later(["sh", "-c", "echo 'cannot open pool/x: dataset does not exist' >&2; exit 1"]).result(check=True)
    assert err.value.line("vminfo") == "vminfo: sh failed: cannot open pool/x: dataset does not exist"
    assert host.run_later(["sh", "-c", "kill -9 $$"]).result().status == -9
