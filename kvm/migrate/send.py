"""vmsend: replicate or migrate a VM's dataset to another install root (over ssh, or --local).

Warm (default): send a snapshot while the VM runs, stop it, send the last increment, start it
on DEST. Cold: stop first, one send. Copy: send only; the VM keeps running here.
Every stream goes `zfs send | (count) | vmrecv` through host.relay; the far side (kvm/migrate/receive.py)
first answers what DEST holds (one JSON line), then takes a request line and the stream after it:
it checks, receives and validates, or leaves DEST as it was. Each stream has its own vmrecv,
started before it is needed (it boots while we snapshot, or while the VM stops). The source is marked kvm:migrated
only after DEST holds the last increment, so a vmsend killed at any point leaves a source that
starts as before.
"""

import json
import os
import shlex
import sys
import time

from kvm import host, zfs
from kvm import vm as vmmod
from kvm.errors import NotFound, Refused, StateError, UsageError
from kvm.host import lock
from kvm.migrate import receive
from kvm.run import power
from kvm.storage import snap as snapmod
from kvm.vm.root import is_root_dir
from kvm.zfs import stream as zfs_stream

PROGRESS_EVERY = 1.0   # seconds between progress lines


class Dest:
    """Where a VM goes: argv of a kvm command there (ssh, or this Python for --local)."""

    def __init__(self, spec=None, local=None, ssh_opts=(), remote_kvm="kvm", here=None):
        """here(command, args): runs a kvm command in this process (the CLI's main): with --local,
        vmrecv runs in a forked copy of vmsend instead of a new interpreter."""
        self.local = local
        self._here = here
        if local:
            path = os.path.realpath(local)
            if not is_root_dir(path):
                raise UsageError(f"--local {local}: not a kvm install root (no vm/ folder or marker)")
            self.label, self.root, self._prefix = path, path, [sys.executable, "-m", "kvm", "--root", path]
            return
        host_part, _, self.root = spec.partition(":")
        if not host_part or host_part.startswith("-"):
            raise UsageError(f"invalid DEST '{spec}': use [user@]host[:ROOT]")
        self.label = spec
        ssh = shlex.split(os.environ.get("KVM_SSH") or "ssh")
        for opt in ssh_opts:
            ssh += ["-o", opt]
        # after the user's: ssh takes the first value. Keepalives end a stream whose link died
        # silently within a minute, instead of the far zfs receive holding the VM for hours
        self._ssh = ssh + ["-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                           host_part]
        self._remote = shlex.split(remote_kvm) + (["--root", self.root] if self.root else [])

    def argv(self, *args):
        if self.local:
            return self._prefix + list(args)
        # ssh hands the far shell one string: every word quoted
        return self._ssh + ["--", shlex.join(self._remote + list(args))]

    def peer(self, vm_name):
        """Start vmrecv there: it answers what DEST holds of the VM, then waits for a request."""
        # --local too takes DEST's own lock of the VM: locks are per install root
        if self.local and self._here:
            return host.Peer(self.argv("vmrecv", vm_name),
                             here=lambda: self._here("vmrecv", ["--root", self.root, vm_name]))
        return host.Peer(self.argv("vmrecv", vm_name))

    def answer(self, vm_name, peer):
        """A vmrecv's first line: what DEST holds (a refusal there is its one-line error)."""
        line = peer.line()
        if line is None:
            raise StateError(self.failure(peer.finish()), vm=vm_name)
        try:
            return json.loads(line)
        except ValueError:
            peer.finish()
            raise StateError(f"on {self.label}: vmrecv answered '{line[:60]}', not its plan line (a login "
                             f"script printing there?)", vm=vm_name) from None

    def run(self, vm_name, *args):
        res = host.run(self.argv(*args), check=False)
        if res.status != 0:
            raise StateError(self.failure(res), vm=vm_name)
        return res.stdout

    def failure(self, res):
        """One line for a failed command on DEST."""
        lines = [x for x in res.stderr.strip().splitlines() if x.strip()]
        last = lines[-1] if lines else f"exit status {res.status}"
        if res.status == 127 or "command not found" in last or "No module named kvm" in last:
            return f"kvm is not installed on {self.label} ({last}): install kvm there first"
        if not self.local and res.status == 255:
            return f"ssh to {self.label} failed: {last}"
        return f"on {self.label}: {last}"


def check_runs_from(vm, rt):
    """--local: a VM of that name that runs on this host must be this root's copy: not another
    root's whose name bhyve shares host-wide (rt.elsewhere), nor one an earlier version's
    supervisor, which kept run state per name, recorded for another root."""
    there = rt.elsewhere or (vmmod.read_state(vm).get("root") if rt.supervisor or rt.bhyve else None)
    if there and there != str(vm.root.path):
        raise Refused(f"the {vm.name} running on this host is the one of {there}: stop it there first "
                         f"(one name runs once per host)", vm=vm.name)


def check_sendable(vm, cfg, migrated=None):
    """Only VMs whose data is all inside ROOT/vm/NAME (other datasets are not sent), not migrated
    (migrated: its kvm:migrated, when the caller read it already)."""
    extra = snapmod.datasets_of(vm, cfg)[1:]
    if extra:
        raise StateError(f"its data lies also on {', '.join(extra)}: vmsend sends {vm.dataset()} only "
                         f"(move the disk into the VM folder)", vm=vm.name)
    gone = migrated if migrated is not None else zfs.get_prop(vm.dataset(), receive.MIGRATED_PROP)
    if gone:
        # a vmsend killed after the mark and before the start on DEST leaves it running nowhere
        raise Refused(f"was migrated to {gone} already (kvm:migrated): start it there", vm=vm.name)


def common_snapshot(ds, far_snaps, snaps=None):
    """The newest snapshot here that DEST has too (same guid), or None. snaps: the dataset's
    (name, guid) when known."""
    there = {guid for _, guid in far_snaps}
    mine = [s for s, guid in (zfs_stream.snapshot_guids(ds) if snaps is None else snaps) if guid in there]
    return mine[-1] if mine else None


def partial_to_resume(name, ds, info, token, what):
    """Whether to resume DEST's partial receive: `what` it holds (token_contents, None when this
    host cannot send the rest) when it is a stream of this VM's dataset `ds`; None when there is
    none, or when it is this VM's copy's and cannot be resumed (vmrecv drops it before a fresh
    stream). A partial receive of anything else, or a half-received new dataset this host cannot
    resume (whose is it?), is refused and left there."""
    if not token:
        return None
    mine = what is not None and zfs.split_snapshot(what["toname"])[0] == ds
    if (what and not mine) or (not what and not info["snaps"]):
        whose = f"of {what['toname']}" if what else "that this host cannot resume"
        raise StateError(f"DEST holds a partial receive {whose} at {info['dataset']}: "
                         f"`zfs receive -A {info['dataset']}` there to drop it", vm=name)
    return dict(what, token=token) if what else None


def new_snap_name(ds, snaps=None):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    have = {s for s, _ in (zfs_stream.snapshot_guids(ds) if snaps is None else snaps)}
    n = 1
    while f"{receive.SEND_PREFIX}{stamp}-{n}" in have:
        n += 1
    return f"{receive.SEND_PREFIX}{stamp}-{n}"


class Progress:
    """Bytes, rate and time left on stderr, at most once a second, from the estimate."""

    def __init__(self, say, name, estimate):
        self.say, self.name, self.estimate = say, name, estimate
        self.start = self.last = time.monotonic()

    def __call__(self, total, final=False):
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        rate = total / max(now - self.start, 1e-6)
        line = f"{self.name}: {mib(total)} of ~{mib(self.estimate)} sent, {mib(rate)}/s"
        if not final and rate > 0 and self.estimate > total:
            line += f", ~{(self.estimate - total) / rate:.0f}s left"
        self.say(line)


def mib(n):
    return f"{n / (1 << 20):.1f} MiB"


class Sender:
    """One vmsend run: the plan, then its steps. close() ends the vmrecv processes not used."""

    def __init__(self, vm, dest, mode, say, start=True, keep=False, peer=None, force=False):
        """peer: the vmrecv for the first stream, when the caller started it already. force: roll
        back what DEST's copy changed since it was started there."""
        self.vm, self.dest, self.mode, self.say = vm, dest, mode, say
        self.start, self.keep, self.force = start, keep, force
        self.ds = vm.dataset()
        self.cfg = vm.config()
        props = zfs.get_props([self.ds], [receive.MIGRATED_PROP, "guid"]).get(self.ds, {})
        check_sendable(vm, self.cfg, migrated=props.get(receive.MIGRATED_PROP) or "")
        self.source = props.get("guid")
        self._snaps = None  # the dataset's (name, guid), read once until a snapshot is made (snaps())
        self.sent = 0       # bytes relayed to DEST by this run (vmsend --json)
        self.peers, self.answered = [peer] if peer else [], set()
        self.peer = peer or self.spare()
        try:
            self.info = self.ready(self.peer, check=False)
            rt = vmmod.runtime(vm)
            self.running = bool(rt.supervisor or rt.bhyve)
            if dest.local:
                check_runs_from(vm, rt)
            self.check_dest()
        except BaseException:
            self.close()
            raise

    def check_dest(self):
        """Refuse, before anything is sent, what DEST must not receive (see receive's refusals)."""
        mine = [guid for _, guid in self.snaps()]
        why = receive.refusal(self.info, self.source, mine) or receive.started_refusal(self.info, self.force)
        if why:
            raise StateError(why, vm=self.vm.name)
        receive.check_firmware(self.vm.name, self.cfg, self.info["firmware"])
        receive.check_switches(self.vm.name, self.cfg, self.info.get("switches"), self.force)
        self.common = common_snapshot(self.ds, self.info["snaps"], self.snaps())
        self.partial = self.resumable(self.info.get("token"))
        if self.info["exists"] and self.common is None and not self.partial:
            raise StateError("DEST's copy shares no snapshot with this VM: destroy it there to send in full",
                             vm=self.vm.name)
        names = [s for s, _ in self.info["snaps"]]
        why = receive.newer_refusal(names, self.common, self.force)
        if why:
            raise StateError(why, vm=self.vm.name)

    @property
    def forced(self):
        return " force" if self.force else ""

    def spare(self):
        """A vmrecv for a later stream, started now: it boots while we work."""
        peer = self.dest.peer(self.vm.name)
        self.peers.append(peer)
        return peer

    def ready(self, peer, check=True):
        """A vmrecv's answer (read once). `check`: DEST must still hold the common snapshot."""
        if id(peer) in self.answered:
            return None
        self.answered.add(id(peer))
        info = self.dest.answer(self.vm.name, peer)
        if check and common_snapshot(self.ds, info["snaps"], self.snaps()) != self.common:
            raise StateError(f"DEST's copy changed while vmsend ran (it lacks {self.common} now): run vmsend again",
                             vm=self.vm.name)
        return info

    def close(self):
        for peer in self.peers:
            peer.abandon()  # one still waiting for a request has only looked

    def resumable(self, token):
        """What DEST's partial receive (its resume token) holds, decoded here; see partial_to_resume."""
        what = zfs_stream.token_contents(token) if token else None
        return partial_to_resume(self.vm.name, self.ds, self.info, token, what)

    def resume(self, peer):
        """Send the rest of DEST's partial receive (zfs send -t); DEST then holds its snapshot."""
        what = self.partial
        snap = zfs.split_snapshot(what["toname"])[1]
        # the base by DEST's own snapshots: `zfs send -t` may build on a bookmark here
        base = next((s for s, g in self.info["snaps"] if int(g) == what["fromguid"]), None)
        self.say(f"{self.vm.name}: resuming the interrupted send of {snap} ({mib(what['size'])} left)")
        self.stream(zfs_stream.lzc_send_argv(None, resume_token=what["token"]),
                    f"resume {snap} {base or '-'} {self.source}{self.forced}", what["size"], peer, snap, base,
                    made=False)
        self.partial = None

    def transfer(self, peer):
        """Snapshot the VM and send it (incremental from the common snapshot) to DEST through
        peer, once peer has answered (no snapshot is made for a DEST that changed meanwhile)."""
        self.ready(peer)
        snap = self.snapshot()
        base = self.common
        full, frm = zfs.snapshot_name(self.ds, snap), zfs.snapshot_name(self.ds, base) if base else None
        est, _ = zfs_stream.estimate(full, frm)
        self.stream(zfs_stream.lzc_send_argv(full, frm), f"recv {snap} {base or '-'} {self.source}{self.forced}", est, peer,
                    snap, base)

    def stream(self, send_argv, request, est, peer, snap, base, made=True):
        """One stream to a vmrecv. On failure the snapshot made for it goes (unless DEST kept a
        partial receive to resume from it), and DEST is as it was (vmrecv undoes its part)."""
        self.ready(peer)
        progress = Progress(self.say, self.vm.name, est)
        sent, got, total = host.relay(send_argv, peer, progress, f"{request}\n".encode())
        if sent.status != 0 or got.status != 0:
            kept = receive.PARTIAL_KEPT in got.stdout.splitlines()
            # vmrecv killed or the connection lost (not vmrecv's own exit 1 or 2): DEST may keep
            # what came, and only the snapshot it came from can resume it
            unsure = not kept and self.info["resumable"] and got.status not in (0, 1, 2)
            if made and not kept and not unsure:
                zfs.lzc_destroy_snaps([zfs.snapshot_name(self.ds, snap)])
            why = (self.dest.failure(got) if got.status != 0 else
                   f"zfs send failed: {zfs_stream.error_text(sent.stderr, f'exit status {sent.status}')}")
            again = f"sends again from {base}, the last snapshot both sides have" if base else "sends again in full"
            again = ("resumes where this one stopped" if kept else
                     f"resumes where this one stopped if DEST kept what came, else it {again}" if unsure else again)
            raise StateError(f"{why} (run vmsend again: it {again})", vm=self.vm.name)
        progress(total, final=True)
        self.sent += total
        for line in got.stdout.splitlines():
            self.say(f"{self.vm.name}: on {self.dest.label}: {line}")
        self.common = snap

    def snaps(self):
        """The VM dataset's snapshots (name, guid), oldest first: one zfs call per state."""
        if self._snaps is None:
            self._snaps = zfs_stream.snapshot_guids(self.ds)
        return self._snaps

    def snapshot(self):
        name = new_snap_name(self.ds, self.snaps())
        zfs.lzc_snapshot([zfs.snapshot_name(self.ds, name)])
        self._snaps = None  # its guid is read when next asked
        return name

    def run(self):
        """Carry out the mode; returns the downtime in seconds (None when the VM kept running)."""
        peer = self.peer
        if self.partial:
            self.resume(peer)
            peer = self.spare()
        if self.mode == "copy" or not self.running:
            with self._lock_unless_running():
                self.transfer(peer)
                self.finish(started=False)
            return None
        if self.mode == "warm":
            self.transfer(peer)  # while the guest runs: the bulk of the data
            peer = self.spare()  # the last increment's vmrecv boots while the guest stops
        t0 = time.monotonic()
        self.say(f"{self.vm.name}: stopping for the {'last increment' if self.mode == 'warm' else 'send'}")
        power.stop_vm(self.vm)
        try:
            with lock.hold_vm(self.vm.run, "vmsend"):
                self.transfer(peer)
                self.finish(started=self.start)
        except StateError as exc:
            raise StateError(f"{exc.message}; it is stopped here now", vm=self.vm.name) from None
        if self.start:
            try:
                self.dest.run(self.vm.name, "start", "-b", self.vm.name)
            except StateError as exc:
                raise StateError(f"is on {self.dest.label} now, but starting it there failed: {exc.message}",
                                 vm=self.vm.name) from None
        return time.monotonic() - t0

    def _lock_unless_running(self):
        """The VM's lock while it is stopped; a running VM's supervisor holds it (copy)."""
        return snapmod.hold(self.vm, "vmsend", running_ok=True)

    def finish(self, started):
        """Mark the source (a migration), then prune the send snapshots here down to the common one."""
        if self.mode != "copy" and not self.keep:
            zfs.set_prop(self.ds, receive.MIGRATED_PROP, self.dest.label)
        receive.prune(self.ds, self.common)

    def plan_lines(self):
        """--dry-run: the exact pipelines, with the estimated sizes."""
        snap = zfs.snapshot_name(self.ds, f"{receive.SEND_PREFIX}<time>")
        frm = zfs.snapshot_name(self.ds, self.common) if self.common else None
        est, how = zfs_stream.estimate(self.ds, frm)

        recv = shlex.join(self.peers[0].argv)

        def pipe(base, size, send=None, request="recv"):
            send = send or zfs_stream.lzc_send_argv(snap, base and zfs.snapshot_name(self.ds, base))
            return (f"{shlex.join(send)} | (vmsend counts, after the request line "
                    f"'{request} {zfs.split_snapshot(snap)[1]} {base or '-'} {self.source}') | {recv}    # {size}")
        verb = "copy" if self.mode == "copy" else "migrate"
        out = [f"# would {verb} {self.vm.name} to {self.dest.label}: {self.mode}, "
               f"{'running' if self.running else 'stopped'}, "
               f"{'incremental from ' + self.common if self.common else 'full'}"]
        first = [f"zfs snapshot {snap}", pipe(self.common, f"~{mib(est)} ({how})")]
        if self.partial:
            rest = zfs_stream.lzc_send_argv(None, resume_token=self.partial["token"])
            first.insert(0, pipe(None, f"~{mib(self.partial['size'])} left", rest, "resume"))
        if not self.running or self.mode == "copy":
            steps = first
        else:
            steps = first if self.mode == "warm" else []
            base = f"{receive.SEND_PREFIX}<previous>" if self.mode == "warm" else self.common
            steps += [f"stop {self.vm.name}", f"zfs snapshot {snap}", pipe(base, "what changed meanwhile")]
            if self.start:
                steps.append(shlex.join(self.dest.argv("start", "-b", self.vm.name)))
        if self.mode != "copy" and not self.keep:
            steps.append(f"zfs set {receive.MIGRATED_PROP}={self.dest.label} {self.ds}")
        return out + steps


def migrated_to(vm):
    """Where vmsend migrated the VM (its kvm:migrated mark), or ''."""
    return zfs.get_prop(vm.dataset(), receive.MIGRATED_PROP) or ""


def check_not_migrated(vm, mark=False):
    """start's refusal: a VM migrated elsewhere must not run here too. mark (under the VM's
    lock): a received copy (kvm:source) started here gets kvm:started, so that a later vmsend
    does not roll back what it changes here unless told to (--force)."""
    try:
        dataset = vm.dataset()
    except NotFound:
        return  # a root that is no ZFS mountpoint (a plain folder) was never sent anywhere
    props = zfs.get_props([dataset], [receive.MIGRATED_PROP, receive.SOURCE_PROP, receive.STARTED_PROP])
    props = props.get(dataset, {})
    gone = props.get(receive.MIGRATED_PROP)
    if gone:
        raise Refused(f"was migrated to {gone}: start it there, or `zfs inherit {receive.MIGRATED_PROP} "
                         f"{vm.dataset()}` to run this copy here", vm=vm.name)
    if mark and props.get(receive.SOURCE_PROP) and not props.get(receive.STARTED_PROP):
        zfs.set_prop(dataset, receive.STARTED_PROP, time.strftime("%Y-%m-%dT%H:%M:%S"))
