"""The console relay over socketpairs and a pseudo-terminal: escape, copying both ways, the capped log."""

import os
import pty
import socket
import termios
import threading

import pytest

from kvm.host.console_relay import ConsoleLog, EscapeFilter, raw_terminal, relay


@pytest.mark.parametrize("typed, sent, quit_now", [
    (b"~.", b"", True),                      # at the very start
    (b"ls\r~.", b"ls\r", True),              # after a carriage return (raw mode Enter)
    (b"ls\n~.", b"ls\n", True),
    (b"a~.b", b"a~.b", False),               # not at a line's start: plain text
    (b"~~.", b"~.", False),                  # ~~ sends one ~ (then '.' is mid-line)
    (b"~x", b"~x", False),                   # another char after ~ goes with the ~
    (b"echo ~/x\r", b"echo ~/x\r", False),
])
def test_escape_only_at_the_start_of_a_line(typed, sent, quit_now):
    assert EscapeFilter().feed(typed) == (sent, quit_now)


def test_escape_split_across_reads():
    f = EscapeFilter()
    assert f.feed(b"ok\r~") == (b"ok\r", False)
    assert f.feed(b".") == (b"", True)


def _run(term_in, term_out, guest, log=None):
    result = {}
    t = threading.Thread(target=lambda: result.update(why=relay(term_in, term_out, guest, log)))
    t.start()
    return t, result


def test_copies_both_ways_logs_the_guest_and_quits_on_escape(tmp_path):
    guest, ours = socket.socketpair()
    kin_r, kin_w = os.pipe()
    kout_r, kout_w = os.pipe()
    log = ConsoleLog(tmp_path / "console.log")
    t, result = _run(kin_r, kout_w, ours, log)
    guest.sendall(b"login: ")
    assert os.read(kout_r, 100) == b"login: "
    os.write(kin_w, b"root\r")
    assert guest.recv(100) == b"root\r"
    os.write(kin_w, b"~.")
    t.join(5)
    assert result["why"] == "escape"
    assert (tmp_path / "console.log").read_bytes() == b"login: "
    guest.settimeout(0.2)
    with pytest.raises(socket.timeout):
        guest.recv(10)  # the escape itself never reached the guest


def test_guest_closing_ends_the_relay(tmp_path):
    guest, ours = socket.socketpair()
    kin_r, _ = os.pipe()
    _, kout_w = os.pipe()
    t, result = _run(kin_r, kout_w, ours)
    guest.close()
    t.join(5)
    assert result["why"] == "closed"


def test_terminal_closing_ends_the_relay():
    guest, ours = socket.socketpair()
    kin_r, kin_w = os.pipe()
    _, kout_w = os.pipe()
    t, result = _run(kin_r, kout_w, ours)
    os.close(kin_w)
    t.join(5)
    assert result["why"] == "hangup"


def test_log_is_capped_with_one_rotation(tmp_path):
    path = tmp_path / "console.log"
    log = ConsoleLog(path, cap=100)
    for i in range(5):
        log.write(bytes([65 + i]) * 60)
    log.close()
    assert path.read_bytes() == b"E" * 60
    assert (tmp_path / "console.log.0").read_bytes() == b"D" * 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["console.log", "console.log.0"]


def test_log_appends_to_an_existing_log_and_keeps_a_huge_write_within_the_cap(tmp_path):
    path = tmp_path / "console.log"
    path.write_bytes(b"old\n")
    log = ConsoleLog(path, cap=100)
    log.write(b"new\n")
    assert path.read_bytes() == b"old\nnew\n"
    log.write(b"x" * 500)
    assert path.read_bytes() == b"x" * 100
    assert (tmp_path / "console.log.0").read_bytes() == b"old\nnew\n"
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_log_refuses_a_symlink(tmp_path):
    (tmp_path / "target").write_text("")
    os.symlink(tmp_path / "target", tmp_path / "console.log")
    with pytest.raises(OSError):
        ConsoleLog(tmp_path / "console.log")


def test_raw_mode_on_a_pty_and_restored_after():
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    with raw_terminal(slave):
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ICANON and not during[3] & termios.ECHO and not during[3] & termios.ISIG
    assert termios.tcgetattr(slave) == before
    os.close(master)
    os.close(slave)


def test_relay_through_a_pty_sends_ctrl_c_to_the_guest():
    master, slave = pty.openpty()
    guest, ours = socket.socketpair()
    with raw_terminal(slave):
        t, result = _run(slave, slave, ours)
        os.write(master, b"\x03")       # Ctrl-C is a byte for the guest in raw mode, not a signal
        assert guest.recv(10) == b"\x03"
        guest.sendall(b"^C\r\n# ")
        assert os.read(master, 100) == b"^C\r\n# "
        os.write(master, b"\r~.")
        t.join(5)
    assert result["why"] == "escape"
    os.close(master)
    os.close(slave)
