"""Host shutdown with per-VM rc.d scripts, under the rc.subr stand-in and a stand-in for
rc.shutdown: its loop runs `SCRIPT faststop` one script after another, and its watchdog ends
everything after rcshutdown_timeout (scaled down here: 3 s stop timeouts, a 4.5 s watchdog)."""

import subprocess
import time
from pathlib import Path

from kvm.platform import rcd

STANDIN = Path(__file__).resolve().parent / "rc.subr"
STOP_TIMEOUT, WATCHDOG = 3, 4.5

# stand-ins for the root's ./status and ./stop: a VM runs while STATE/NAME.run exists; a guest
# that ignores ACPI (STATE/NAME.deaf) is forced off when the stop timeout ends
STATUS = '#!/bin/sh\n[ -e "$STATE/$1.run" ] && echo 4242 || echo 0\n'
STOP = """#!/bin/sh
vm=$3
[ -e "$STATE/$vm.run" ] || { echo "stop: $vm: is not running" >&2; exit 1; }
echo "press $vm $(date +%s.%N)" >> "$STATE/log"
if [ -e "$STATE/$vm.deaf" ]; then sleep "$2"; how=forced; else sleep 0.3; how=acpi; fi
rm -f "$STATE/$vm.run"
echo "$how $vm $(date +%s.%N)" >> "$STATE/log"
echo "$vm: $how"
"""


def setup_host(tmp_path, vms, requires=None, rcconf=""):
    """An rc.d folder with a kvm script per VM {name: (enabled, running, deaf)} and their rc.conf;
    requires: {name: REQUIRE words}; rcconf: more rc.conf lines."""
    root, rcdir, state = tmp_path / "root", tmp_path / "rc.d", tmp_path / "state"
    for d in (root, rcdir, state):
        d.mkdir()
    for name, text in (("status", STATUS), ("stop", STOP)):
        (root / name).write_text(text)
        (root / name).chmod(0o755)
    conf = []
    for vm, (enabled, running, deaf) in vms.items():
        text = rcd.render(vm, root, require=(requires or {}).get(vm), timeout=STOP_TIMEOUT,
                          rcdir=rcdir).replace(". /etc/rc.subr", f". {STANDIN}")
        (rcdir / vm).write_text(text)
        conf.append(f'{vm}_enable="{"YES" if enabled else "NO"}"')
        for flag, on in (("run", running), ("deaf", deaf)):
            if on:
                (state / f"{vm}.{flag}").touch()
    (tmp_path / "rc.conf").write_text("\n".join(conf) + "\n" + rcconf)
    env = {"PATH": "/usr/bin:/bin", "STATE": str(state), "RC_CONF": str(tmp_path / "rc.conf"),
           "KVM_RUN_DIR": str(tmp_path / "run")}
    return rcdir, state, env


def rc_shutdown(rcdir, env, watchdog=WATCHDOG):
    """rc.shutdown's loop (reverse rcorder; here reverse name order) under its watchdog."""
    loop = rcdir.parent / "rc.shutdown"
    # as run_rc_script does: each script sourced in a subshell with its argument set
    loop.write_text(f'for f in $(ls -r "{rcdir}"); do (set faststop; . "{rcdir}/$f"); done\n')
    start = time.time()
    res = subprocess.run(["sh", str(loop)], env=env, capture_output=True, text=True, timeout=watchdog)
    return res, time.time() - start


def test_two_guests_ignoring_acpi_both_get_the_button_and_fit_the_watchdog(tmp_path):
    rcdir, state, env = setup_host(tmp_path, {"a1": (True, True, True), "b1": (True, True, True)})
    res, took = rc_shutdown(rcdir, env)  # sequential stops would take 2 x 3 s: past the watchdog
    assert res.returncode == 0 and res.stderr == "", res.stderr
    log = (state / "log").read_text().split("\n")
    presses = [float(line.split()[2]) for line in log if line.startswith("press")]
    assert len(presses) == 2 and max(presses) - min(presses) < 1, log
    assert {line.split()[1] for line in log if line.startswith("forced")} == {"a1", "b1"}
    assert took < STOP_TIMEOUT + 1.5
    assert not list(state.glob("*.run"))


def test_stopped_or_disabled_vms_are_silent_at_shutdown(tmp_path):
    rcdir, state, env = setup_host(tmp_path, {"a1": (True, False, False), "b1": (False, True, False),
                                              "c1": (True, True, False)})
    res, _ = rc_shutdown(rcdir, env)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.strip().splitlines() == ["Stopping VM c1.", "c1: acpi"]
    assert (state / "b1.run").exists(), "a VM not enabled is not stopped by rc.shutdown"


def test_a_faststop_by_hand_stops_only_its_own_vm(tmp_path):
    rcdir, state, env = setup_host(tmp_path, {"a1": (True, True, False), "b1": (True, True, False)})
    res = subprocess.run(["sh", str(rcdir / "a1"), "faststop"], env=env, capture_output=True, text=True, timeout=10)
    assert res.returncode == 0 and res.stdout == "a1: acpi\n", res.stdout + res.stderr
    assert (state / "b1.run").exists() and not (state / "a1.run").exists()
    res = subprocess.run(["sh", str(rcdir / "a1"), "faststop"], env=env, capture_output=True, text=True, timeout=10)
    assert res.returncode == 0 and res.stdout == res.stderr == ""


def events(state):
    """[(what, vm, time)] of the stop stand-in's log: press, acpi, forced."""
    return [(w, vm, float(t)) for w, vm, t in (line.split() for line in (state / "log").read_text().splitlines())]


def test_a_vm_another_requires_is_stopped_after_it_in_waves(tmp_path):
    # zdb's script is the first rc.shutdown reaches (reverse order): it still stops aweb, which
    # REQUIREs it, first; the independent mid goes in the first wave too
    rcdir, state, env = setup_host(tmp_path, {"aweb": (True, True, False), "zdb": (True, True, False),
                                              "mid": (True, True, False)},
                                   requires={"aweb": "NETWORKING zdb"})
    res, _ = rc_shutdown(rcdir, env)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    log = events(state)
    first = {vm for what, vm, _ in log[:2] if what == "press"}
    assert first == {"aweb", "mid"}, log
    web_off = next(t for what, vm, t in log if what == "acpi" and vm == "aweb")
    db_pressed = next(t for what, vm, t in log if what == "press" and vm == "zdb")
    assert db_pressed >= web_off, log
    assert not list(state.glob("*.run"))


def test_waves_share_one_budget_that_fits_rcshutdown_timeout(tmp_path):
    # three waves of guests ignoring ACPI, each with a 3 s timeout: 9 s one after another, but
    # rcshutdown_timeout=4 leaves a budget of 4 s: each wave gets its share, then is forced off
    rcdir, state, env = setup_host(tmp_path, {"a1": (True, True, True), "b1": (True, True, True),
                                              "c1": (True, True, True)},
                                   requires={"a1": "b1", "b1": "c1"}, rcconf='rcshutdown_timeout="4"\n')
    res, took = rc_shutdown(rcdir, env, watchdog=4.5)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    log = events(state)
    assert [vm for what, vm, _ in log if what == "press"] == ["a1", "b1", "c1"], log
    assert [vm for what, vm, _ in log if what == "forced"] == ["a1", "b1", "c1"], log
    at = {(what, vm): t for what, vm, t in log}
    assert at["press", "b1"] >= at["forced", "a1"] and at["press", "c1"] >= at["forced", "b1"], log
    assert at["forced", "a1"] - at["press", "a1"] < 2.5, "the first wave took more than its share"
    assert took < 4.5 and not list(state.glob("*.run"))


def test_a_requirement_that_is_not_running_or_not_enabled_does_not_hold_a_wave(tmp_path):
    rcdir, state, env = setup_host(tmp_path, {"aweb": (True, True, False), "zdb": (False, True, False)},
                                   requires={"aweb": "zdb"})
    res, _ = rc_shutdown(rcdir, env)
    assert res.returncode == 0 and res.stdout.strip().splitlines() == ["Stopping VM aweb.", "aweb: acpi"]
    assert (state / "zdb.run").exists()
