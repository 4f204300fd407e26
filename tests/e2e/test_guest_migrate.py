"""A real guest (tests/guest on qemu, TCG) moved by a warm `vmsend` between two real pools, on this
host (--local) and over the test's own sshd: it runs on DEST afterwards, its disk there holds what
the guest wrote just before the stop, the source is marked and refuses to start, and the downtime
printed is a number."""

import re
import subprocess
import time

import pytest

from tests.cli.test_vmsend import far, prop, sshd  # noqa: F401 (fixtures: DEST's pool and root, sshd)
from tests.conftest import cmd
from tests.e2e.conftest import BOOT_WAIT, Terminal, Vm

pytestmark = pytest.mark.guest

MARK_AT = 8192   # a sector of the guest's disk past its script and boot counter (tests/guest/README.md)
MARK = "written-by-the-guest-before-the-move"


def write_through_the_console(vm):
    """The guest itself writes MARK onto its disk at MARK_AT (dd to the nvme device, synced)."""
    term = Terminal(["./console", vm.name], vm.root, vm.env)
    term.read_until("quit with ~.")
    term.type(f"echo {MARK} | dd of=/dev/nvme0n1 bs=512 seek={MARK_AT // 512} conv=notrunc,fsync "
              f"&& sync && echo wrote-$((40+2))\r")
    term.read_until("wrote-42")
    term.type("\r~.")
    assert term.wait() == 0


def disk_mark(path):
    with open(path, "rb") as f:
        f.seek(MARK_AT)
        return f.read(len(MARK)).decode(errors="replace")


def migrate_and_check(vm, dest_vm, send_args, far_env, dataset):
    """Boot here, let the guest write, vmsend (warm), then see it boot on DEST from the sent disk."""
    vm.run("start", "-b", vm.name)
    vm.wait_console("KVMGUEST up boot=1")
    write_through_the_console(vm)
    t0 = time.monotonic()
    res = vm.run("vmsend", vm.name, *send_args, "-y", timeout=300)
    took = time.monotonic() - t0
    found = re.search(r"migrated to .*; downtime (\d+\.\d+)s$", res.stdout.strip())
    assert found, vm.explain(f"no downtime in {res.stdout!r}\n{res.stderr}")
    downtime = float(found.group(1))
    assert 0 < downtime < took
    assert disk_mark(dest_vm.disk) == MARK, dest_vm.explain("the guest's write is not on DEST's disk")
    # the console.log came along with the dataset (boot=1 in it): boot=2 is the guest's own counter,
    # read from the sent disk, and printed by the qemu that DEST's start -b launched
    dest_vm.wait_console("KVMGUEST up boot=2", timeout=BOOT_WAIT)
    assert cmd(dest_vm.root, far_env, "status", vm.name).returncode == 0
    assert prop(dataset, "kvm:migrated") == send_args[-1]
    refused = vm.run("start", "-b", vm.name, ok=False)
    assert refused.returncode == 8 and "was migrated to" in refused.stderr, refused.stderr
    assert "KVMGUEST poweroff (ACPI power button)" in vm.console_log(), vm.explain("the stop was not graceful")
    print(f"timing: vmsend {took:.1f} s, downtime {downtime:.2f} s")
    return downtime


@pytest.mark.slow  # 55-80 s here under load: two TCG boots and the migration between them
def test_warm_migration_of_a_real_guest_between_two_pools(make_vm, install, env, far):
    # DEST's guest is forced off by the far fixture: a graceful stop would only add to the time
    root, fpool = far
    vm = make_vm("web", "")
    migrate_and_check(vm, Vm(root, env, "web", vm.iso), ["--local", str(root)], env,
                      f"{install.parent.name}/kvm/vm/web")


@pytest.mark.slow  # 100-130 s here under load: four ssh round trips and two TCG boots
def test_warm_migration_of_a_real_guest_over_ssh(make_vm, install, env, far, sshd):
    root, fpool = far
    e, wrapper, _ = sshd
    vm = make_vm("web", "")
    vm.env = e
    far_env = dict(e, KVM_RUN_DIR=e["FAR_RUN_DIR"])
    try:
        migrate_and_check(vm, Vm(root, far_env, "web", vm.iso),
                          ["--remote-kvm", wrapper, f"root@127.0.0.1:{root}"], far_env,
                          f"{install.parent.name}/kvm/vm/web")
    finally:
        subprocess.run(["./stop", "-f", "web"], cwd=root, env=far_env, capture_output=True, timeout=60)
