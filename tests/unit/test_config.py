"""set.conf: reading exactly as /bin/sh does, validation, and line-preserving edits."""

import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kvm.conf import config
from kvm.errors import ConfigError


def sh_values(tmp_path, text):
    path = tmp_path / "set.conf"
    path.write_text(text)
    return config.evaluate_with_sh(path)


def test_plain_file_as_the_shell_toolkit_writes_it():
    text = ('# VM settings for pf\nVMoptions="ASHP"\nVMrom="uefi"\nDisk="disk"\nCores="2"\nMem="4G"\n'
            'LAN="tapLAN"\nBRI="bridgeLOCAL"\n## Devices="4,virtio-net,$LAN"\n'
            'Devices="4,virtio-net,$LAN 5,passthru,3/0/0"\n')
    values = config.parse_text(text)
    assert values["Devices"] == "4,virtio-net,tapLAN 5,passthru,3/0/0"
    assert values["Cores"] == "2" and values["BRI"] == "bridgeLOCAL"
    assert "VNC" not in values


@pytest.mark.parametrize("text, expected", [
    ("A='x y'", "x y"),
    ('A="a\\"b\\$c\\\\d\\q"', 'a"b$c\\d\\q'),
    ("A=a\\ b", "a b"),
    ('B=1\nA="${B}2$B"', "121"),
    ("A=x#y", "x#y"),
    ("A=x # comment", "x"),
    ('A="$"', "$"),
    ("A=", ""),
    ("A='it'\\''s'", "it's"),
    ('A="multi\nline"', "multi\nline"),
])
def test_reader_matches_sh(tmp_path, text, expected):
    assert config.parse_text(text)["A"] == expected
    assert sh_values(tmp_path, text)["A"] == expected


def test_undefined_reference_is_an_error_with_its_line():
    with pytest.raises(ConfigError, match=r"line 2: \$LAN is used but not defined"):
        config.parse_text('VMrom="uefi"\nDevices="3,virtio-net,$LAN"\n')


def test_unterminated_quote_is_an_error():
    with pytest.raises(ConfigError, match="line 1: unterminated double quote"):
        config.parse_text('Mem="2G\nCores=1\n')


@pytest.mark.parametrize("text", ["A=$(echo hi)", "if true; then A=1; fi", "A=`echo hi`", "A=${X:-d}",
                                  "export A=1", "f() { :; }; A=1"])
def test_beyond_plain_assignments_needs_sh(text):
    with pytest.raises(config.NeedsShell):
        config.parse_text(text)


def test_sh_fallback_gives_values_and_ignores_the_files_output(tmp_path):
    path = tmp_path / "set.conf"
    path.write_text('echo Mem=99G\nprintf "Cores=7\\0"\nif true; then Mem="2G"; fi\nCores=$((1+1))\n')
    values = config.read(path, evaluate=True).values
    assert values["Mem"] == "2G" and values["Cores"] == "2"
    assert "PWD" not in values and "SHLVL" not in values


def test_sh_fallback_reports_undefined_variables(tmp_path):
    path = tmp_path / "set.conf"
    path.write_text('if true; then Devices="3,virtio-net,$NOPE"; fi\n')
    with pytest.raises(ConfigError, match="NOPE"):
        config.read(path, evaluate=True).values


# ------------------------------------------------------------------ property tests

NAMES = st.sampled_from(["VMrom", "Mem", "Cores", "LAN", "X1", "_y"])
CHARS = st.text(alphabet=st.sampled_from(list("ab xyz09-_./,:=#$\"'\\`{}*?~\t")), max_size=12)


def render(value, style):
    if style == "single":
        return "'" + value.replace("'", "'\\''") + "'"
    if style == "double":
        return '"' + "".join("\\" + c if c in '"$`\\' else c for c in value) + '"'
    return "".join("\\" + c if not (c.isalnum() or c in "-_./,:=") else c for c in value) or "''"


@st.composite
def files(draw):
    lines, defined = [], []
    for _ in range(draw(st.integers(1, 6))):
        name = draw(NAMES)
        parts = []
        for _ in range(draw(st.integers(1, 3))):
            if defined and draw(st.booleans()):
                ref = draw(st.sampled_from(defined))
                parts.append(draw(st.sampled_from([f"${{{ref}}}", f'"${ref}"'])))
            else:
                parts.append(render(draw(CHARS), draw(st.sampled_from(["single", "double", "bare"]))))
        comment = draw(st.sampled_from(["", "  # note", "\t#x"]))
        lines.append(f"{name}={''.join(parts)}{comment}")
        defined.append(name)
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "# comment $X 'q", "## Cores=9"])))
    return "\n".join(lines) + "\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=files())
def test_fast_reader_equals_sh(tmp_path, text):
    assert config.parse_text(text) == sh_values(tmp_path, text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("AB=$'\"\\`{}()#; \n\tx-9")), max_size=40))
def test_reader_never_crashes(text):
    try:
        values = config.parse_text(text)
    except (ConfigError, config.NeedsShell):
        return
    assert isinstance(values, dict)


@settings(max_examples=300, deadline=None)
@given(devices=st.text(alphabet=st.sampled_from(list("0123456789,:/ abcdeinprstv-tapS")), max_size=40))
def test_devices_parser_never_crashes(devices):
    try:
        result = config.parse_devices("vm", devices, "S")
    except ConfigError as exc:
        assert exc.message and "\n" not in exc.message
        return
    for dev in result:
        assert 3 <= int(dev.slot.split(":")[0]) <= 28


# ---------------------------------------------------------------------- validation

def make(**values):
    base = {"VMrom": "uefi"}
    base.update(values)
    return config.validate("vm1", "/pool/kvm/vm/vm1", base, cpus=4)


def test_defaults_and_paths():
    cfg = make(Disk="disk", ISO="/iso/x.iso")
    assert (cfg.cores, cfg.mem, cfg.disk_driver) == (1, "1G", "nvme")
    assert cfg.disk == "/pool/kvm/vm/vm1/disk" and cfg.iso == "/iso/x.iso"
    assert cfg.vnc_addr == "127.0.0.1" and cfg.stop_timeout == 60


@pytest.mark.parametrize("values, message", [
    ({"Cores": "two"}, "Cores='two' is not a whole number"),
    ({"Cores": "0"}, "out of range"),
    ({"Mem": "2"}, "too small"),
    ({"Mem": "2GB"}, "Mem='2GB' is not a size bhyve takes: write 2G"),
    ({"Mem": "0.5G"}, "Mem='0.5G' is not a size bhyve takes: write 512M"),
    ({"VMoptions": "AHPZ"}, "letters bhyve does not take as flags: 'Z'"),
    ({"VMrom": "bios"}, "is not uefi, grub"),
    ({"VMrom": "grub"}, "Boot is required"),
    ({"VNC": "yes"}, "must be 1, wait or 0"),
    ({"VNC": "1", "wVNC": "100", "hVNC": "100"}, "out of range"),
    ({"Devices": "2,virtio-net,tap0"}, "slot 2 is kept for the ISO"),
    ({"Devices": "30,virtio-net,tap0"}, "slot 30 is kept for VNC"),
    ({"Devices": "x,virtio-net,tap0"}, "slot 'x' is not a number"),
    ({"Devices": "4,virtio-net,tap0 4,e1000,tap1"}, "use the same slot"),
    ({"Devices": "4,virtio-nte,tap0"}, "unknown device 'virtio-nte' (did you mean virtio-net?)"),
    ({"Devices": "4,passthru,3/0/0"}, "passthru needs S in VMoptions"),
    ({"Devices": "4,virtio-net"}, "needs a source"),
    ({"Disk": "a,b"}, "holds a comma"),
    ({"VNCaddr": "localhost"}, "is not an IP address"),
    ({"COM": "yes"}, "must be '0' or '1'"),
    ({"Mem": "1G\n"}, "Mem='1G\\n' is not a size"),  # a newline is never part of a valid value
    ({"VMoptions": "AH\nP"}, "bhyve does not take as flags: '\\n'"),
])
def test_bad_values_name_the_vm_and_the_value(values, message):
    with pytest.raises(ConfigError) as err:
        make(**values)
    assert message in err.value.message
    assert err.value.vm == "vm1"
    assert "\n" not in err.value.message


def test_near_misses_are_warned_about():
    cfg = make(cores="2", Memory="2G")
    assert any("'cores'" in w and "'Cores'" in w for w in cfg.warnings)
    assert cfg.cores == 1


def test_grub_forces_com():
    cfg = make(VMrom="grub", Boot="hd0,msdos1")
    assert cfg.com and cfg.loader == "grub"


@pytest.mark.parametrize("vnc", ["1", "wait"])
def test_vnc_with_grub_is_ignored_with_a_warning_as_the_shell_kvm_does(vnc):
    cfg = make(VMrom="grub", Boot="cd0", VNC=vnc, wVNC="1280", hVNC="720")
    assert cfg.vnc == "" and cfg.com and cfg.loader == "grub"
    assert cfg.warnings == (f"VNC={vnc} is ignored with the grub loader (its console is the serial one)",)


def test_a_vm_that_cannot_start_is_refused_only_when_startable_is_asked():
    assert config.validate("vm1", "/pool/kvm/vm/vm1", {"Cores": "2"}).loader == ""   # vminfo shows it
    with pytest.raises(ConfigError, match="VMrom is not set"):
        config.validate("vm1", "/pool/kvm/vm/vm1", {"Cores": "2"}, startable=True)
    reading = config.read_plain('VMrom="$(echo uefi)"\n')   # set by sh: checked at the launch only
    config.validate("vm1", "/d", reading.values, reading=reading, startable=True)


@pytest.mark.parametrize("values, message", [
    ({"hVNC": "99999"}, "hVNC='99999' is out of range (480..2160)"),
    ({"wVNC": "100"}, "wVNC='100' is out of range (640..3840)"),
    ({"Mem": "99999999999999999999G"}, "is more than bhyve can take"),
    ({"Mem": "16384P"}, "is not a size"),
])
def test_each_value_is_checked_on_its_own(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(VMrom="uefi", **values)
    assert make(VMrom="uefi", Mem="16777215T").mem_bytes == 16777215 << 40


def test_mem_units_follow_bhyve():
    assert config.mem_bytes("2048") == 2048 << 20
    assert config.mem_bytes(str(4 << 30)) == 4 << 30
    assert config.mem_bytes("1g") == 1 << 30


# ------------------------------------------------------------------------- editing

SHELL_CONF = '# VM settings for web\n## ISO="x"\nVMrom="uefi"\nLAN="tapWEB"  # the tap\nDevices="3,virtio-net,$LAN"\n'


def test_set_then_remove_keeps_every_other_line():
    text = config.set_value(SHELL_CONF, "ISO", "/iso/a b.iso")
    assert text.endswith('ISO="/iso/a b.iso"\n')
    assert text.startswith(SHELL_CONF)
    again = config.set_value(text, "ISO", "/iso/$new.iso")
    assert again.count("ISO=") == 2  # the commented example and one assignment
    assert config.parse_text(again)["ISO"] == "/iso/$new.iso"
    assert config.remove_value(again, "ISO") == SHELL_CONF


def test_value_with_quotes_and_dollars_round_trips(tmp_path):
    tricky = 'a"b$c`d\\e f;g$(x)'
    text = config.set_value("", "ISO", tricky)
    assert config.parse_text(text)["ISO"] == tricky
    assert sh_values(tmp_path, text)["ISO"] == tricky


def test_sh_q_is_safe_in_sh():
    out = subprocess.run(["sh", "-c", f"X={config.sh_quote('$(touch /tmp/pwned); `id`')}; printf %s \"$X\""],
                         capture_output=True, text=True).stdout
    assert out == "$(touch /tmp/pwned); `id`"


@pytest.mark.parametrize("typed, size, written, how", [
    ("2G", 2 << 30, "2G", None), ("2g", 2 << 30, "2g", None), ("2048M", 2 << 30, "2048M", None),
    ("2GB", 2 << 30, "2G", "read as 2G"), ("2GiB", 2 << 30, "2G", "read as 2G"), ("2 gb", 2 << 30, "2G", "read as 2G"),
    ("0.5G", 512 << 20, "512M", "read as 512M"), (".5G", 512 << 20, "512M", "read as 512M"),
    ("1.5T", 1536 << 30, "1536G", "read as 1536G"), ("1024KB", 1 << 20, "1M", "read as 1M"),
    ("512", 512 << 20, "512M", "read as 512M (MiB: a number without a unit)"),
    ("2147483648", 2 << 30, "2G", "read as 2G (bytes)"), ("4096B", 4096, "4K", "read as 4K (bytes)"),
])
def test_typed_sizes_one_rule(typed, size, written, how):
    assert config.typed_size(typed) == (size, written, how)
    assert config.mem_bytes(written) == size  # what is written reads back as bhyve reads -m


@pytest.mark.parametrize("typed, why", [
    ("lots", "is not a size"), ("2X", "is not a size"), ("-1G", "is not a size"), ("1e3M", "is not a size"),
    ("0.3G", "is not a whole number of KiB"), ("100B", "is not a whole number of KiB"), ("", "is not a size"),
])
def test_typed_sizes_refused(typed, why):
    with pytest.raises(config.Invalid, match=why):
        config.typed_size(typed)
