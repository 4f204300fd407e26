"""set.conf read safely: nothing run unless asked and safe, what sh reads differently refused,
typed settings checked one by one."""

import os

import pytest
from hypothesis import given, settings, strategies as st

from kvm.conf import config
from kvm.errors import ConfigError, KvmError, PermissionDenied
from kvm.host.record import FrozenError, fields

HOSTILE = 'VMrom="uefi"\nX=$(touch {m}.1)\nCores=`touch {m}.2`\nif touch {m}.3; then Mem=2G; fi\nY="$X/a"\nZ=ok\n'


def conf(tmp_path, text, mode=0o644):
    folder = tmp_path / "vm"
    folder.mkdir(mode=0o755, exist_ok=True)
    path = folder / "set.conf"
    path.write_bytes(text.encode())
    path.chmod(mode)
    return path


# ------------------------------------------------------------ reading without running

def test_the_plain_reader_never_runs_anything_and_says_what_it_skipped(tmp_path):
    marker = tmp_path / "ran"
    reading = config.read(conf(tmp_path, HOSTILE.format(m=marker)), evaluate=False)
    assert list(tmp_path.glob("ran*")) == []
    assert reading.values == {"VMrom": "uefi", "Z": "ok"}
    assert reading.unevaluated == {"X": "line 2 not evaluated: uses $(...)",
                                   "Cores": "line 3 not evaluated: uses `...`",
                                   "Y": "line 5 not evaluated: uses $X, not evaluated"}
    assert reading.skipped == ["line 4 not evaluated: not a plain assignment"]


def test_unevaluated_settings_are_validated_at_their_default_and_reported(tmp_path):
    path = conf(tmp_path, HOSTILE.format(m=tmp_path / "ran"))
    cfg = config.load("vm1", str(path.parent), cpus=4, evaluate=False)
    assert cfg.cores == 1 and cfg.unevaluated["Cores"].startswith("line 3 not evaluated")
    assert any("Cores line 3 not evaluated" in w for w in cfg.not_evaluated)
    assert any("line 4 not evaluated" in w for w in cfg.not_evaluated)
    assert all("\n" not in w for w in cfg.not_evaluated) and not cfg.warnings


def test_a_plain_value_after_an_unevaluated_one_counts_again():
    reading = config.read_plain("A=$(x)\nA=1\nB=$A\n")
    assert reading.values == {"A": "1", "B": "1"} and reading.complete


def test_evaluating_reads_what_sh_reads_once_the_file_is_safe(tmp_path):
    path = conf(tmp_path, 'VMrom="uefi"\nCores=$(echo 2)\nif true; then Mem=2G; fi\n')
    assert config.read(path, evaluate=True).values == {"VMrom": "uefi", "Cores": "2", "Mem": "2G"}


@pytest.mark.parametrize("spoil, needle", [
    (lambda p: p.chmod(0o666), "writable by group or others"),
    (lambda p: p.chmod(0o664), "writable by group or others"),
    (lambda p: os.chown(p, 65534, 65534), "not owned by root (uid 65534)"),
    (lambda p: p.parent.chmod(0o777), "writable by group or others"),
    (lambda p: os.chown(p.parent, 65534, 65534), "not owned by root (uid 65534)"),
    (lambda p: (p.rename(p.parent / "real"), p.symlink_to(p.parent / "real")), "symbolic link"),
])
def test_evaluating_refuses_unsafe_files_before_running_them(tmp_path, spoil, needle):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    marker = tmp_path / "ran"
    path = conf(tmp_path, HOSTILE.format(m=marker))
    spoil(path)
    with pytest.raises(KvmError) as err:
        config.read(path, evaluate=True)
    assert needle in err.value.message and "\n" not in err.value.message
    assert list(tmp_path.glob("ran*")) == []


def test_a_failing_line_is_an_error_not_skipped(tmp_path):
    path = conf(tmp_path, 'Cores=$(false)\nVMrom="uefi"\n')
    with pytest.raises(ConfigError, match="set.conf"):
        config.read(path, evaluate=True)


# ---------------------------------------------------- what sh reads another way (item 17)

@pytest.mark.parametrize("text, needle", [
    ('VMrom="uefi"\r\nCores="2"\r\n', "line 1: VMrom: carriage return"),
    ('# made on Windows\nCores="2"\r\n', "line 2: Cores: carriage return"),
    ('\ufeffVMrom="uefi"\nCores=2\n', "line 1: VMrom: the file starts with a byte order mark"),
    ('VMrom="uefi"\nMem = "4G"\nCores=2\n', "line 2: Mem: spaces around '='"),
    ('Mem ="4G"\n', "line 1: Mem: spaces around '='"),
    ('VMrom="uefi"\nMem= 4G\n', "line 2: Mem: '4G' follows on the same line"),
    ('Mem=4 G\n', "line 1: Mem: 'G' follows"),
])
def test_text_sh_reads_differently_is_refused_naming_key_and_line(tmp_path, text, needle):
    path = conf(tmp_path, text)
    for evaluate in (False, True):
        with pytest.raises(ConfigError) as err:
            config.read(path, evaluate=evaluate)
        assert needle in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize("key", ["Cores", "RestartMax", "RestartWindow", "StopTimeout"])
@pytest.mark.parametrize("digit", ["\u00b2", "\u0663", "\uff12", "1\u0663"])
def test_only_ascii_digits_are_numbers(key, digit):
    with pytest.raises(ConfigError) as err:
        config.validate("vm1", "/vm", {"VMrom": "uefi", key: digit})
    assert f"{key}={digit!r} is not a whole number" in err.value.message


@pytest.mark.parametrize("key", ["ISO", "Disk", "VMrom", "VNCpassword"])
def test_a_newline_in_a_path_or_password_is_refused(key):
    value = "/iso/a\nb-uefi.iso"
    with pytest.raises(ConfigError) as err:
        config.validate("vm1", "/vm", {"VMrom": "uefi", key: value})
    assert f"{key}=" in err.value.message and "control character" in err.value.message


def test_a_hand_written_iso_path_with_a_newline_is_refused_from_the_file(tmp_path):
    path = conf(tmp_path, 'VMrom="uefi"\nISO="/iso/a\nb.iso"\n')
    with pytest.raises(ConfigError, match="ISO='/iso/a\\\\nb.iso' holds a control character"):
        config.load("vm1", str(path.parent), evaluate=False)


def test_devices_may_span_lines():
    cfg = config.validate("vm1", "/vm", {"VMrom": "uefi", "Devices": "3,virtio-net,tap0\n\t4,e1000,tap1"})
    assert [d.arg() for d in cfg.devices] == ["3,virtio-net,tap0", "4,e1000,tap1"]


# ------------------------------------------------------------------------ typed config

def test_config_and_devices_are_frozen_values():
    cfg = config.validate("vm1", "/vm", {"VMrom": "uefi", "Devices": "3,virtio-net,tap0"}, cpus=4)
    with pytest.raises(FrozenError):
        cfg.cores = 4
    with pytest.raises(FrozenError):
        cfg.devices[0].slot = "5"
    assert cfg.devices == (config.Device("3", "virtio-net", "tap0"),)
    assert hash(cfg.devices[0]) == hash(config.Device("3", "virtio-net", "tap0"))
    assert set(fields(cfg)) >= {"disk", "devices", "vnc", "loader", "unevaluated"}
    # variables and unevaluated do not count in comparisons, as with dataclasses' compare=False
    other = config.validate("vm1", "/vm", {"VMrom": "uefi", "Devices": "3,virtio-net,tap0", "X": "1"}, cpus=4)
    assert other == cfg and other.variables != cfg.variables


def test_every_setting_has_its_checker_in_order():
    names = [c.__name__ for c in config.CHECKERS]
    assert names.index("_vmrom") < names.index("_boot") < names.index("_vnc")  # use the loader kind
    assert names.index("_options") < names.index("_devices")  # passthru needs S


def test_a_password_makes_the_mode_0640_and_never_wider():
    with_pw = config.validate("vm1", "/vm", {"VMrom": "uefi", "VNCpassword": "x"})
    without = config.validate("vm1", "/vm", {"VMrom": "uefi"})
    assert config.file_mode(with_pw) == 0o640 and config.file_mode(with_pw, 0o600) == 0o600
    assert config.file_mode(with_pw, 0o666) == 0o640 and config.file_mode(without) == 0o644


# ------------------------------------------------------------------------ properties

@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("AB=$'\"\\`{}()#; \n\tx-9")), max_size=40))
def test_the_tolerant_reader_agrees_with_the_strict_one_and_never_crashes(text):
    try:
        strict = config.parse_text(text)
    except config.NeedsShell:
        strict = None
    except ConfigError:
        return
    try:
        reading = config.read_plain(text)
    except ConfigError:
        assert strict is None  # only a statement it had to skip can hide a later error
        return
    if strict is not None:
        assert reading.values == strict and reading.complete
    else:
        assert not reading.complete
