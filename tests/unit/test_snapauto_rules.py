"""snap auto's keep rule on names alone (no ZFS): the newest auto- snapshot of each of the N latest
hours/days/ISO weeks/months that have one; rules kept independently; names not ours never kept
nor counted."""

import time

import pytest

from kvm.errors import UsageError
from kvm.storage.snapauto import check_keep, kept, name_at, when

NONE = {"hourly": 0, "daily": 0, "weekly": 0, "monthly": 0}


def keep(**counts):
    return dict(NONE, **counts)


def test_names_are_local_time_to_the_minute_and_read_back():
    epoch = time.mktime((2026, 3, 7, 9, 5, 59, 0, 0, -1))
    assert name_at(epoch) == "auto-20260307-0905"
    assert when("auto-20260307-0905").timetuple()[:5] == (2026, 3, 7, 9, 5)


@pytest.mark.parametrize("name", ["auto-20261301-0000", "auto-20260230-1200", "auto-20260101-2500",
                                  "auto-2026010-1200", "auto-20260101-1200x", "Auto-20260101-1200",
                                  "before-upgrade", "auto-", "vmsend-20260101-1200-1"])
def test_names_that_are_not_ours(name):
    assert when(name) is None
    assert kept([name, "auto-20260101-1200"], keep(hourly=5, daily=5, weekly=5, monthly=5)) == \
        {"auto-20260101-1200"}


def test_hourly_keeps_the_newest_of_each_of_the_latest_hours():
    names = ["auto-20260101-1000", "auto-20260101-1015", "auto-20260101-1059",  # hour 10: 1059
             "auto-20260101-1100", "auto-20260101-1145",                          # hour 11: 1145
             "auto-20260101-1300"]                                                # hour 13 (12 has none)
    assert kept(names, keep(hourly=2)) == {"auto-20260101-1300", "auto-20260101-1145"}
    assert kept(names, keep(hourly=3)) == {"auto-20260101-1300", "auto-20260101-1145", "auto-20260101-1059"}
    assert kept(names, keep(hourly=99)) == {"auto-20260101-1300", "auto-20260101-1145", "auto-20260101-1059"}


def test_daily_weekly_monthly_buckets():
    names = ["auto-20251230-0100", "auto-20251231-2300",   # Tue, Wed of ISO week 2026-W01
             "auto-20260101-0100", "auto-20260101-2200",   # Thu, same ISO week, another month and year
             "auto-20260105-0900",                         # Monday: ISO week 2026-W02
             "auto-20260201-0900"]
    assert kept(names, keep(daily=3)) == {"auto-20260201-0900", "auto-20260105-0900", "auto-20260101-2200"}
    # weeks from Monday: 29 Dec 2025 .. 4 Jan 2026 is one week whatever the year says
    assert kept(names, keep(weekly=3)) == {"auto-20260201-0900", "auto-20260105-0900", "auto-20260101-2200"}
    assert kept(names, keep(weekly=4)) == kept(names, keep(weekly=3)), "only three weeks have one"
    assert kept(names, keep(monthly=3)) == {"auto-20260201-0900", "auto-20260105-0900", "auto-20251231-2300"}


def test_rules_keep_independently_and_add_up():
    names = [f"auto-202601{d:02d}-{h:02d}00" for d in range(1, 11) for h in (6, 18)]
    daily = {f"auto-202601{d:02d}-1800" for d in range(8, 11)}
    hourly = {"auto-20260110-1800", "auto-20260110-0600"}
    assert kept(names, keep(hourly=2)) == hourly
    assert kept(names, keep(daily=3)) == daily
    # the newest is both an hourly and a daily one: it counts for both rules, not once
    assert kept(names, keep(hourly=2, daily=3)) == hourly | daily
    assert kept(names, NONE) == set()


def test_a_negative_count_is_refused():
    with pytest.raises(UsageError, match="--keep-weekly '-1' must be 0 or more"):
        check_keep(keep(weekly=-1))
    assert check_keep({"daily": 2}) == keep(daily=2)
