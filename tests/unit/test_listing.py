"""vmlist's pure parts: the quick set.conf reader agrees with the full one, uptimes, cells, sorting."""

import pytest
from hypothesis import given, settings, strategies as st

from kvm.manage import listing
from kvm.conf import shconf
from kvm.errors import UsageError

# line shapes a set.conf may have: the quick reader must give what the full reader gives, or
# hand the text over (None); it must never read a line differently
WORDS = st.sampled_from(["uefi", "2G", "", "a b", "x#y", "$LAN", "${A}", "~/d", "a\\b", "it's", 'say "hi"',
                         "tap0 tap1", "3,virtio-net,tap0", "é", "\u00a0", "a=b", "*", "`id`", "$(id)", ";"])
KEYS = st.sampled_from(["VMrom", "Cores", "Mem", "A", "_x", "2bad", "a-b"])
LINES = st.one_of(
    st.builds(lambda k, v: f'{k}="{v}"', KEYS, WORDS),
    st.builds(lambda k, v: f"{k}='{v}'", KEYS, WORDS),
    st.builds(lambda k, v: f"{k}={v}", KEYS, WORDS),
    st.builds(lambda k, v, c: f'{k}="{v}"{c}', KEYS, WORDS, st.sampled_from([" # note", "# note", "\t#", ";", " x"])),
    st.builds(lambda k, v: f"  {k}={v} ", KEYS, WORDS),
    st.sampled_from(["", "# comment", "   # indented", "## Cores=4", "\t", "if true; then A=1; fi",
                     "export A=1", "A = 1", "A= 1", "A=1 B=2", '"A=1"', "\fA=1", "preRun() { :; }"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(LINES, max_size=6))
def test_the_quick_reader_agrees_with_the_full_one(lines):
    text = "\n".join(lines) + "\n"
    quick = listing.plain_values(text)
    if quick is None:
        return  # the full reader decides (and may refuse)
    full = shconf.read_plain(text)
    assert full.complete, (text, full.unevaluated, full.skipped)
    assert quick == full.values, text


@pytest.mark.parametrize("text", ['VMrom="uefi"\r\n', '\ufeffVMrom="uefi"\n', 'A="x"\0\n', 'A="$B"\n',
                                  'A=~/disk\n', 'A="x"y\n', 'A=$(id)\n', "A='multi\nline'\n"])
def test_the_quick_reader_leaves_every_doubt_to_the_full_one(text):
    assert listing.plain_values(text) is None


def test_the_quick_reader_reads_vmcreate_files():
    text = '# VM settings for web\n## VMrom="uefi"\nVMrom="uefi"\nCores=2  # two\nMem=\'2G\'\n\nDisk="disk"\n'
    assert listing.plain_values(text) == {"VMrom": "uefi", "Cores": "2", "Mem": "2G", "Disk": "disk"}


@pytest.mark.parametrize("seconds, shown", [
    (0, "00:00:00"), (59, "00:00:59"), (7985, "02:13:05"), (86399, "23:59:59"), (86400, "1d00h"),
    (3 * 86400 + 4 * 3600 + 59, "3d04h"), (400 * 86400, "400d00h"),
])
def test_uptime_reads_as_ps_and_vm_list_show_it(seconds, shown):
    assert listing.uptime_text(seconds) == shown


def row(name, **values):
    r = listing.Row(name, values.pop("state", "stopped"))
    for key, value in values.items():
        setattr(r, key, value)
    return r


def test_cells_human_and_exact():
    r = row("web", state="running", cpu=2, memory=1536 << 20, disk=None, vnc=5901, uptime=90061, auto=True,
            started=1700000000, pid=42, switch="lan,dmz", vlan="10,-")
    shown = {c: listing.cell(r, c) for c in listing.COLUMNS}
    assert shown == {"name": "web", "state": "running", "pid": "42", "cpu": "2", "memory": "1.50G", "loader": "-",
                     "disk": "-", "vnc": "5901", "auto": "yes", "uptime": "1d01h", "started": shown["started"],
                     "tpm": "-", "limits": "-", "pin": "-", "agent": "no", "switch": "lan,dmz", "vlan": "10,-"}
    assert listing.cell(r, "memory", parsable=True) == str(1536 << 20)
    assert listing.cell(r, "uptime", parsable=True) == "90061"
    assert listing.cell(r, "started", parsable=True) == "1700000000"


def test_sorting_numbers_states_and_missing_values():
    rows = [row("a", memory=2 << 30), row("b", memory=512 << 20, state="running"), row("c"),
            row("d", memory=16 << 30, state="orphaned")]
    names = lambda keys: [r.name for r in listing.sort_rows(rows, keys)]  # noqa: E731
    assert names([("memory", False)]) == ["b", "a", "d", "c"]
    assert names([("memory", True)]) == ["d", "a", "b", "c"]
    assert names([("state", False)]) == ["b", "d", "a", "c"]
    assert names([("state", True), ("name", True)]) == ["c", "a", "d", "b"]


def test_columns_are_checked():
    assert listing.columns("NAME,Vnc") == ["name", "vnc"]
    with pytest.raises(UsageError, match=r"-s: unknown column 'ram' \(columns: name,state,pid,"):
        listing.columns("ram", "-s")
