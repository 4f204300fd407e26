"""How vminfo and snap list print sizes and durations: as zfs list and ps do."""

import pytest

from kvm.manage.info import duration, human_size


@pytest.mark.parametrize("n, shown", [
    (0, "0B"), (512, "512B"), (1023, "1023B"), (1024, "1K"), (1536, "1.50K"), (10239, "10.0K"),
    (12800, "12.5K"), (139264, "136K"), (2 << 30, "2G"), (20 * (1 << 30) + 1, "20.0G"), (None, "-"),
])
def test_sizes_read_as_zfs_list_prints_them(n, shown):
    assert human_size(n) == shown


def test_durations():
    assert duration(3725) == "1h02m05s"
