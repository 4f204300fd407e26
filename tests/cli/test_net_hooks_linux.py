"""The preRun/postRun lines vmcreate writes on Linux, run for real (the installed `functions` on
iproute2, sourced the way kvm runs hooks) inside a network namespace this test makes: never a tap
or bridge in the host's namespace."""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from kvm.manage import create
from kvm.conf import hooks

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or os.uname().sysname != "Linux",
                                reason="needs root, Linux and iproute2 (network namespaces)")


@pytest.fixture
def netns():
    name = f"kvmh{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=True)


def links(ns):
    out = subprocess.run(["ip", "-n", ns, "-j", "-d", "link", "show"], check=True, capture_output=True,
                         text=True).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def run_hook(ns, vmd, vmdir, which):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "VMname": "web", "VMdir": str(vmdir), "VMd": str(vmd)}
    return subprocess.run(["ip", "netns", "exec", ns, "/bin/sh", "-c", hooks.SCRIPT, "kvm-hook", which],
                          env=env, capture_output=True, text=True)


def test_linux_hook_lines_make_a_tap_on_a_bridge_and_postrun_removes_it(tmp_path, netns, monkeypatch):
    monkeypatch.setenv("KVM_PLATFORM", "linux")
    a = create.Answers(loader="uefi", cores="1", mem="256M", network=True, bridge="brLAN", tap="tapWEB")
    conf, run, _ = create.render_files("web", a, None)
    vmdir = tmp_path / "vm" / "web"
    vmdir.mkdir(parents=True)
    (vmdir / "set.conf").write_text(conf)
    (vmdir / "run").write_text(run)
    shutil.copy(REPO / "templates" / "functions", tmp_path / "functions")

    res = run_hook(netns, tmp_path, vmdir, "preRun")
    assert res.returncode == 0, res.stderr
    now = links(netns)
    assert now["tapWEB"]["linkinfo"]["info_kind"] == "tun"
    assert now["brLAN"]["linkinfo"]["info_kind"] == "bridge"
    assert now["tapWEB"].get("master") == "brLAN"
    assert "UP" in now["tapWEB"]["flags"] and "UP" in now["brLAN"]["flags"]
    assert not {"tapWEB", "brLAN"} & links_in_host()
    # a second boot's preRun (a guest reboot) finds them made: still fine
    assert run_hook(netns, tmp_path, vmdir, "preRun").returncode == 0

    res = run_hook(netns, tmp_path, vmdir, "postRun")
    assert res.returncode == 0, res.stderr
    after = links(netns)
    assert "tapWEB" not in after and "brLAN" in after


def links_in_host():
    out = subprocess.run(["ip", "-j", "link", "show"], check=True, capture_output=True, text=True).stdout
    return {link["ifname"] for link in json.loads(out)}
