"""vmcreate's defaults make a VM one can reach (issue 14 item 6): `-y` alone gives a sparse disk,
a tap on the default bridge and a console; an interactive run shows what it will create and asks;
vmcreate, vminfo and start warn (one line, not an error) about a VM with no console and no network."""

import json

import pytest

from tests.conftest import cmd, create_vm, datasets, one_line_error
from tests.cli.test_run import guest_up, script, wait_for

WARNING = "has no console and no network: nothing can reach it"


def made(install, env, name, *flags):
    """./vmcreate NAME -y FLAGS as a user types it (conftest's create_vm asks for the bare VM)."""
    res = cmd(install, env, "vmcreate", name, "-y", *flags)
    assert res.returncode == 0, res.stderr
    return install / "vm" / name


def settings(d):
    """set.conf's assignments (comment lines left out)."""
    return [line for line in (d / "set.conf").read_text().splitlines() if line and not line.startswith("#")]


def test_y_alone_gives_a_disk_the_default_bridge_and_vnc_on_localhost(install, env):
    res = cmd(install, env, "vmcreate", "web", "-y")
    assert res.returncode == 0, res.stderr
    assert WARNING not in res.stderr
    d = install / "vm" / "web"
    assert settings(d) == ['VMrom="uefi"', 'Disk="disk"', 'Devices="3,virtio-net,tapWEB"', 'VNC="1"']
    st = (d / "disk").stat()
    assert st.st_size == 20 << 30 and st.st_blocks * 512 < (1 << 20), "20G, sparse"
    run = (d / "run").read_text()
    assert "CreateIF bridge bridgeLOCAL" in run and "ifconfig bridgeLOCAL addm tapWEB" in run
    info = json.loads(cmd(install, env, "vminfo", "web", "--json").stdout)
    assert info["vnc"]["address"] == "127.0.0.1" and info["com"] is None
    plan = cmd(install, env, "start", "--dry-run", "web")
    assert plan.returncode == 0 and WARNING not in plan.stderr
    assert "-s 30,fbuf,tcp=127.0.0.1:" in plan.stdout and "-s 3,virtio-net,tapWEB" in plan.stdout


def test_grub_gets_the_serial_console_and_com_yes_leaves_vnc_off(install, env):
    d = made(install, env, "g1", "--loader", "grub")
    assert 'Boot="cd0"' in settings(d) and 'Disk="disk"' in settings(d) and 'VNC="1"' not in settings(d)
    assert json.loads(cmd(install, env, "vminfo", "g1", "--json").stdout)["com"] is not None
    d = made(install, env, "c1", "--com", "yes")
    assert 'COM="1"' in settings(d) and 'VNC="1"' not in settings(d), "--com yes is the console asked for"
    d = made(install, env, "v0", "--vnc", "no")
    assert 'COM="1"' in settings(d), "no VNC: the serial console is the one left"


def test_the_bare_vm_is_still_there_when_asked_for_and_draws_a_warning(install, env, pool):
    res = cmd(install, env, "vmcreate", "bare", "-y", "--no-disk", "--no-network", "--vnc", "no", "--com", "no")
    assert res.returncode == 0, res.stderr
    assert settings(install / "vm" / "bare") == ['VMrom="uefi"']
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert warnings == [f"vmcreate: bare: warning: {WARNING} (set COM=1 or VNC=1, or add a virtio-net tap "
                        "to Devices)"]
    res = cmd(install, env, "vminfo", "bare")
    assert res.returncode == 0 and f"vminfo: bare: warning: {WARNING}" in res.stderr
    res = cmd(install, env, "start", "--dry-run", "bare")
    assert res.returncode == 0 and res.stderr.count(WARNING) == 1


def test_start_warns_once_and_starts_all_the_same(install, env):
    create_vm(install, env, "lone", "--disk-size", "4M", "--no-network", "--vnc", "no", "--com", "no")
    script(env, "lone", "run")
    res = cmd(install, env, "start", "-b", "lone")
    try:
        assert res.returncode == 0, res.stderr
        assert res.stderr.splitlines() == [f"start: lone: warning: {WARNING} (set COM=1 or VNC=1, or add a "
                                           "virtio-net tap to Devices)"]
        wait_for(lambda: guest_up(install, env, "lone"), what="the guest")
    finally:
        cmd(install, env, "stop", "-f", "lone")


@pytest.mark.parametrize("flags", [["--no-network"], ["--vnc", "no", "--com", "no"],
                                   ["--vnc", "no", "--com", "yes", "--no-network"]])
def test_a_console_or_a_network_is_enough(install, env, flags):
    res = cmd(install, env, "vmcreate", "ok", "-y", "--no-disk", *flags)
    assert res.returncode == 0 and WARNING not in res.stderr, res.stderr
    assert WARNING not in cmd(install, env, "vminfo", "ok").stderr


def test_no_disk_with_a_size_is_refused_and_changes_nothing(install, env, pool):
    before = datasets(pool)
    one_line_error(cmd(install, env, "vmcreate", "x", "-y", "--no-disk", "--disk-size", "1G"),
                   "vmcreate: x: --no-disk cannot be used with --disk-size or --from", status=2)
    assert datasets(pool) == before and not (install / "vm" / "x").exists()


def test_interactive_defaults_show_a_summary_and_ask_before_creating(install, env, pool):
    before = datasets(pool)
    # Enter to every question: uefi, 1 core, 1G, no options, 20G, network on bridgeLOCAL, VNC, no COM
    answers = "\n" * 10
    res = cmd(install, env, "vmcreate", "web", input=answers + "n\n")
    assert res.returncode == 1 and "Nothing created." in res.stderr, res.stderr
    assert datasets(pool) == before and not (install / "vm" / "web").exists()
    summary = res.stderr[res.stderr.index("VM web will be created:"):]
    for line in ("  disk:     20G, sparse file disk (nvme)",
                 "  network:  tapWEB (virtio-net) on bridge bridgeLOCAL",
                 "  console:  VNC on 127.0.0.1, first free port from 5900",
                 "Create it (Y/n)?"):
        assert line in summary, summary
    assert WARNING not in res.stderr
    res = cmd(install, env, "vmcreate", "web", input=answers + "\n")
    assert res.returncode == 0, res.stderr
    assert settings(install / "vm" / "web") == ['VMrom="uefi"', 'Disk="disk"', 'Devices="3,virtio-net,tapWEB"',
                                                'VNC="1"']


def test_interactive_none_means_no_disk_and_the_unreachable_vm_is_warned_about_first(install, env, pool):
    # uefi, cores, mem, options, disk "none", network n, VNC n, COM n, then decline
    res = cmd(install, env, "vmcreate", "web", input="\n\n\n\nnone\nn\nn\nn\nn\n")
    assert res.returncode == 1, res.stderr
    summary = res.stderr[res.stderr.index("VM web will be created:"):]
    assert "  disk:     none" in summary and "  network:  none" in summary and "  console:  none" in summary
    assert summary.index(f"vmcreate: web: warning: {WARNING}") < summary.index("Create it (Y/n)?")
    assert not (install / "vm" / "web").exists()


def test_from_an_image_keeps_its_disk_size_by_default(install, env, pool, tmp_path):
    raw = tmp_path / "tiny.raw"
    raw.write_bytes(b"\1" * (1 << 20))
    assert cmd(install, env, "image", "import", "tiny", raw).returncode == 0
    d = made(install, env, "fromimg", "--from", "tiny")
    assert (d / "disk").stat().st_size == 1 << 20, "no 20G default over an image's disk"
    assert 'Devices="3,virtio-net,tapFROMIMG"' in settings(d)
