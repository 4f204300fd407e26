"""The send/receive half of the ZFS door (kvm/zfs/__init__.py is full): lzc_send/lzc_receive-shaped argv
builders for the `zfs` command, size estimates, snapshot guids, resumable-receive detection.

The streams themselves flow through host.relay (the only place processes start): these functions
only build argv lists and read what ZFS says. Product code never asks which ZFS it runs on: each
capability (zfs send -nP, zfs receive -s) is probed from the command's own usage text once.
"""

import re

from kvm import host, zfs

_CAPS = {}


def _usage(sub):
    """The usage text `zfs SUB` prints when called without arguments (cached per process)."""
    if sub not in _CAPS:
        res = host.run(["zfs", sub], mutating=False, check=False)
        _CAPS[sub] = res.stdout + res.stderr
    return _CAPS[sub]


def can_estimate():
    """True when `zfs send -nP` exists (OpenZFS); zfs-fuse's send knows only -RDp -iI."""
    return bool(re.search(r"send \[-[A-Za-z]*n[A-Za-z]*", _usage("send")))


def can_resume():
    """True when receives can be resumed (`zfs receive -s` / `zfs send -t`)."""
    return bool(re.search(r"receive \[-[A-Za-z]*s", _usage("receive")))


def can_receive_props():
    """True when `zfs receive -o PROPERTY=VALUE` exists (OpenZFS): a property set by the receive
    itself, never missing from a received dataset."""
    return bool(re.search(r"receive \[-[A-Za-z]+\] \[-o ", _usage("receive")))


def error_text(stderr, fallback):
    """What a failed zfs send or receive said, as one line: its lines joined, without the
    resume hint OpenZFS adds to an interrupted `receive -s` (a `zfs send -t` with the token)."""
    lines = []
    for line in stderr.splitlines():
        if "resuming stream can be generated" in line:
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines) or fallback


def lzc_send_argv(snap, fromsnap=None, resume_token=None):
    """argv of a full (fromsnap None) or incremental stream of `snap` on stdout."""
    if resume_token:
        return ["zfs", "send", "-t", resume_token]
    return ["zfs", "send", *(["-i", fromsnap] if fromsnap else []), snap]


def resume_token(dataset):
    """The receive_resume_token of a dataset that holds a partial `zfs receive -s` (None: none,
    or a ZFS without resumable receives)."""
    return zfs.get_prop(dataset, "receive_resume_token") if can_resume() else None


def token_contents(token):
    """What a resume token names, decoded by `zfs send -nvP -t` on this host (see
    parse_token_contents); None when this host cannot send it (the snapshot it names is gone
    here, or the token is corrupt)."""
    res = host.run(["zfs", "send", "-nvP", "-t", token], mutating=False, check=False)
    return parse_token_contents(res.stdout + res.stderr) if res.status == 0 else None


def parse_token_contents(text):
    """{toname, toguid, fromguid, size} from what `zfs send -nvP -t TOKEN` prints: the token as
    an nvlist (`resume token contents:`, then tab-indented `name = value` lines, guids in hex),
    then the machine-readable `size` line (the bytes left). fromguid is 0 for a full stream.
    None when the text holds no toname or toguid."""
    fields = dict(re.findall(r"^\s+(\w+) = (\S+)$", text, re.M))
    if "toname" not in fields or "toguid" not in fields:
        return None
    size = [int(line.split()[-1]) for line in text.splitlines() if re.match(r"size\s+\d+$", line)]
    return {"toname": fields["toname"], "toguid": int(fields["toguid"], 0),
            "fromguid": int(fields.get("fromguid", "0"), 0), "size": size[-1] if size else 0}


def abort_partial(dataset):
    """zfs receive -A: drop the partial state a `zfs receive -s` left (a partial full receive
    goes with it)."""
    zfs.run(["receive", "-A", dataset], dataset)


def lzc_receive_argv(target, force=False, resumable=False, props=None):
    """argv of a receive of the stream on stdin into `target` (-F: roll back local changes first;
    props: {property: value} set by the receive, `-o`)."""
    opts = [x for key, value in (props or {}).items() for x in ("-o", f"{key}={value}")]
    return ["zfs", "receive", *(["-F"] if force else []), *(["-s"] if resumable else []), *opts, target]


def estimate(snap, fromsnap=None):
    """(bytes, how): `zfs send -nP` where ZFS has it; else a guess from the space properties
    (a full stream is about `referenced`; an increment about the growth of `referenced`,
    at least what the newer snapshot holds alone)."""
    if can_estimate():
        args = ["send", "-nP", *(["-i", fromsnap] if fromsnap else []), snap]
        res = host.run(["zfs", *args], mutating=False, check=False)
        for line in res.stdout.splitlines():
            if line.startswith("size"):
                return int(line.split()[-1]), "zfs send -nP"
    dataset = zfs.split_snapshot(snap)[0]
    names = [n for n in (dataset, snap, fromsnap) if n]
    try:
        props = zfs.get_props(names, ["referenced", "used"])  # one call: they exist (vmsend made them)
    except zfs.ZFSError:
        names = [n for n in names if zfs.lzc_exists(n)]
        props = zfs.get_props(names, ["referenced", "used"])
    ref = {n: int(p.get("referenced") or 0) for n, p in props.items()}
    now = ref.get(snap, ref.get(dataset, 0))
    if not fromsnap:
        return now, "referenced"
    alone = int(props.get(snap, {}).get("used") or 0)
    return max(now - ref.get(fromsnap, 0), alone, 0), "space properties"


def snapshot_guids(dataset):
    """[(short name, guid)] of a dataset's snapshots, oldest first ([] when it has none)."""
    rows = zfs.get_props([dataset], ["type", "guid", "createtxg"], recursive=True, depth=1)
    return _snaps_of(dataset, rows)


def _snaps_of(dataset, rows):
    snaps = [(int(p.get("createtxg") or 0), zfs.split_snapshot(n)[1], p.get("guid")) for n, p in rows.items()
             if p.get("type") == "snapshot" and zfs.split_snapshot(n)[0] == dataset]
    return [(short, guid) for _, short, guid in sorted(snaps)]


def dataset_state(dataset, props=()):
    """In one zfs call: None when the dataset does not exist, else ({prop: value} of the dataset
    for `props`, [(short name, guid)] of its snapshots, oldest first)."""
    try:
        rows = zfs.get_props([dataset], ["type", "guid", "createtxg", *props], recursive=True, depth=1)
    except zfs.DatasetNotFound:
        return None
    own = rows.get(dataset, {})
    return {p: own.get(p) for p in props}, _snaps_of(dataset, rows)


def rollback_destroying(snap):
    """zfs rollback -r: back to `snap`, destroying the snapshots made after it."""
    zfs.run(["rollback", "-r", snap], snap)
