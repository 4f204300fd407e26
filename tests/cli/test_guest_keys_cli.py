"""TPM, Limits, CPUPin and Agent through the commands, as a user types them (bhyve simulator):
vmset refuses a bad value in one line and leaves set.conf as it was, vmcreate's flags and its
--windows preset, vminfo and vmlist -o show them, start's command line carries them, and a pin
to a host CPU that does not exist is refused before anything runs."""

import json
import os

import pytest

from tests.conftest import calls, cmd, create_vm, one_line_error

HOST_CPUS = os.cpu_count() or 1   # the simulated FreeBSD's hw.ncpu is this machine's count


@pytest.fixture
def web(install, env):
    return create_vm(install, env, "web", "--cores", "2", "--mem", "1G")


@pytest.mark.parametrize("assignment, needle", [
    ("TPM=tpm2", "vmset: web: set.conf: TPM='tpm2' is not swtpm or passthru:/dev/tpmN"),
    ("Limits=pcpu=-1", "Limits='pcpu=-1' holds pcpu='-1', which is not a whole number"),
    ("Limits=cpu=50", "Limits='cpu=50' holds the unknown limit 'cpu'"),
    ("Limits=rbps=5P", "Limits='rbps=5P' holds rbps='5P', which is not a number with K, M, G or T"),
    ("Limits=vmem=64M", "below the guest's own memory (Mem)"),
    ("CPUPin=0:0 2:0", "CPUPin='0:0 2:0' pins vCPU 2, but the VM has 2 (Cores)"),
    (f"CPUPin=0:{HOST_CPUS + 3}", f"set.conf: CPUPin pins vCPU 0 to host CPU {HOST_CPUS + 3}, which does not exist "
                                  f"or is offline (online: 0"),
    ("Agent=perhaps", "Agent='perhaps' must be yes or no"),
])
def test_vmset_refuses_in_one_line_and_changes_nothing(install, env, web, assignment, needle):
    before = (web / "set.conf").read_bytes()
    one_line_error(cmd(install, env, "vmset", "web", assignment), needle)
    assert (web / "set.conf").read_bytes() == before
    assert not (web / "set.conf.sav").exists()


def test_vmset_vminfo_vmlist_show_every_key(install, env, web):
    res = cmd(install, env, "vmset", "web", "TPM=swtpm", "Limits=pcpu=50 rbps=100M", "CPUPin=0:0 1:0", "Agent=yes")
    assert res.returncode == 0, res.stderr
    info = json.loads(cmd(install, env, "vminfo", "web", "--json").stdout)
    assert info["tpm"] == {"kind": "swtpm", "device": None, "state": str(web / "tpm"), "state_exists": False}
    assert info["limits"] == {"pcpu": 50, "rbps": 100 << 20}
    assert info["cpu_pin"] == [{"vcpu": 0, "host_cpu": 0}, {"vcpu": 1, "host_cpu": 0}]
    assert info["agent"]["socket"].endswith("/web/agent") and info["agent"]["answer"] is None
    rows = dict(line.split(":", 1) for line in cmd(install, env, "vminfo", "web").stdout.splitlines())
    assert {k: v.strip() for k, v in rows.items() if k in ("tpm", "limits", "cpu pinning", "agent")} == {
        "tpm": f"swtpm (state in {web}/tpm, made at the first start)", "limits": "pcpu=50 rbps=100M",
        "cpu pinning": "0:0 1:0 (vCPU:host CPU)", "agent": "yes"}
    res = cmd(install, env, "vmlist", "-H", "-o", "name,tpm,limits,pin,agent")
    assert res.stdout.splitlines() == ["web\tswtpm\tpcpu=50 rbps=100M\t0:0 1:0\tyes"], res.stdout
    row = json.loads(cmd(install, env, "vmlist", "--json").stdout)[0]
    assert (row["tpm"], row["limits"], row["pin"], row["agent"]) == ("swtpm", "pcpu=50 rbps=100M", "0:0 1:0", True)


def test_start_carries_pins_and_refuses_an_offline_cpu(install, env, web):
    from tests.cli.test_run import script
    assert cmd(install, env, "vmset", "web", "CPUPin=1:0 0:0").returncode == 0
    script(env, "web", "poweroff after=0")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 0, res.stderr
    argv = [a for t, a in calls(env, "bhyve") if a and a[-1] == "web"][-1]
    assert argv[:8] == ["-c", "2", "-m", "1G", "-p", "1:0", "-p", "0:0"]
    # the CPU went offline since (the set.conf was edited by hand): the start refuses, bhyve never runs
    text = (web / "set.conf").read_text().replace('CPUPin="1:0 0:0"', f'CPUPin="1:0 0:{HOST_CPUS}"')
    (web / "set.conf").write_text(text)
    count = len(calls(env, "bhyve"))
    one_line_error(cmd(install, env, "start", "web"),
                   f"start: web: CPUPin pins vCPU 0 to host CPU {HOST_CPUS}, which does not exist or is offline")
    assert len(calls(env, "bhyve")) == count


def test_vmcreate_flags_and_the_windows_preset(install, env):
    res = cmd(install, env, "vmcreate", "win", "-y", "--windows", "--bridge", "bridge0", "--limits", "pcpu=100",
              "--agent", "no")
    assert res.returncode == 0, res.stderr
    values = (install / "vm" / "win" / "set.conf").read_text()
    for line in ('VMrom="uefi"', 'Cores="2"', 'Mem="4G"', 'TPM="swtpm"', 'Limits="pcpu=100"',
                 'Devices="3,e1000,tapWIN"', 'VNC="1"'):
        assert f"\n{line}\n" in values, line
    assert not any(line.startswith("Agent=") for line in values.splitlines())
    assert os.path.getsize(install / "vm" / "win" / "disk") == 64 << 30
    res = cmd(install, env, "vmcreate", "pin", "-y", "--no-disk", "--no-network", "--cpu-pin", "0:0", "--agent",
              "yes", "--tpm", "passthru:/dev/tpm0")
    assert res.returncode == 0, res.stderr
    values = (install / "vm" / "pin" / "set.conf").read_text()
    assert '\nCPUPin="0:0"\n' in values and '\nAgent="yes"\n' in values and '\nTPM="passthru:/dev/tpm0"\n' in values


@pytest.mark.parametrize("flags, needle, status", [
    (["--windows", "--loader", "grub"], "--windows needs the uefi loader", 2),
    (["--windows", "--tpm", "no"], "--windows needs a TPM", 2),
    (["--windows", "--mem", "2G"], "--windows needs at least 4G of memory", 2),
    (["--cpu-pin", f"0:{HOST_CPUS + 1}"], f"--cpu-pin: CPUPin pins vCPU 0 to host CPU {HOST_CPUS + 1}", 2),
    (["--limits", "iops=5"], "Limits='iops=5' holds the unknown limit 'iops'", 1),
    (["--tpm", "yes"], "TPM='yes' is not swtpm or passthru:/dev/tpmN", 1),
])
def test_vmcreate_refuses_and_creates_nothing(install, env, flags, needle, status):
    one_line_error(cmd(install, env, "vmcreate", "bad", "-y", "--no-network", "--no-disk", *flags), needle,
                   status=status)
    assert not (install / "vm" / "bad").exists()


def test_limits_are_rctl_rules_on_the_exact_bhyve_pid(install, env, web):
    from tests.cli.test_run import guest_up, status, wait_for
    assert cmd(install, env, "vmset", "web", "Limits=pcpu=50 rbps=100M wbps=1G riops=1000 wiops=2000 vmem=2G"
               ).returncode == 0
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    wait_for(lambda: guest_up(install, env), what="the guest")
    pid = status(install, env)
    assert [a for t, a in calls(env, "rctl")] == [[
        "-a", f"process:{pid}:pcpu:deny=50", f"process:{pid}:readbps:throttle=104857600",
        f"process:{pid}:writebps:throttle=1073741824", f"process:{pid}:readiops:throttle=1000",
        f"process:{pid}:writeiops:throttle=2000", f"process:{pid}:vmemoryuse:deny=2147483648"]]
    assert cmd(install, env, "stop", "web").returncode == 0


def test_racct_off_is_said_with_the_loader_conf_line(install, env, web):
    from pathlib import Path
    (Path(env["KVM_SIM_DIR"]) / "racct.json").write_text('{"enable": 0}')
    assert cmd(install, env, "vmset", "web", "Limits=pcpu=50").returncode == 0
    res = cmd(install, env, "start", "web")
    assert res.returncode == 4, (res.stdout, res.stderr)
    assert ("Limits need RACCT/RCTL, which is off: add kern.racct.enable=1 to /boot/loader.conf and reboot "
            "(rctl: RACCT/RCTL present, but disabled") in res.stdout
    assert [a[0] for t, a in calls(env, "rctl")] == ["-a", "-r"]
    assert cmd(install, env, "status", "web").stdout.strip() == "0"   # bhyve did not go on without its limits


def test_tpm_state_rides_snapshots_and_a_clone_gets_a_fresh_one(install, env, web):
    """VM_FOLDER/tpm is in the VM's dataset: a rollback brings its state back; vmclone's copy
    starts empty (its own TPM is made at its first start), the source's is untouched."""
    state = web / "tpm"
    state.mkdir(mode=0o700)
    (state / "tpm2-00.permall").write_bytes(b"first TPM state")
    assert cmd(install, env, "snap", "create", "web", "s1").returncode == 0
    (state / "tpm2-00.permall").write_bytes(b"changed afterwards")
    res = cmd(install, env, "snap", "rollback", "web", "s1", "-y")
    assert res.returncode == 0, res.stderr
    assert (state / "tpm2-00.permall").read_bytes() == b"first TPM state"
    res = cmd(install, env, "vmclone", "web", "web2", "-y")
    assert res.returncode == 0, res.stderr
    clone = install / "vm" / "web2" / "tpm"
    assert clone.is_dir() and list(clone.iterdir()) == []
    assert (state / "tpm2-00.permall").read_bytes() == b"first TPM state"


@pytest.mark.skipif(__import__("shutil").which("swtpm") is None, reason="swtpm is not installed")
def test_bhyve_gets_swtpm_started_before_it_and_an_older_bhyve_is_refused(install, env, web, tmp_path):
    from tests.cli.test_run import script
    from tests.sim.test_sim_guests import older_bhyve
    assert cmd(install, env, "vmset", "web", "TPM=swtpm").returncode == 0
    script(env, "web", "poweroff after=0.2")
    res = cmd(install, env, "start", "web")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "swtpm pid" in res.stdout and f"(TPM state in {web}/tpm)" in res.stdout
    argv = [a for t, a in calls(env, "bhyve") if a and a[-1] == "web"][-1]
    socket = argv[argv.index("-l", argv.index("-l") + 1) + 1]
    assert socket.startswith("tpm,swtpm,") and socket.endswith("/web/tpm.sock")
    assert (web / "tpm").stat().st_mode & 0o777 == 0o700 and (web / "tpm" / "tpm2-00.permall").is_file()
    assert not __import__("os").path.exists(socket.split(",", 2)[2])     # removed once bhyve ended
    old = dict(env, PATH=f"{older_bhyve(tmp_path, 'tpm-passthru')}:{env['PATH']}")
    launches = lambda: [a for t, a in calls(env, "bhyve") if a and a[-1] == "web"]  # noqa: E731
    count = len(launches())
    one_line_error(cmd(install, old, "start", "web"), "start: web: TPM=swtpm but this host's bhyve has only TPM "
                   "passthrough (swtpm came with FreeBSD 14.2): use TPM=\"passthru:/dev/tpm0\" or upgrade")
    assert len(launches()) == count and calls(env, "bhyve")[-1][1] == ["-l", "help"]   # probed, not launched


def test_start_dry_run_shows_swtpm_before_bhyve(install, env, web):
    assert cmd(install, env, "vmset", "web", "TPM=swtpm").returncode == 0
    res = cmd(install, env, "start", "-n", "web")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    tpm = next(i for i, line in enumerate(lines) if line.startswith("swtpm socket --tpm2"))
    assert f"--tpmstate dir={web}/tpm,mode=0600 --server type=unixio,path=" in lines[tpm]
    assert "--flags not-need-init,startup-clear" in lines[tpm] and lines[tpm].endswith("--terminate &")
    assert lines[tpm + 1].startswith("bhyve ") and "-l tpm,swtpm," in lines[tpm + 1]
    assert not (web / "tpm").exists()   # a dry run makes nothing


def test_a_tpm_state_folder_of_someone_else_stops_the_start(install, env, web):
    assert cmd(install, env, "vmset", "web", "TPM=swtpm").returncode == 0
    (web / "tpm").mkdir(mode=0o700)
    os.chown(web / "tpm", 65534, 65534)
    res = cmd(install, env, "start", "web")
    assert res.returncode == 4, res.stdout + res.stderr
    assert (f"web: TPM state folder {web}/tpm is owned by uid 65534, not by uid 0: refusing to use its keys "
            f"(chown -R 0 {web}/tpm)") in res.stdout
    assert not [a for t, a in calls(env, "bhyve") if a and a[-1] == "web"]   # bhyve never ran
