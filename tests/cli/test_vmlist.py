"""vmlist as `zfs list`/`vm list` list things: columns, -o, -s/-S, -H, -p, --json, AUTO from rc.conf,
a running VM's VNC port and uptime, and the one-line errors of bad columns."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from tests.conftest import cmd, create_vm, one_line_error
from tests.cli.test_run import guest_up, script, status, wait_for

DEFAULT_HEADER = ["NAME", "STATE", "CPU", "MEMORY", "LOADER", "DISK", "VNC", "AUTO", "UPTIME"]


def three(install, env):
    """web: uefi, 2 cores, 2G, a 20G disk; deb: grub, 512M, 1G disk; bare: no loader, no disk."""
    create_vm(install, env, "web", "--cores", "2", "--mem", "2G", "--disk-size", "20G")
    create_vm(install, env, "deb", "--loader", "grub", "--boot", "hd0,msdos1", "--mem", "512M",
              "--disk-size", "1G")
    bare = create_vm(install, env, "bare", "--disk-size", "1G")
    (bare / "set.conf").write_text("# set by hand\nMem=1536M\n")


def table(res):
    assert res.returncode == 0, res.stderr
    return [line.split() for line in res.stdout.splitlines()]


def test_default_columns_like_vm_list(install, env):
    three(install, env)
    res = cmd(install, env, "vmlist")
    assert table(res) == [DEFAULT_HEADER,
                          ["bare", "stopped", "1", "1.50G", "-", "-", "-", "no", "-"],
                          ["deb", "stopped", "1", "512M", "grub", "1G", "-", "no", "-"],
                          ["web", "stopped", "2", "2G", "uefi", "20G", "-", "no", "-"]]
    assert res.stderr == ""


def test_h_p_o_exact_numbers_tab_separated(install, env):
    three(install, env)
    res = cmd(install, env, "vmlist", "-H", "-p", "-o", "name,memory,disk,cpu,started")
    assert res.returncode == 0, res.stderr
    assert res.stdout == ("bare\t1610612736\t-\t1\t-\n"
                          "deb\t536870912\t1073741824\t1\t-\n"
                          "web\t2147483648\t21474836480\t2\t-\n")
    # upper case names work as zfs's do; the header follows -o
    assert table(cmd(install, env, "vmlist", "-o", "NAME,Loader"))[0] == ["NAME", "LOADER"]


def test_sort_numeric_descending_and_several_keys(install, env):
    three(install, env)
    create_vm(install, env, "big", "--mem", "16G", "--disk-size", "2G")

    def names(*flags):
        res = cmd(install, env, "vmlist", "-H", "-o", "name", *flags)
        assert res.returncode == 0, res.stderr
        return res.stdout.split()
    # numerically: 512M < 1.50G < 2G < 16G (as text "16G" would come before "2G")
    assert names("-s", "memory") == ["deb", "bare", "web", "big"]
    assert names("-S", "memory") == ["big", "web", "bare", "deb"]
    assert names("-s", "disk") == ["deb", "big", "web", "bare"], "a VM without a disk comes last"
    assert names("-S", "disk") == ["web", "big", "deb", "bare"], "last when descending too"
    assert names("-s", "cpu", "-S", "name") == ["deb", "big", "bare", "web"]
    assert names("-s", "loader", "-s", "name") == ["deb", "big", "web", "bare"]


@pytest.mark.parametrize("flags, needle", [
    (["-o", "name,colour"], "-o: unknown column 'colour'"),
    (["-o", ""], "-o: unknown column ''"),
    (["-o", "name,,state"], "-o: unknown column ''"),
    (["-s", "size"], "-s: unknown column 'size'"),
    (["-S", "ram", "--json"], "-S: unknown column 'ram'"),
])
def test_unknown_columns_are_one_line_usage_errors(install, env, flags, needle):
    create_vm(install, env, "web", "--disk-size", "1G")
    res = cmd(install, env, "vmlist", *flags)
    columns = "columns: name,state,pid,cpu,memory,loader,disk,vnc,auto,uptime,started"
    if "--json" in flags:  # a --json command line's error is a JSON object (kvm(8) JSON OUTPUT)
        err = json.loads(one_line_error(res, status=2))
        assert (err["prog"], err["kind"]) == ("vmlist", "usage") and needle in err["error"] and columns in err["error"]
    else:
        one_line_error(res, "vmlist: ", needle, columns, status=2)
    assert res.stdout == ""


def test_json_has_every_column_with_exact_numbers(install, env):
    three(install, env)
    rows = json.loads(cmd(install, env, "vmlist", "--json", "-o", "name").stdout)  # -o does not thin JSON
    web = next(r for r in rows if r["name"] == "web")
    assert web == {"schema": 1, "name": "web", "state": "stopped", "pid": 0, "supervisor": 0, "cpu": 2, "memory": 2 << 30,
                   "loader": "uefi", "disk": 20 << 30, "vnc": None, "auto": False, "uptime": None,
                   "started": None, "hypervisor": "bhyve", "accelerator": "vmm",
                   "tpm": None, "limits": None, "pin": None, "agent": False, "switch": None, "vlan": None,
                   "addresses": []}
    assert [r["name"] for r in rows] == ["bare", "deb", "web"]
    assert [r["name"] for r in json.loads(cmd(install, env, "vmlist", "--json", "-S", "disk").stdout)] == \
        ["web", "deb", "bare"]


def test_switch_and_vlan_columns_from_set_conf_alone(install, env):
    """SWITCH and VLAN (issue 21): the NICs' switches and VLANs in Switch's order, `-` without one,
    the same in --json (null); taken from set.conf only: no ifconfig, no switch file read."""
    from tests.conftest import calls
    for name in ("lan", "dmz"):
        assert cmd(install, env, "switch", "create", name).returncode == 0
    create_vm(install, env, "web", "--disk-size", "1G", "--switch", "lan", "--vlan", "10", "--switch", "dmz")
    create_vm(install, env, "db", "--disk-size", "1G", "--switch", "lan")
    create_vm(install, env, "bare", "--disk-size", "1G")
    os.rename(install / "switches", install / "switches.away")   # vmlist must not need them
    n = len(calls(env))
    res = cmd(install, env, "vmlist", "-H", "-o", "name,switch,vlan")
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    assert res.stdout == "bare\t-\t-\ndb\tlan\t-\nweb\tlan,dmz\t10,-\n"
    assert table(cmd(install, env, "vmlist", "-o", "name,switch"))[0] == ["NAME", "SWITCH"]
    rows = {r["name"]: (r["switch"], r["vlan"]) for r in json.loads(cmd(install, env, "vmlist", "--json").stdout)}
    assert rows == {"bare": (None, None), "db": ("lan", None), "web": ("lan,dmz", "10,-")}
    res = cmd(install, env, "vmlist", "-H", "-o", "name", "-s", "switch")
    assert res.stdout.split() == ["db", "web", "bare"], "sorted as text, a VM without a switch last"
    assert calls(env)[n:] == [], "vmlist ran a tool"
    # moved to another switch and VLAN: shown at once (the cached facts of the old file are not used)
    assert cmd(install, env, "vmset", "db", "Switch=tapDB=dmz:20").returncode == 0
    assert cmd(install, env, "vmlist", "-H", "-o", "name,switch,vlan").stdout.splitlines()[1] == "db\tdmz\t20"


def test_auto_is_what_rc_conf_enables(install, env, sysroot):
    three(install, env)
    assert cmd(install, env, "dorc", "web", "-y", "--enable").returncode == 0
    assert cmd(install, env, "dorc", "deb", "-y").returncode == 0  # a script, not enabled
    # the host-wide rc.d/kvm, enabled, starting bare
    shutil.copy(install / "rc.d" / "kvm", sysroot / "rc.d" / "kvm")
    with open(sysroot / "rc.conf", "a") as fh:
        fh.write('kvm_enable="YES"\nkvm_list="bare other"\n')

    def auto():
        res = cmd(install, env, "vmlist", "-H", "-o", "name,auto")
        assert res.returncode == 0, res.stderr
        return dict(line.split("\t") for line in res.stdout.splitlines())
    assert auto() == {"bare": "yes", "deb": "no", "web": "yes"}
    with open(sysroot / "rc.conf", "a") as fh:
        fh.write('kvm_enable="NO"\ndeb_enable="yes"\n')  # later lines win, as sh reads them
    assert auto() == {"bare": "no", "deb": "yes", "web": "yes"}
    assert cmd(install, env, "dorc", "-r", "deb").returncode == 0
    (sysroot / "rc.conf").write_text((sysroot / "rc.conf").read_text() + 'deb_enable="YES"\n')
    assert auto()["deb"] == "no", "enabled in rc.conf but no script of ours: the host does not start it"


def test_auto_reads_an_rc_conf_that_needs_sh_without_running_it(install, env, sysroot):
    create_vm(install, env, "web", "--disk-size", "1G")
    assert cmd(install, env, "dorc", "web", "-y").returncode == 0
    marker = sysroot / "ran"
    with open(sysroot / "rc.conf", "a") as fh:
        fh.write(f'ifconfig_em0="$(touch {marker})"\nweb_enable="YES"\n')
    res = cmd(install, env, "vmlist", "-H", "-o", "name,auto")
    assert (res.returncode, res.stdout) == (0, "web\tyes\n"), res.stderr
    assert not marker.exists()


def test_a_broken_set_conf_is_listed_with_a_warning(install, env):
    create_vm(install, env, "good", "--disk-size", "1G")
    bad = create_vm(install, env, "bad", "--disk-size", "1G")
    (bad / "set.conf").write_text('VMrom="uefi"\nCores="lots"\n')
    crlf = create_vm(install, env, "crlf", "--disk-size", "1G")
    (crlf / "set.conf").write_text('VMrom="uefi"\r\nCores="2"\r\n')
    res = cmd(install, env, "vmlist", "-o", "name,state,cpu,loader")
    assert table(res) == [["NAME", "STATE", "CPU", "LOADER"], ["bad", "stopped", "-", "uefi"],
                          ["crlf", "stopped", "-", "-"], ["good", "stopped", "1", "uefi"]]
    lines = res.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("vmlist: bad: warning: set.conf: Cores='lots' is not a whole number")
    assert lines[1].startswith("vmlist: crlf: warning: ") and "carriage return" in lines[1]


def test_a_running_vm_shows_its_vnc_port_and_uptime(install, env):
    create_vm(install, env, "web", "--vnc", "yes", "--disk-size", "1G")
    create_vm(install, env, "idle", "--vnc", "yes", "--disk-size", "1G")
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    try:
        wait_for(lambda: guest_up(install, env, "web"), what="the guest")
        rows = table(cmd(install, env, "vmlist"))
        assert rows[1][:2] == ["web", "running"], "running VMs first"
        assert rows[1][6] == "5900" and re.fullmatch(r"00:0[0-9]:[0-5][0-9]", rows[1][8]), rows
        assert rows[2] == ["idle", "stopped", "1", "1G", "uefi", "1G", "-", "no", "-"]
        exact = cmd(install, env, "vmlist", "-H", "-p", "-o", "name,pid,vnc,uptime,started").stdout
        name, pid, port, up, started = exact.splitlines()[0].split("\t")
        assert (name, int(pid), port) == ("web", status(install, env, "web"), "5900")
        assert 0 <= int(up) < 600 and int(started) > 1e9
        web = json.loads(cmd(install, env, "vmlist", "--json").stdout)[0]
        assert (web["vnc"], web["pid"], web["state"]) == (5900, int(pid), "running")
        assert isinstance(web["uptime"], int) and web["supervisor"] > 0
    finally:
        assert cmd(install, env, "stop", "-f", "web").returncode == 0
    assert cmd(install, env, "vmlist", "-H", "-o", "name,vnc,uptime").stdout == "idle\t-\t-\nweb\t-\t-\n"


def test_no_zfs_call_whatever_the_number_of_vms(install, env, tmp_path):
    """vmlist runs no zfs at all for file disks (the bench measures the time at 500 VMs)."""
    counter = tmp_path / "bin"
    counter.mkdir()
    log = tmp_path / "zfs.calls"
    real = shutil.which("zfs", path=env["PATH"])
    (counter / "zfs").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    (counter / "zfs").chmod(0o755)
    counting = dict(env, PATH=f"{counter}:{env['PATH']}")
    for n in range(3):
        create_vm(install, env, f"vm{n}", "--disk-size", "1G")
        res = subprocess.run(["./vmlist"], env=counting, cwd=install, capture_output=True, text=True)
        assert res.returncode == 0 and len(res.stdout.splitlines()) == n + 2, res.stderr
        assert not log.exists(), log.read_text()


def test_the_cache_never_shows_an_edited_set_conf(install, env, sysroot):
    """vmlist keeps what it read of each set.conf in RUN_DIR/host/vmlist.cache; an edit of any
    kind (in place, same size, within the second; a rename over it) is seen at once."""
    conf = create_vm(install, env, "web", "--cores", "2", "--disk-size", "1G") / "set.conf"
    cache = sysroot / "run" / "host" / "vmlist.cache"

    def cpu():
        res = cmd(install, env, "vmlist", "-H", "-o", "cpu")
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()
    time.sleep(2.1)  # a file changed in the last 2 s is never cached (zfs-fuse's whole seconds)
    assert cpu() == "2" and str(conf) in json.loads(cache.read_text())["vms"]
    with open(conf, "r+") as fh:  # in place, same size, same second
        text = fh.read()
        fh.seek(0)
        fh.write(text.replace('Cores="2"', 'Cores="3"'))
    assert cpu() == "3"
    time.sleep(2.1)
    assert cpu() == "3"
    tmp = conf.with_name("set.conf.new")
    tmp.write_text(text.replace('Cores="2"', 'Cores="4"'))
    os.replace(tmp, conf)
    assert cpu() == "4"
    time.sleep(2.1)
    cache.write_text("{not json")  # a broken cache only costs the reading of the files
    assert cpu() == "4" and str(conf) in json.loads(cache.read_text())["vms"]


def test_a_set_conf_others_cannot_read_stays_out_of_the_cache(install, env, sysroot):
    conf = create_vm(install, env, "web", "--disk-size", "1G") / "set.conf"
    conf.chmod(0o640)  # as a set.conf holding a VNCpassword is
    time.sleep(2.1)
    assert cmd(install, env, "vmlist").returncode == 0
    cache = sysroot / "run" / "host" / "vmlist.cache"
    assert not cache.exists() or str(conf) not in cache.read_text()
