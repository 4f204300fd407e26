"""Running VMs against the FreeBSD simulator: start, reboots, stop, hooks, faults, consoles."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import calls, cmd, create_vm, fake_iso, one_line_error, run_folder

HOOKS = """# VM: {name}
preRun()
{{
\techo "pre $VMname" >> "$VMdir/hooks.log"
\t{pre_extra}
}}

postRun()
{{
\techo "post $VMexit $VMreason" >> "$VMdir/hooks.log"
}}
"""


def make(install, env, name="web", *flags, pre_extra=":"):
    d = create_vm(install, env, name, "--disk-size", "1G", *flags)
    (d / "run").write_text(HOOKS.format(name=name, pre_extra=pre_extra))
    return d


def script(env, name, *lines):
    d = Path(env["KVM_SIM_DIR"]) / "script"
    d.mkdir(exist_ok=True)
    (d / name).write_text("".join(line + "\n" for line in lines))


def wait_for(predicate, seconds=20, what="condition"):
    end = time.time() + seconds
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lock_held(env, root, name):
    """Someone holds NAME's lock (a non-blocking probe, as status does)."""
    from kvm.host import lock
    return lock.holder(run_folder(env, root, name) / "lock") is not None


def status(install, env, name="web"):
    res = cmd(install, env, "status", name)
    return int(res.stdout.strip())


def guests(env, name="web"):
    """The simulated guests of NAME that came up (signal handlers set), one per boot."""
    return [argv for tool, argv in calls(env, "bhyve-guest") if argv[0] == name]


def guest_up(install, env, name="web", boots=1):
    """The VM runs (status) and its boots-th simulated guest is up."""
    return len(guests(env, name)) >= boots and status(install, env, name) > 0


def boots(env, name="web"):
    return [argv for tool, argv in calls(env, "bhyve") if argv and argv[-1] == name]


def test_full_lifecycle_reboots_twice_then_graceful_stop(install, env):
    d = make(install, env)
    script(env, "web", "reboot after=0.2", "reboot after=0.2", "run")
    res = cmd(install, env, "start", "-b", "web")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: guest_up(install, env, boots=3), what="third boot")
    pid = status(install, env)
    res = cmd(install, env, "stop", "web")
    assert res.returncode == 0, res.stderr
    assert "shut down by the guest (ACPI power button)" in res.stdout
    assert status(install, env) == 0
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    expected = ["bhyve", "-c", "1", "-m", "1G", "-s", "0,hostbridge", "-s", f"1,nvme,{d}/disk", "-s", "31,lpc",
                "-l", f"bootrom,{install}/firmware/BHYVE_UEFI.fd,{d}/UEFI_VARS.fd", "web"]
    assert [["bhyve"] + argv for argv in boots(env)] == [expected] * 3
    assert (d / "hooks.log").read_text().splitlines() == [
        "pre web", "post 0 reboot", "pre web", "post 0 reboot", "pre web", "post 1 poweroff"]
    destroys = [argv for tool, argv in calls(env, "bhyvectl") if "--destroy" in argv]
    assert len(destroys) == 3, "the VM is destroyed after every bhyve exit"
    assert not (Path(env["KVM_VMM_DIR"]) / "web").exists()
    log = (d / "web.log").read_text()
    assert "guest rebooted (exit 0)" in log and "powered off (exit 1)" in log


def test_foreground_start_prints_the_command_and_exits_0_on_poweroff(install, env):
    make(install, env)
    script(env, "web", "poweroff after=0.1")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("bhyve -c 1 -m 1G -s 0,hostbridge")
    assert "powered off (exit 1)" in res.stdout


def test_second_start_is_refused_while_one_runs(install, env):
    make(install, env)
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    one_line_error(cmd(install, env, "start", "-b", "web"), "start: web: already running", status=9)
    one_line_error(cmd(install, env, "start", "web"), "start: web: already running", status=9)
    assert len(boots(env)) == 1
    res = cmd(install, env, "stop", "-f", "web")
    assert (res.returncode, res.stdout) == (0, "web: forced off (-f)\n")


def test_two_starts_at_once_make_one_supervisor(install, env):
    make(install, env)
    script(env, "web", "run")
    procs = [subprocess.Popen([str(install / "start"), "web"], env=env, cwd=install, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    wait_for(lambda: guest_up(install, env), what="the guest")
    wait_for(lambda: any(p.poll() is not None for p in procs), what="the second start to give up")
    assert len(boots(env)) == 1
    finished = [p for p in procs if p.poll() is not None]
    assert len(finished) == 1 and "already running" in finished[0].stderr.read()
    assert cmd(install, env, "stop", "web").returncode == 0
    for p in procs:
        p.wait(20)


def test_kill_9_of_the_supervisor_orphan_is_reported_stopped_and_recovered(install, env):
    make(install, env)
    script(env, "web", "run", "poweroff after=0.2")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    state = json.loads((run_folder(env, install, "web") / "state").read_text())
    os.kill(state["supervisor"], signal.SIGKILL)
    wait_for(lambda: not lock_held(env, install, "web"), what="the killed supervisor's lock to be free")
    assert status(install, env) == state["bhyve"], "the orphaned bhyve still runs and status says so"
    listed = cmd(install, env, "vmlist", "-H", "-o", "name,state,pid")
    assert listed.stdout == f"web\torphaned\t{state['bhyve']}\n"
    assert "stop web" in listed.stderr
    one_line_error(cmd(install, env, "start", "web"), "still runs this VM without a supervisor", status=8)
    res = cmd(install, env, "stop", "web")
    assert res.returncode == 0, res.stderr
    assert status(install, env) == 0
    assert not (Path(env["KVM_VMM_DIR"]) / "web").exists()
    res = cmd(install, env, "start", "web")  # the stale lock is no obstacle
    assert res.returncode == 0, res.stderr


def test_stop_forces_when_the_guest_ignores_acpi(install, env):
    make(install, env)
    script(env, "web", "run acpi=ignore")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest (its ACPI handler set)")
    res = cmd(install, env, "stop", "-t", "1", "web")
    assert res.returncode == 0, res.stderr
    assert "forced off" in res.stdout
    assert any("--force-poweroff" in argv for _, argv in calls(env, "bhyvectl"))


def test_stop_before_acpi_terminates_bhyve(install, env):
    d = make(install, env)
    script(env, "web", "run acpi=no")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    res = cmd(install, env, "stop", "web")
    assert res.returncode == 0, res.stderr
    assert "terminated" in res.stdout
    assert "post  signal" in (d / "hooks.log").read_text() or "post -15 signal" in (d / "hooks.log").read_text()
    assert not (Path(env["KVM_VMM_DIR"]) / "web").exists(), "the supervisor destroyed the left VM"


def test_triple_fault_restarts_when_asked_until_the_guard(install, env):
    d = make(install, env)
    with open(d / "set.conf", "a") as fh:
        fh.write("RestartOnFault=1\nRestartMax=2\nRestartWindow=60\n")
    script(env, "web", "triple after=0.05", "triple after=0.05", "triple after=0.05", "run")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 3, res.stdout + res.stderr
    assert len(boots(env)) == 3
    assert "giving up" in res.stdout


def test_fault_without_restart_ends_with_its_code(install, env):
    make(install, env)
    script(env, "web", "error after=0.05")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 4
    assert "crashed: bhyve error" in res.stdout


def test_a_crash_is_shown_as_crashed_until_the_next_run(install, env):
    """vmlist, vminfo and status say `crashed` (as the log does) after a crash left it stopped."""
    import json
    make(install, env)
    script(env, "web", "triple after=0.05", "poweroff after=0.05")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 3 and "crashed: triple fault" in res.stdout
    rows = cmd(install, env, "vmlist", "-H", "-o", "name,state").stdout
    assert rows == "web\tcrashed\n", rows
    assert "state:   crashed (triplefault), not running" in cmd(install, env, "vminfo", "web").stdout
    info = json.loads(cmd(install, env, "vminfo", "web", "--json").stdout)
    assert (info["state"], info["crashed"]) == ("crashed", "triplefault")
    res = cmd(install, env, "status", "--json", "web")
    assert res.returncode == 1 and json.loads(res.stdout)["state"] == "crashed"
    assert cmd(install, env, "start", "web").returncode == 0  # powers off by itself this time
    assert cmd(install, env, "vmlist", "-H", "-o", "name,state").stdout == "web\tstopped\n"


def test_bhyve_dying_by_signal(install, env):
    d = make(install, env)
    script(env, "web", "abort after=0.05")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 5
    assert "killed by SIGABRT" in res.stdout
    assert (d / "hooks.log").read_text().splitlines()[-1] == "post -6 signal"


def test_failing_prerun_aborts_the_launch_and_still_runs_postrun(install, env):
    d = make(install, env, pre_extra="return 3")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 1
    assert "preRun failed (exit 3): not launching bhyve" in res.stdout
    assert boots(env) == []
    assert (d / "hooks.log").read_text().splitlines() == ["pre web", "post  prerun-failed"]


def test_hooks_writable_by_others_are_refused(install, env):
    d = make(install, env)
    (d / "run").chmod(0o666)
    res = cmd(install, env, "start", "web")
    assert res.returncode == 1
    assert "writable by group or others" in res.stdout
    assert boots(env) == []


def test_stop_during_a_hanging_prerun(install, env):
    d = make(install, env, pre_extra="sleep 600")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: (d / "hooks.log").exists(), what="preRun")
    import kvm.run.power as sup
    start = time.time()
    res = cmd(install, env, "stop", "web", timeout=sup.HOOK_GRACE + 30)
    assert res.returncode == 0, res.stderr
    assert time.time() - start < sup.HOOK_GRACE + 10
    assert boots(env) == []
    assert "still runs" in (d / "web.log").read_text()


@pytest.mark.parametrize("content, needle, status", [   # 6: a file named is not found
    ('VMrom="uefi"\nDisk="nodisk"\n', "disk", 6),
    ('VMrom="uefi"\nISO="/no/such.iso"\n', "ISO /no/such.iso not found", 6),
    ('VMrom="grub"\nDisk="disk"\n', "Boot is required with the grub loader", 1),
    ('VMrom="uefi"\nDevices="3,virtio-net"\n', "needs a source", 1),
    ('Cores=1\n', "VMrom is not set", 1),
])
def test_bad_definitions_are_refused_before_any_launch(install, env, content, needle, status):
    d = make(install, env)
    (d / "set.conf").write_text(content)
    one_line_error(cmd(install, env, "start", "web"), "start: web:", needle, status=status)
    one_line_error(cmd(install, env, "start", "-b", "web"), "start: web:", needle, status=status)
    assert boots(env) == [] and not (d / "hooks.log").exists()


def test_a_shell_kvm_grub_vm_with_vnc_starts_without_it_and_says_so(install, env):
    d = make(install, env)
    (d / "set.conf").write_text('VMrom="grub"\nBoot="hd0,msdos1"\nDisk="disk"\nVNC=1\n')  # as the shell kvm takes it
    res = cmd(install, env, "start", "-b", "web")
    assert res.returncode == 0, res.stderr
    assert "start: web: warning: VNC=1 is ignored with the grub loader (its console is the serial one)" in res.stderr
    wait_for(lambda: guest_up(install, env), what="the guest")
    argv = boots(env)[-1]
    assert not any("fbuf" in a or "xhci" in a for a in argv) and f"com1,{env['KVM_DEV_DIR']}/nmdmwebA" in argv
    assert [tool for tool, _ in calls(env, "grub-bhyve")] == ["grub-bhyve"]
    assert cmd(install, env, "stop", "web").returncode == 0


def test_insert_while_running_applies_at_the_next_reboot(install, env, tmp_path):
    make(install, env)
    iso = tmp_path / "x.iso"
    fake_iso(iso)
    script(env, "web", "reboot after=1.5", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    res = cmd(install, env, "insert", "web", iso)
    assert res.returncode == 0 and "next guest reboot" in res.stderr
    wait_for(lambda: len(boots(env)) == 2, what="second boot")
    first, second = boots(env)
    assert f"2,ahci-cd,{iso}" not in first and f"2,ahci-cd,{iso}" in second
    assert cmd(install, env, "stop", "web").returncode == 0


def test_set_conf_broken_while_running_ends_the_vm_cleanly_at_the_reboot(install, env):
    d = make(install, env)
    script(env, "web", "reboot after=1.5", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    with open(d / "set.conf", "a") as fh:
        fh.write('Cores="abc"\n')
    wait_for(lambda: "cannot launch" in (d / "web.log").read_text(), what="the refused relaunch")
    wait_for(lambda: status(install, env) == 0, what="the supervisor to end")
    assert len(boots(env)) == 1, "no bhyve was run with a set.conf that does not validate"
    assert "cannot launch: set.conf: Cores='abc' is not a whole number" in (d / "web.log").read_text()
    assert (d / "hooks.log").read_text().splitlines() == ["pre web", "post 0 reboot"]
    assert not (Path(env["KVM_VMM_DIR"]) / "web").exists(), "nothing is left allocated"
    assert cmd(install, env, "vmlist", "-H").stdout.startswith("web\tstopped\t")


def test_two_vms_with_vnc_get_different_ports(install, env):
    make(install, env, "v1", "--vnc", "yes")
    make(install, env, "v2", "--vnc", "yes")
    ports = Path(env["KVM_SIM_DIR"]) / "ports.json"
    ports.write_text(json.dumps([{"port": 5900, "addr": "*", "command": "Xvnc", "pid": 1}]))
    for name in ("v1", "v2"):
        script(env, name, "run")
    procs = [subprocess.Popen([str(install / "start"), "-b", n], env=env, cwd=install) for n in ("v1", "v2")]
    for p in procs:
        assert p.wait(30) == 0
    wait_for(lambda: guest_up(install, env, "v1") and guest_up(install, env, "v2"), what="both VMs")
    got = sorted(json.loads(cmd(install, env, "vminfo", n, "--json").stdout)["vnc"]["port"] for n in ("v1", "v2"))
    assert got == [5901, 5902]
    for n in ("v1", "v2"):
        assert cmd(install, env, "stop", "-f", n).returncode == 0


def test_grub_vm_writes_device_map_and_runs_grub_bhyve_each_boot(install, env):
    d = create_vm(install, env, "deb", "--loader", "grub", "--boot", "hd0,msdos1", "--disk-size", "1G",
                  "--mem", "512M")
    script(env, "deb", "reboot after=0.1", "poweroff after=0.1")
    res = cmd(install, env, "start", "deb")
    assert res.returncode == 0, res.stdout + res.stderr
    grubs = calls(env, "grub-bhyve")
    assert len(grubs) == 2
    assert grubs[0][1] == ["-c", f"{env['KVM_DEV_DIR']}/nmdmdebA", "-m", f"{d}/device.map", "-M", "512M",
                           "-r", "hd0,msdos1", "deb"]
    assert (d / "device.map").read_text() == f"(hd0) {d}/disk\n"
    assert calls(env, "kldload") == [("kldload", ["nmdm"])]
    assert f"com1,{env['KVM_DEV_DIR']}/nmdmdebA" in boots(env, "deb")[0]


def test_console(install, env):
    make(install, env, "c1", "--com", "yes")
    make(install, env, "c2")
    one_line_error(cmd(install, env, "console", "c2"), "console: c2: has no serial console")
    one_line_error(cmd(install, env, "console", "c1"), "console: c1: is not running", status=8)
    script(env, "c1", "run")
    assert cmd(install, env, "start", "-b", "c1").returncode == 0
    wait_for(lambda: guest_up(install, env, "c1"), what="the guest")
    res = cmd(install, env, "console", "c1")
    assert res.returncode == 0 and "Connected" in res.stdout
    assert calls(env, "cu")[-1] == ("cu", ["-l", f"{env['KVM_DEV_DIR']}/nmdmc1B"])
    assert cmd(install, env, "stop", "-f", "c1").returncode == 0


def test_dry_run_prints_everything_and_changes_nothing(install, env, tmp_path):
    make(install, env, "web", "--com", "yes", "--vnc", "wait")
    res = cmd(install, env, "start", "--dry-run", "web")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "would start web with these steps (preRun to postRun again at each guest reboot):"
    assert lines[1] == "kldstat -qm nmdm || kldload nmdm"
    assert lines[2].startswith("preRun")
    assert lines[3].startswith("bhyve -c 1 -m 1G") and "30,fbuf,tcp=127.0.0.1:5900,wait" in lines[3]
    assert calls(env, "bhyve") == [] and calls(env, "kldload") == []
    assert not (run_folder(env, install, "web") / "state").exists()


def test_vmdestroy_f_really_stops_a_running_vm(install, env, pool):
    make(install, env)
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    one_line_error(cmd(install, env, "vmdestroy", "web", "-y"), "vmdestroy: web: is running", status=8)
    res = cmd(install, env, "vmdestroy", "web", "-y", "-f")
    assert res.returncode == 0, res.stderr
    assert cmd(install, env, "status", "web").stdout == "-1\n"
    assert not (Path(env["KVM_VMM_DIR"]) / "web").exists()


def test_stop_of_a_stopped_vm(install, env):
    # a name no other test uses: bhyve's names are host-wide, and the suite's workers share the host
    make(install, env, "nstop")
    one_line_error(cmd(install, env, "stop", "nstop"), "stop: nstop: is not running", status=9)
    Path(env["KVM_VMM_DIR"], "nstop").write_text('{"mem": 1073741824, "pid": 0}')
    res = cmd(install, env, "vmlist", "-H")
    assert res.stdout.startswith("nstop\tallocated")
    res = cmd(install, env, "stop", "nstop")
    assert res.returncode == 0 and "leftover allocation was destroyed" in res.stdout


def test_a_bhyve_started_without_us_is_found_by_its_exact_name(install, env):
    """The shell toolkit's start runs bhyve itself: no lock, no state file, only /dev/vmm/NAME. (Names no
    other test uses: bhyve's names are host-wide, and the suite's workers share the host.)"""
    make(install, env, "nbhy")
    make(install, env, "nbhy2")
    script(env, "nbhy", "run")
    script(env, "nbhy2", "run")
    fw = f"{install}/firmware/BHYVE_UEFI.fd"

    def bare_bhyve(name):
        d = install / "vm" / name
        return subprocess.Popen(["bhyve", "-c", "1", "-m", "1G", "-s", "0,hostbridge", "-s", f"1,nvme,{d}/disk",
                                 "-s", "31,lpc", "-l", f"bootrom,{fw},{d}/UEFI_VARS.fd", name], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    decoy, guest = bare_bhyve("nbhy2"), None
    try:
        wait_for(lambda: guests(env, "nbhy2"), what="nbhy2 up")
        assert status(install, env, "nbhy") == 0, "a bhyve of nbhy2 does not make nbhy running"
        assert not list(Path(env["KVM_RUN_DIR"]).rglob("state")), "nothing of ours knows these VMs"
        guest = bare_bhyve("nbhy")
        wait_for(lambda: guests(env, "nbhy"), what="nbhy up")
        assert status(install, env, "nbhy") == guest.pid
        assert status(install, env, "nbhy2") == decoy.pid
        listed = cmd(install, env, "vmlist", "-H", "-o", "name,pid").stdout.splitlines()
        listed = dict(line.split("\t") for line in listed)
        assert listed == {"nbhy": str(guest.pid), "nbhy2": str(decoy.pid)}
        one_line_error(cmd(install, env, "start", "nbhy"), "nbhy", "without a supervisor", status=8)
        res = cmd(install, env, "stop", "nbhy")
        assert res.returncode == 0, res.stderr
        assert guest.wait(10) == 1, "the guest was powered off through ACPI, as bhyve reports it"
        assert status(install, env, "nbhy") == 0
        assert not (Path(env["KVM_VMM_DIR"]) / "nbhy").exists(), "stop destroyed the VM bhyve left behind"
        assert status(install, env, "nbhy2") == decoy.pid, "stopping nbhy left nbhy2 alone"
    finally:
        for proc in (decoy, guest):  # never left behind: a stray `bhyve: web` confuses later tests
            if proc is not None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("where", ["folder", "legacy"])
def test_a_stale_state_whose_pids_now_belong_to_others_reads_stopped(install, env, where):
    """After a host crash the state file survives and its pids get reused by other programs (in
    the VM's run folder, or in the run dir itself where earlier versions kept it)."""
    make(install, env)
    other = subprocess.Popen(["sleep", "60"])
    folder = run_folder(env, install, "web")
    state, lock = (folder / "state", folder / "lock") if where == "folder" else \
        (Path(env["KVM_RUN_DIR"]) / "web.state", Path(env["KVM_RUN_DIR"]) / "web.lock")
    state.parent.mkdir(parents=True, exist_ok=True)
    try:
        state.write_text(json.dumps(
            {"supervisor": other.pid, "bhyve": other.pid, "started": time.time() - 60, "boots": 1}))
        lock.write_text(f"{other.pid}\n")
        assert status(install, env) == 0
        assert cmd(install, env, "vmlist", "-H").stdout.startswith("web\tstopped\t")
        script(env, "web", "poweroff after=0.2")
        res = cmd(install, env, "start", "web")  # nothing stands in the way
        assert res.returncode == 0, res.stderr
        assert other.poll() is None, "the program that got the old pid was left alone"
    finally:
        other.kill()
        other.wait()
