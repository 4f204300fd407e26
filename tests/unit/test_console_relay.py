"""The console relay over socketpairs and a pseudo-terminal: escape, copying both ways."""

import os
import pty
import socket
import termios
import threading

import pytest

from kvm.host.console_relay import EscapeFilter, raw_terminal, relay


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


def _run(term_in, term_out, guest):
    result = {}
    t = threading.Thread(target=lambda: result.update(why=relay(term_in, term_out, guest)))
    t.start()
    return t, result


def test_copies_both_ways_and_quits_on_escape():
    guest, ours = socket.socketpair()
    kin_r, kin_w = os.pipe()
    kout_r, kout_w = os.pipe()
    t, result = _run(kin_r, kout_w, ours)
    guest.sendall(b"login: ")
    assert os.read(kout_r, 100) == b"login: "
    os.write(kin_w, b"root\r")
    assert guest.recv(100) == b"root\r"
    os.write(kin_w, b"~.")
    t.join(5)
    assert result["why"] == "escape"
    guest.settimeout(0.2)
    with pytest.raises(socket.timeout):
        guest.recv(10)  # the escape itself never reached the guest


def test_guest_closing_ends_the_relay():
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
