"""The --json contract (kvm(8) JSON OUTPUT and EXIT STATUS): every output carries "schema" and
conforms to its shipped JSON Schema (kvm/schema/*.json), checked on real outputs of every command
that has --json; an error under --json is one JSON object on stderr; exit statuses tell not found
(6), already exists (7), refused (8) and nothing to do (9) apart."""

import json
import os
from pathlib import Path

import pytest

from kvm.cli import jsonout
from tests.conftest import cmd, create_vm, datasets, snapshot_tree
from tests.schemacheck import errors

SCHEMAS = {name[:-5]: json.load(open(os.path.join(jsonout.schema_dir(), name)))
           for name in os.listdir(jsonout.schema_dir()) if name.endswith(".json")}


def conforms(res, schema, status=0):
    """The command's stdout, parsed, after asserting its status and that it conforms to `schema`."""
    assert res.returncode == status, (res.returncode, res.stdout, res.stderr)
    value = json.loads(res.stdout)
    assert errors(value, SCHEMAS[schema]) == [], (schema, value)
    return value


def json_error(res, status, kind, vm=None, *needles, hint=None):
    """The one error object of a failed --json command: stdout empty, stderr one JSON line."""
    assert res.returncode == status, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    err = json.loads(lines[0])
    assert errors(err, SCHEMAS["error"]) == [], err
    assert (err["exit"], err["kind"], err["vm"]) == (status, kind, vm), err
    for needle in needles:
        assert needle in err["error"], (needle, err)
    if hint:
        assert hint in err["hint"], err
    return err


def test_the_checker_refuses_what_breaks_a_schema():
    """The subset checker is a checker: each broken document is caught (else the test below proves nothing)."""
    good = {"schema": 1, "name": "web", "exists": True, "state": "stopped", "pid": 0}
    assert errors(good, SCHEMAS["status"]) == []
    assert errors({**good, "schema": 2}, SCHEMAS["status"])                     # another version
    assert errors({k: v for k, v in good.items() if k != "schema"}, SCHEMAS["status"])  # no version
    assert errors({**good, "pid": "0"}, SCHEMAS["status"])                      # a number as text
    assert errors({**good, "pid": True}, SCHEMAS["status"])                     # a bool is no integer
    assert errors({**good, "colour": "red"}, SCHEMAS["status"])                 # closed object
    assert errors([{"name": "s1"}], SCHEMAS["snap-list"])                        # required keys of items
    row = {"schema": 1, "name": "web", "state": "stopped", "pid": 0, "supervisor": 0, "cpu": 1, "memory": 1,
           "loader": None, "disk": None, "vnc": None, "auto": False, "uptime": None, "started": None, "tpm": None,
           "limits": None, "pin": None, "agent": False, "switch": "lan", "vlan": None, "hypervisor": "bhyve",
           "accelerator": None, "addresses": []}
    assert errors([row], SCHEMAS["vmlist"]) == []
    assert errors([{k: v for k, v in row.items() if k != "switch"}], SCHEMAS["vmlist"])   # every column
    assert errors([{**row, "colour": "red"}], SCHEMAS["vmlist"])                # and no other
    assert errors({}, {"type": "object", "pattern": "x"})                        # a keyword it cannot check


def test_every_json_output_conforms_to_its_shipped_schema(install, env, tmp_path):
    raw = tmp_path / "tiny.raw"
    raw.write_bytes(b"\0" * (1 << 20))
    before = snapshot_tree(install)
    dry = conforms(cmd(install, env, "vmcreate", "-n", "web", "-y", "--no-network", "--vnc", "no", "--com", "no",
                       "--json"), "vmcreate")
    assert (dry["dry_run"], dry["created"]) == (True, False)
    assert snapshot_tree(install) == before and not (install / "vm" / "web").exists()  # -n made nothing

    made = conforms(cmd(install, env, "vmcreate", "web", "-y", "--no-network", "--vnc", "no", "--com", "yes",
                        "--disk-size", "64M", "--json"), "vmcreate")
    assert (made["name"], made["created"], made["state"], made["disk"]["size"]) == ("web", True, "stopped", 64 << 20)
    create_vm(install, env, "db")
    assert conforms(cmd(install, env, "vminfo", "web", "--json"), "vminfo")["com"] is not None
    assert conforms(cmd(install, env, "status", "web", "--json"), "status", status=1)["state"] == "stopped"
    assert conforms(cmd(install, env, "status", "nosuch", "--json"), "status", status=2)["exists"] is False

    dry = conforms(cmd(install, env, "snap", "create", "web", "s1", "-n", "--json"), "snap-create")
    assert dry["dry_run"] and dry["snapshots"][0].endswith("/vm/web@s1")
    assert conforms(cmd(install, env, "snap", "list", "web", "--json"), "snap-list") == []
    snap = conforms(cmd(install, env, "snap", "create", "web", "s1", "--json"), "snap-create")
    assert (snap["vm"], snap["name"], snap["complete"], snap["dry_run"]) == ("web", "s1", True, False)
    assert [s["name"] for s in conforms(cmd(install, env, "snap", "list", "web", "--json"), "snap-list")] == ["s1"]

    dry = conforms(cmd(install, env, "image", "import", "tiny", raw, "--os", "none", "-n", "--json"), "image-import")
    assert dry["dry_run"] and conforms(cmd(install, env, "image", "list", "--json"), "image-list") == []
    image = conforms(cmd(install, env, "image", "import", "tiny", raw, "--os", "none", "--json"), "image-import")
    assert (image["name"], image["format"], image["os"], image["size"], image["dry_run"]) == \
        ("tiny", "raw", "none", 1 << 20, False)
    assert [i["name"] for i in conforms(cmd(install, env, "image", "list", "--json"), "image-list")] == ["tiny"]
    assert conforms(cmd(install, env, "image", "destroy", "tiny", "-n", "--json"), "image-destroy")["dry_run"]
    gone = conforms(cmd(install, env, "image", "destroy", "tiny", "--json"), "image-destroy")
    assert gone["destroyed"] and conforms(cmd(install, env, "image", "list", "--json"), "image-list") == []

    for name in ("s2", "s3"):
        assert cmd(install, env, "snap", "create", "web", name).returncode == 0
    back = conforms(cmd(install, env, "snap", "rollback", "web", "s2", "-r", "-y", "--json"), "snap-change")
    assert (back["name"], back["destroyed"]) == ("s2", ["s3"])
    pruned = conforms(cmd(install, env, "snap", "prune", "web", "--keep", "1", "-y", "--json"), "snap-change")
    assert (pruned["destroyed"], pruned["kept"]) == (["s1"], 1)
    assert conforms(cmd(install, env, "snap", "prune", "web", "--keep", "1", "--json"), "snap-change")["destroyed"] == []
    assert conforms(cmd(install, env, "snap", "destroy", "web", "s2", "-n", "--json"), "snap-change")["dry_run"]
    assert conforms(cmd(install, env, "snap", "destroy", "web", "s2", "--json"), "snap-change")["destroyed"] == ["s2"]
    assert conforms(cmd(install, env, "snap", "list", "web", "--json"), "snap-list") == []

    assert cmd(install, env, "start", "-b", "web").returncode == 0
    try:
        rows = conforms(cmd(install, env, "vmlist", "--json"), "vmlist")
        assert {r["name"]: r["state"] for r in rows} == {"web": "running", "db": "stopped"}
        running = conforms(cmd(install, env, "status", "web", "--json"), "status")
        assert running["pid"] > 0 and conforms(cmd(install, env, "vminfo", "web", "--json"), "vminfo")["pid"] > 0
        changed = conforms(cmd(install, env, "vmset", "web", "Mem=2G", "Cores=2", "--json"), "vmset")
        assert changed["changed"] == ["Mem", "Cores"] and changed["restart_required"] is True
        assert changed["changes"][0] == {"key": "Mem", "old": None, "new": "2G"}   # was unset: the default
        again = conforms(cmd(install, env, "vmset", "web", "Mem=2G", "--json"), "vmset")
        assert (again["changed"], again["restart_required"], again["running"]) == ([], False, True)
    finally:
        assert cmd(install, env, "stop", "web").returncode == 0
    stopped = conforms(cmd(install, env, "vmset", "db", "Mem=512M", "VNCpassword=s3cret", "--json"), "vmset")
    assert stopped["restart_required"] is False and stopped["changes"][1]["new"] == "***"  # never the password
    assert conforms(cmd(install, env, "vmset", "db", "Mem=1G", "-n", "--json"), "vmset")["dry_run"] is True
    assert 'Mem="512M"' in (install / "vm" / "db" / "set.conf").read_text()   # -n wrote nothing


def test_switch_and_vmdisk_json_conform(install, env):
    """kvm switch list/info/create and vmdisk list (issues 21, 23, 24) under the same contract."""
    import subprocess
    subprocess.run(["kldload", "pf"], env=env, capture_output=True)
    subprocess.run(["pfctl", "-e"], env=env, capture_output=True)
    assert conforms(cmd(install, env, "switch", "list", "--json"), "switch-list") == []
    would = conforms(cmd(install, env, "switch", "create", "lan", "--address", "10.0.7.1/24", "--nat", "-n",
                         "--json"), "switch-create")
    assert (would["created"], would["dry_run"], would["address"]) == (False, True, "10.0.7.1/24"), would
    assert not (install / "switches" / "lan.conf").exists()                       # -n wrote nothing
    made = conforms(cmd(install, env, "switch", "create", "lan", "--address", "10.0.7.1/24", "--nat", "--json"),
                    "switch-create")
    assert (made["created"], made["dry_run"], made["state"], made["nat"]) == (True, False, "up", True), made
    lan = conforms(cmd(install, env, "switch", "info", "lan", "--json"), "switch-info")
    assert {k: v for k, v in made.items() if k not in ("created", "dry_run")} == lan
    assert (lan["name"], lan["state"], lan["address"], lan["nat"]) == ("lan", "up", "10.0.7.1/24", True)
    assert [s["name"] for s in conforms(cmd(install, env, "switch", "list", "--json"), "switch-list")] == ["lan"]
    err = json.loads(cmd(install, env, "switch", "info", "nosuch", "--json").stderr.splitlines()[-1])
    assert errors(err, SCHEMAS["error"]) == [] and "nosuch" in err["error"], err
    create_vm(install, env, "web", "--disk-size", "64M", "--switch", "lan", "--vlan", "10")
    row = conforms(cmd(install, env, "vmlist", "--json"), "vmlist")[0]
    assert (row["switch"], row["vlan"]) == ("lan", "10"), row
    disks = conforms(cmd(install, env, "vmdisk", "list", "web", "--json"), "vmdisk-list")
    assert [(d["main"], d["size"]) for d in disks] == [(True, 64 << 20)]
    json_error(cmd(install, env, "vmdisk", "list", "nosuch", "--json"), 6, "not-found", "nosuch")


def test_every_command_with_json_is_covered_and_every_schema_file_used():
    """A new --json command, or a schema file, must come with its check above."""
    import importlib

    from kvm.manage.commands import ALL
    with_json = sorted(c for c in ALL if any("--json" in a.option_strings
                                              for a in importlib.import_module(f"kvm.cli.{c}").build_parser()._actions))
    assert with_json == ["image", "snap", "start", "status", "stop", "switch", "vmcreate", "vmdestroy", "vmdisk",
                         "vminfo", "vmlist", "vmsend", "vmset"]
    assert sorted(SCHEMAS) == ["error", "image-destroy", "image-import", "image-list", "snap-change", "snap-create",
                               "snap-list", "start", "status", "stop", "switch-create", "switch-info", "switch-list",
                               "vmcreate", "vmdestroy", "vmdisk-list", "vminfo", "vmlist", "vmsend", "vmset"]
    assert all(s.get("$schema", "").startswith("https://json-schema.org/") for s in SCHEMAS.values())


@pytest.mark.parametrize("as_json", [True, False])
def test_exit_statuses_tell_not_found_exists_refused_and_nothing_to_do(install, env, pool, tmp_path, as_json):
    raw = tmp_path / "tiny.raw"
    raw.write_bytes(b"\0" * (1 << 20))
    create_vm(install, env, "web")
    assert cmd(install, env, "snap", "create", "web", "s1").returncode == 0
    assert cmd(install, env, "image", "import", "tiny", raw).returncode == 0
    flag = ["--json"] if as_json else []
    stopped = [  # (argv, status, kind, vm, words of the message)
        (["vminfo", "nosuch"], 6, "not-found", "nosuch", "no such VM"),
        (["snap", "rollback", "web", "nosnap", "-y"], 6, "not-found", "web", "no snapshot 'nosnap'"),
        (["vmset", "nosuch", "Mem=2G"], 6, "not-found", "nosuch", "no such VM"),
        (["vmcreate", "web", "-y", "--no-network"], 7, "exists", "web", "already exists"),
        (["snap", "create", "web", "s1"], 7, "exists", "web", "snapshot 's1' already exists"),
        (["image", "import", "tiny", str(raw)], 7, "exists", None, "image 'tiny' already exists"),
        (["stop", "web"], 9, "nothing-to-do", "web", "is not running"),   # --json: 0, "changed": false
        (["vmset", "web", "Mem=lots"], 1, "failure", "web", "is not a size"),
    ]
    running = [
        (["start", "-b", "web"], 9, "nothing-to-do", "web", "already running"),   # --json: 0, "changed": false
        (["snap", "rollback", "web", "s1", "-y"], 8, "refused", "web", "is running"),
        (["vmdestroy", "web", "-y"], 8, "refused", "web", "is running"),
    ]
    check_all(install, env, pool, stopped, flag)
    if flag:  # what to do, where kvm knows it
        json_error(cmd(install, env, "vminfo", "nosuch", "--json"), 6, "not-found", "nosuch", hint="vmlist lists the VMs")
        json_error(cmd(install, env, "snap", "create", "web", "s1", "--json"), 7, "exists", "web")
        json_error(cmd(install, env, "vmcreate", "web", "-y", "--json"), 7, "exists", "web", hint="vmdestroy web first")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    try:
        check_all(install, env, pool, running, flag)
        if flag:
            json_error(cmd(install, env, "snap", "rollback", "web", "s1", "-y", "--json"), 8, "refused", "web",
                       hint="stop web")
    finally:
        assert cmd(install, env, "stop", "web").returncode == 0


def check_all(install, env, pool, cases, flag):
    """Each failing command line: its status, its one error (a JSON object with --json), nothing changed."""
    for argv, status, kind, vm, words in cases:
        before = (datasets(pool), (install / "vm" / "web" / "set.conf").read_text())
        res = cmd(install, env, *argv, *flag)
        if flag and status == 9:   # start of a running VM, stop of a stopped one: a result under --json
            value = conforms(res, argv[0])
            assert (value["vm"], value["changed"], res.stderr) == (vm, False, ""), (argv, value, res.stderr)
        elif flag:
            json_error(res, status, kind, vm, words)
        else:
            assert res.returncode == status, (argv, res.returncode, res.stderr)
            assert len(res.stderr.splitlines()) == 1 and words in res.stderr, (argv, res.stderr)
        assert (datasets(pool), (install / "vm" / "web" / "set.conf").read_text()) == before, argv


def test_a_usage_error_of_a_json_command_line_is_json_too(install, env):
    json_error(cmd(install, env, "vmlist", "--json", "--colour"), 2, "usage", None, "unrecognized arguments")
    json_error(cmd(install, env, "snap", "frobnicate", "web", "--json"), 2, "usage", "web", "unknown verb")


@pytest.fixture
def far(scratch_pool, env, install):
    """A second install root on a pool of its own (vmsend --local's DEST)."""
    from pathlib import Path

    from tests.conftest import destroy_dataset, kvm
    name = scratch_pool(160)
    assert kvm(env, "kvminst", "-p", name, "-y").returncode == 0
    yield Path(f"/{name}/kvm")
    for vm in ("web", "db"):
        kvm(env, "--root", f"/{name}/kvm", "stop", "-f", vm)
    destroy_dataset(f"{name}/kvm")


def test_start_stop_vmsend_vmdestroy_json(install, env, pool, far):
    """start -b/-n, stop, vmsend and vmdestroy under the contract (issue 24's leftovers): each prints
    one object saying what changed; "already as asked" is "changed": false with exit 0 under --json
    (the text form keeps 9, and vmsend's 8, above); the dry runs change nothing."""
    create_vm(install, env, "web", "--com", "yes", "--disk-size", "16M")
    create_vm(install, env, "db", "--com", "yes")
    state = lambda name: json.loads(cmd(install, env, "status", name, "--json").stdout)["state"]  # noqa: E731
    json_error(cmd(install, env, "start", "web", "--json"), 2, "usage", "web", "--json needs -b or -n")
    would = conforms(cmd(install, env, "start", "-n", "web", "--json"), "start")
    assert (would["state"], would["changed"], would["dry_run"], would["pid"]) == ("stopped", True, True, 0)
    assert state("web") == "stopped"                                              # -n started nothing
    made = conforms(cmd(install, env, "start", "-b", "web", "--json"), "start")
    assert (made["state"], made["changed"], made["dry_run"]) == ("running", True, False) and made["pid"] > 0
    again = conforms(cmd(install, env, "start", "-b", "web", "--json"), "start")
    assert (again["changed"], again["pid"], again["supervisor"]) == (False, made["pid"], made["supervisor"])
    assert conforms(cmd(install, env, "start", "-n", "web", "--json"), "start")["changed"] is False

    would = conforms(cmd(install, env, "stop", "-n", "web", "--json"), "stop")
    assert (would["was"], would["how"], would["changed"], would["dry_run"]) == ("running", "acpi", True, True)
    assert state("web") == "running"                                              # -n stopped nothing
    stopped = conforms(cmd(install, env, "stop", "web", "--json"), "stop")
    assert (stopped["was"], stopped["how"], stopped["changed"]) == ("running", "acpi", True), stopped
    assert state("web") == "stopped"
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    forced = conforms(cmd(install, env, "stop", "-f", "web", "--json"), "stop")
    assert (forced["how"], forced["detail"], forced["changed"]) == ("force", "forced", True), forced
    none = conforms(cmd(install, env, "stop", "web", "--json"), "stop")
    assert (none["was"], none["how"], none["detail"], none["changed"]) == ("stopped", "none", None, False)

    ds = f"{pool}/kvm/vm/web"
    before = datasets(pool)
    would = conforms(cmd(install, env, "vmsend", "web", "--local", far, "-n", "--json"), "vmsend")
    assert (would["mode"], would["dry_run"], would["bytes"]) == ("warm", True, 0) and datasets(pool) == before
    copy = conforms(cmd(install, env, "vmsend", "web", "--local", far, "--copy", "--json", timeout=120), "vmsend")
    assert (copy["dest"], copy["mode"], copy["migrated"], copy["downtime_s"], copy["changed"]) == \
        (str(far), "copy", False, None, True) and copy["bytes"] > 16 << 10, copy
    moved = conforms(cmd(install, env, "vmsend", "web", "--local", far, "--json", timeout=120), "vmsend")
    assert (moved["mode"], moved["migrated"], moved["started"], moved["downtime_s"]) == ("warm", True, False, None)
    assert 0 < moved["bytes"] < copy["bytes"]                                     # an increment
    snaps = datasets(pool)
    same = conforms(cmd(install, env, "vmsend", "web", "--local", far, "--json"), "vmsend")
    assert (same["changed"], same["migrated"], same["bytes"]) == (False, True, 0) and datasets(pool) == snaps
    assert cmd(install, env, "vmsend", "web", "--local", far).returncode == 8     # the text form: refused

    assert cmd(install, env, "start", "-b", "db").returncode == 0                 # warm: running, stopped, started
    warm = conforms(cmd(install, env, "vmsend", "db", "--local", far, "-y", "--json", timeout=120), "vmsend")
    assert (warm["started"], warm["migrated"]) == (True, True) and warm["downtime_s"] > 0, warm
    assert json.loads(cmd(far, env, "status", "db", "--json").stdout)["state"] == "running"
    assert state("db") == "stopped"

    would = conforms(cmd(install, env, "vmdestroy", "web", "-n", "--json"), "vmdestroy")
    assert (would["destroyed"], would["dry_run"]) == ([ds], True) and ds in datasets(pool)
    gone = conforms(cmd(install, env, "vmdestroy", "web", "-y", "--json"), "vmdestroy")
    assert (gone["destroyed"], gone["changed"], gone["stopped"]) == ([ds], True, None)
    assert not any(d == ds or d.startswith(ds + "/") or d.startswith(ds + "@") for d in datasets(pool))
    json_error(cmd(install, env, "vmdestroy", "web", "-y", "--json"), 6, "not-found", "web", "no such VM")
    assert cmd(far, env, "stop", "db").returncode == 0
    no = cmd(install, env, "vmdestroy", "db", "--json", input="n\n")       # answered no: one error object
    assert json.loads(no.stderr.splitlines()[-1])["error"] == "nothing done (not confirmed)", no.stderr
    assert (no.returncode, no.stdout) == (1, "") and f"{pool}/kvm/vm/db" in datasets(pool)
    eof = cmd(install, env, "vmdestroy", "db", "--json", input="")         # no answer: a usage error
    assert (eof.returncode, json.loads(eof.stderr.splitlines()[-1])["kind"]) == (2, "usage"), eof.stderr


def test_addresses_from_the_leases_of_the_switchs_dnsmasq(install, env):
    """vminfo --json and vmlist --json carry `addresses`: the lease kvm's dnsmasq wrote for the NIC's
    MAC (bhyve's, as the guest has it), from a lease file as dnsmasq writes it; none without one."""
    import hashlib
    import time
    assert cmd(install, env, "switch", "create", "lan").returncode == 0
    create_vm(install, env, "web", "--switch", "lan")
    create_vm(install, env, "db")
    assert conforms(cmd(install, env, "vminfo", "web", "--json"), "vminfo")["addresses"] == []
    d = hashlib.md5(b"3-0-web").digest()                 # bhyve's net_genmac for slot 3, function 0
    mac = "00:a0:98:%02x:%02x:%02x" % (d[0], d[1], d[2])
    leases = Path(env["KVM_RUN_DIR"]) / "switch" / "lan" / "dnsmasq.leases"
    leases.parent.mkdir(parents=True, exist_ok=True)
    soon = int(time.time()) + 3600
    leases.write_text(f"{soon} 00:a0:98:aa:bb:cc 10.0.7.60 other *\n{soon} {mac} 10.0.7.50 web 01:{mac}\n"
                      "duid 00:01:00:01:2c:4f:aa:bb:52:54:00:12:34:56\n")
    lease = {"address": "10.0.7.50", "source": "lease", "switch": "lan", "mac": mac}
    assert conforms(cmd(install, env, "vminfo", "web", "--json"), "vminfo")["addresses"] == [lease]
    assert f"10.0.7.50 (DHCP lease on lan, mac {mac})" in cmd(install, env, "vminfo", "web").stdout
    for _ in range(2):                                    # the second from vmlist's cache of set.conf
        rows = {r["name"]: r for r in conforms(cmd(install, env, "vmlist", "--json"), "vmlist")}
        assert (rows["web"]["addresses"], rows["db"]["addresses"]) == ([lease], [])
    leases.write_text(f"{int(time.time()) - 5} {mac} 10.0.7.50 web *\n")          # expired: none
    assert conforms(cmd(install, env, "vminfo", "web", "--json"), "vminfo")["addresses"] == []
