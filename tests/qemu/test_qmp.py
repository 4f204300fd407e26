"""kvm.qmp against a real qemu (no disk, no guest: QMP behaviour only)."""

import subprocess
import threading
import time

import pytest

from kvm.hypervisor.qemu.qmp import Qmp, QmpError, shutdown_reason


@pytest.fixture
def start_qemu(qemu_bin, short_dir):
    procs = []

    def start(*extra, sock=None):
        sock = sock or str(short_dir / f"q{len(procs)}.qmp")
        argv = [qemu_bin, "-machine", "q35", "-accel", "tcg", "-display", "none", "-nodefaults",
                "-no-user-config", "-action", "reboot=shutdown", "-qmp", f"unix:{sock},server=on,wait=off", *extra]
        procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE))
        return procs[-1], sock

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_connect_negotiates_and_executes(start_qemu):
    proc, sock = start_qemu("-S")
    with Qmp.connect(sock) as q:
        assert q.greeting["QMP"]["version"]["qemu"]["major"] >= 6
        assert q.execute("query-status")["status"] == "prelaunch"


def test_a_refused_command_is_an_error_with_qemus_reason(start_qemu):
    _, sock = start_qemu("-S")
    with Qmp.connect(sock) as q:
        with pytest.raises(QmpError, match="QMP no-such-command: The command no-such-command has not been found"):
            q.execute("no-such-command")
        assert q.execute("query-status")["running"] is False  # the session goes on


def test_connect_waits_for_a_socket_qemu_has_not_made_yet(start_qemu, short_dir):
    sock = str(short_dir / "late.qmp")
    threading.Timer(0.5, start_qemu, args=("-S",), kwargs={"sock": sock}).start()
    with Qmp.connect(sock, timeout=20) as q:
        assert q.execute("query-status")["status"] == "prelaunch"


def test_no_socket_is_a_clear_error_after_the_time_limit(short_dir):
    t = time.monotonic()
    with pytest.raises(QmpError, match=f"no QMP socket at {short_dir}/none.qmp after 0.3 s"):
        Qmp.connect(short_dir / "none.qmp", timeout=0.3)
    assert time.monotonic() - t < 2


def test_events_read_while_a_command_waits_are_kept(start_qemu):
    _, sock = start_qemu()
    with Qmp.connect(sock) as q:
        q.execute("stop")
        q.execute("cont")
        assert q.wait_event("STOP", timeout=5)["event"] == "STOP"
        assert q.wait_event("RESUME", timeout=5)["event"] == "RESUME"
        with pytest.raises(QmpError, match="no answer in time"):
            q.wait_event("NEVER", timeout=0.3)


def test_quit_gives_host_qmp_quit_then_the_end_of_the_session(start_qemu):
    proc, sock = start_qemu("-S")
    with Qmp.connect(sock) as q:
        q.execute("quit")
        assert shutdown_reason(q.wait_event("SHUTDOWN", timeout=10)) == "host-qmp-quit"
        assert q.wait_event("SHUTDOWN", timeout=10) is None  # qemu closed the socket
    assert proc.wait(timeout=10) == 0


def test_system_reset_ends_qemu_with_reboot_shutdown(start_qemu):
    proc, sock = start_qemu()
    with Qmp.connect(sock) as q:
        q.execute("system_reset")
        event = q.wait_event("SHUTDOWN", timeout=10)
    assert (shutdown_reason(event), event["data"]["guest"]) == ("host-qmp-system-reset", False)
    assert proc.wait(timeout=10) == 0


def test_a_command_after_qemu_is_gone_is_an_error(start_qemu):
    proc, sock = start_qemu("-S")
    q = Qmp.connect(sock)
    proc.kill()
    proc.wait()
    with pytest.raises(QmpError):
        q.execute("query-status", timeout=5)
    q.close()
