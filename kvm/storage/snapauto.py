"""snap auto: scheduled snapshot sets named auto-YYYYmmdd-HHMM, pruned by keep rules.

Each run takes one set (all or none across the VM's datasets, as `snap create`) named after
the local time it runs, then destroys the `auto-` sets no keep rule wants. The keep rules are
restic's (`forget --keep-hourly` ...), the bucket rule zfs-auto-snapshot's and sanoid's
hourly/daily/weekly/monthly schedules amount to with one series of snapshots:

- the time of a snapshot is the one its name says (so it survives a send/receive, and a test
  can name its own dates); a name that is not `auto-` followed by a valid date is not ours;
- `--keep-hourly N` keeps the newest snapshot of each of the N most recent hours that have
  one; `--keep-daily`, `--keep-weekly` (ISO weeks, from Monday) and `--keep-monthly` the same
  for days, weeks and months;
- a snapshot any rule keeps stays; the rules do not share a count (a snapshot kept as an
  hourly one can also be the daily one);
- the snapshot the run takes always stays, and so does one that a clone depends on;
- every other snapshot (yours, vmsend's, vmclone's) is never looked at.

The counts are of buckets that hold a snapshot, not of hours on the clock: with one snapshot a
day, `--keep-hourly 24` keeps 24 days. A daily schedule wants --keep-hourly 0.
"""

import datetime
import re
import time

from kvm.errors import UsageError
from kvm.host.record import field, record
from kvm.storage import snap as snapmod
from kvm.zfs.deps import clones_by_origin

PREFIX = "auto-"
NAME_FORMAT = PREFIX + "%Y%m%d-%H%M"
_NAME_RE = re.compile(r"^auto-(\d{8})-(\d{4})\Z")
BUCKETS = {  # rule -> the bucket a time falls in
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar())[:2],
    "monthly": lambda t: (t.year, t.month),
}
RULES = tuple(BUCKETS)
DEFAULT_KEEP = {"hourly": 24, "daily": 7, "weekly": 4, "monthly": 6}


def name_at(epoch):
    """The auto- name of a run at this time (local time, to the minute)."""
    return time.strftime(NAME_FORMAT, time.localtime(epoch))


def when(name):
    """The local time an auto- name stands for, or None for a name that is not one of ours."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    try:
        return datetime.datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M")
    except ValueError:
        return None


def check_keep(keep):
    """Refuse a negative count; the rules as a dict in RULES order."""
    for rule in RULES:
        if keep.get(rule, 0) < 0:
            raise UsageError(f"--keep-{rule} '{keep[rule]}' must be 0 or more")
    return {rule: keep.get(rule, 0) for rule in RULES}


def kept(names, keep):
    """The names the rules keep among `names` (names not ours are left out of the answer)."""
    dated = sorted(((when(n), n) for n in names if when(n)), reverse=True)
    out = set()
    for rule, count in keep.items():
        buckets = set()
        for stamp, name in dated:
            bucket = BUCKETS[rule](stamp)
            if bucket in buckets:
                continue  # an older one of a bucket already kept
            if len(buckets) >= count:
                break
            buckets.add(bucket)
            out.add(name)
    return out


@record()
class Plan:
    """What one run does to one VM."""

    vm: object
    take: str                 # the set to create (it may exist: then `taken` is False)
    taken: bool = True
    destroy: list = field(default_factory=list)   # SnapSets
    cloned: list = field(default_factory=list)    # names kept because clones depend on them


def plan(vm, cfg, keep, now):
    """The Plan of a run at `now` (epoch seconds): one zfs call, two when something is pruned."""
    have = snapmod.listing(snapmod.datasets_of(vm, cfg))
    p = Plan(vm, name_at(now))
    existing = have.get(p.take)
    p.taken = existing is None or not existing.complete  # an incomplete one is completed
    stay = kept(set(have.names()) | {p.take}, keep) | {p.take}
    doomed = [s for s in have.sets if when(s.name) and s.name not in stay]
    if doomed:
        table = clones_by_origin(vm.dataset().split("/")[0])
        p.cloned = [s.name for s in doomed if any(table.get(f) for f in s.full_names())]
        p.destroy = [s for s in doomed if s.name not in p.cloned]
    return p


def run(vm, keep, now):
    """Take this run's set and prune the VM's auto- sets, under the VM's lock (a running VM's
    supervisor holds it: its snapshots are taken all the same, as `snap create` does)."""
    keep = check_keep(keep)
    with snapmod.hold(vm, "snap auto", running_ok=True):
        cfg = vm.config()
        p = plan(vm, cfg, keep, now)
        if p.taken:
            snapmod.create(vm, cfg, p.take)
        if p.destroy:
            snapmod.destroy_sets(vm, p.destroy)
    return p
