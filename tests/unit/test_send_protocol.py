"""The pieces of vmsend's protocol with vmrecv that do not need a second root: the request line
read without taking any of the stream after it, the relay through a peer that answers first,
resume tokens decoded from what `zfs send -nvP -t` prints, and the choice to resume DEST's partial
receive or refuse it. (zfs-fuse has no resumable receives, so the resume itself cannot run here:
these are the parts of it that can.)"""

import hashlib
import os
import signal
import sys
import tempfile
import textwrap
import time

import pytest

from kvm import host
from kvm.errors import StateError, UsageError
from kvm.migrate.send import partial_to_resume
from kvm.migrate.receive import read_request
from kvm.migrate.receive import newer_refusal, refusal
from kvm.zfs.stream import error_text, lzc_receive_argv, lzc_send_argv, parse_token_contents

DS = "tank/kvm/vm/web"


def pipe_with(data):
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


def test_the_request_line_is_read_and_the_stream_after_it_is_left_whole():
    stream = os.urandom(3000)
    fd = pipe_with(b"recv vmsend-20261201-1 vmsend-20261130-1 4242\n" + stream)
    assert read_request("web", fd) == ("recv", "vmsend-20261201-1", "vmsend-20261130-1", "4242", False)
    assert os.read(fd, 10000) == stream
    fd = pipe_with(b"resume vmsend-1 - 4242 force\n")
    assert read_request("web", fd) == ("resume", "vmsend-1", None, "4242", True)


@pytest.mark.parametrize("data, needle", [
    (b"recv x", "web: truncated request 'recv x'"),
    (b"send x - 1\n", "web: invalid request 'send x - 1'"),
    (b"recv x -\n", "web: invalid request 'recv x -'"),
    (b"recv x - guid\n", "web: invalid request 'recv x - guid'"),
    (b"recv x - 1 please\n", "web: invalid request 'recv x - 1 please'"),
    (b"recv " + b"x" * 600 + b" - 1\n", "web: request line too long"),
])
def test_a_bad_request_is_one_line_naming_the_vm(data, needle):
    with pytest.raises(UsageError) as exc:
        read_request("web", pipe_with(data))
    assert needle in exc.value.line("vmrecv")


def test_eof_before_any_request_means_nothing_was_asked():
    assert read_request("web", pipe_with(b"")) is None


def test_relay_reads_the_peers_answer_then_sends_request_and_stream():
    """What the far side gets is the request line, then exactly the bytes the sender wrote."""
    payload = os.urandom(5 << 20)
    far = textwrap.dedent("""
        import hashlib, sys
        from kvm.migrate.receive import read_request
        print('{"ready": true}', flush=True)
        req = read_request("web")
        data = sys.stdin.buffer.read()
        print(req[0], req[1], len(data), hashlib.sha256(data).hexdigest())
    """)
    peer = host.Peer([sys.executable, "-c", far])
    assert peer.line() == '{"ready": true}'
    seen = []
    with tempfile.NamedTemporaryFile() as fh:
        fh.write(payload)
        fh.flush()
        sent, got, total = host.relay(["cat", fh.name], peer, seen.append, b"recv snap1 - 7\n")
    assert sent.status == 0 and got.status == 0, got.stderr
    assert total == len(payload) and seen[-1] == total
    assert got.stdout.split() == ["recv", "snap1", str(len(payload)), hashlib.sha256(payload).hexdigest()]


def test_a_peer_never_asked_is_ended_without_waiting_for_it():
    peer = host.Peer([sys.executable, "-c", "import time; print('{}', flush=True); time.sleep(60)"])
    assert peer.line() == "{}"
    t0 = time.monotonic()
    assert peer.abandon().status == -signal.SIGTERM
    assert time.monotonic() - t0 < 10


def test_a_peer_that_ends_without_answering_gives_its_error():
    peer = host.Peer([sys.executable, "-c", "import sys; sys.exit('vmrecv: web: exists on DEST')"])
    assert peer.line() is None
    res = peer.finish()
    assert res.status == 1 and "exists on DEST" in res.stderr


FULL = """resume token contents:
nvlist version: 0
\tobject = 0x80
\toffset = 0x4a00000
\tbytes = 0x4b0a2f8
\ttoguid = 0x3c4dd8e7d3f7b1a2
\ttoname = tank/kvm/vm/web@vmsend-20261201-140312-1
\tcompressok = 1
full\ttank/kvm/vm/web@vmsend-20261201-140312-1\t459276288
size\t459276288
"""

INCREMENTAL = FULL.replace("\ttoguid", "\tfromguid = 0x1f\n\ttoguid").replace("full\t", "incremental\t")


def test_resume_token_contents_are_decoded():
    what = parse_token_contents(FULL)
    assert what == {"toname": "tank/kvm/vm/web@vmsend-20261201-140312-1", "toguid": 0x3c4dd8e7d3f7b1a2,
                    "fromguid": 0, "size": 459276288}
    assert parse_token_contents(INCREMENTAL)["fromguid"] == 0x1f
    assert parse_token_contents("cannot resume send: 'tank/kvm/vm/web@x' no longer exists\n") is None


def test_resumable_argv():
    assert lzc_send_argv(None, resume_token="1-abc-def") == ["zfs", "send", "-t", "1-abc-def"]
    assert lzc_receive_argv(DS, force=True, resumable=True) == ["zfs", "receive", "-F", "-s", DS]
    assert lzc_receive_argv(DS) == ["zfs", "receive", DS]


INFO = {"dataset": "backup/kvm/vm/web", "snaps": [["vmsend-1", "31"]]}


def test_no_token_nothing_to_resume():
    assert partial_to_resume("web", DS, INFO, None, None) is None


def test_a_partial_receive_of_this_vm_is_resumed():
    what = parse_token_contents(FULL)
    got = partial_to_resume("web", DS, dict(INFO, snaps=[]), "1-tok", what)
    assert got["token"] == "1-tok" and got["toname"].startswith(DS + "@")


def test_a_partial_receive_of_another_dataset_is_refused_and_left():
    what = parse_token_contents(FULL.replace("tank/kvm/vm/web@", "tank/kvm/vm/db@"))
    with pytest.raises(StateError) as exc:
        partial_to_resume("web", DS, INFO, "1-tok", what)
    line = exc.value.line("vmsend")
    assert line.startswith("vmsend: web: DEST holds a partial receive of tank/kvm/vm/db@")
    assert "`zfs receive -A backup/kvm/vm/web` there to drop it" in line


def test_an_undecodable_token_on_a_copy_is_dropped_but_on_a_new_dataset_refused():
    # a copy with snapshots (kvm:source matched on DEST): an increment of ours, whose snapshot is
    # gone here; vmrecv drops it before the fresh stream
    assert partial_to_resume("web", DS, INFO, "1-tok", None) is None
    # a half-received new dataset: nothing says whose it is
    with pytest.raises(StateError) as exc:
        partial_to_resume("web", DS, dict(INFO, snaps=[]), "1-tok", None)
    assert "partial receive that this host cannot resume" in exc.value.line("vmsend")


def test_zfs_errors_are_one_line_without_the_resume_hint():
    """OpenZFS's interrupted `receive -s` ends its message with the token to resume with."""
    text = ("cannot receive new filesystem stream: checksum mismatch or incomplete stream.\n"
            "Partially received snapshot is saved.\n"
            "A resuming stream can be generated on the sending system by running:\n"
            "    zfs send -t 1-10d5b1c6d5-f0-789c636064000310a500c4ec50360710e72765a52697\n")
    assert error_text(text, "x") == ("cannot receive new filesystem stream: checksum mismatch or incomplete "
                                     "stream. Partially received snapshot is saved.")
    two = "cannot receive incremental stream: most recent snapshot of tank/a does not\nmatch incremental source\n"
    assert error_text(two, "x") == ("cannot receive incremental stream: most recent snapshot of tank/a does not "
                                    "match incremental source")
    assert error_text("", "zfs receive exited 1") == "zfs receive exited 1"


def dest(**kw):
    info = {"exists": True, "source": None, "folder": None, "token": None, "snaps": [], "dataset": "b/kvm/vm/web"}
    info.update(kw)
    return info


def test_who_may_receive_into_a_name():
    assert refusal(dest(exists=False), "7") is None
    assert "is not a dataset" in refusal(dest(exists=False, folder="/b/kvm/vm/web"), "7")
    assert refusal(dest(source="7", snaps=[["vmsend-1", "31"]]), "7") is None
    assert "a copy of another VM (kvm:source=8)" in refusal(dest(source="8"), "7")
    # a partial full receive: no snapshot, no kvm:source, a token (whose: the sender reads it)
    assert refusal(dest(token="1-t"), "7") is None
    # a token on a dataset with snapshots and no kvm:source is someone else's replica (syncoid...)
    assert "a VM of DEST's own" in refusal(dest(token="1-t", snaps=[["auto-1", "5"]]), "7")
    # every snapshot is this VM's, but kvm:source is missing (a receive cut off before the mark)
    hint = refusal(dest(snaps=[["vmsend-1", "31"]]), "7", mine=["31", "32"])
    assert "without kvm:source" in hint and "`zfs set kvm:source=7 b/kvm/vm/web` there" in hint


def test_snapshots_made_on_dest_after_the_base_are_not_destroyed_without_force():
    names = ["vmsend-1", "before-upgrade", "vmsend-2"]
    assert newer_refusal(names, "vmsend-2", False) is None
    assert newer_refusal(["vmsend-1", "vmsend-2"], "vmsend-1", False) is None  # ours do not count
    why = newer_refusal(names, "vmsend-1", False)
    assert "snapshots made there after vmsend-1 (before-upgrade)" in why and "vmsend --force" in why
    assert newer_refusal(names, "vmsend-1", True) is None
