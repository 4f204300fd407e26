"""vmdisk on a running real guest (tests/guest on qemu, TCG): a disk added while it runs is
hot-plugged behind a Hotplug port and the guest sees it at its size; grown while it runs
(QMP block_resize), the guest sees the new size; both read from the guest's own /sys/block."""

import re

import pytest

from tests.e2e.conftest import Terminal

pytestmark = pytest.mark.guest

MIB = 1 << 20


def guest_sizes(vm, tag):
    """{block device: size in bytes} as the guest lists them (/sys/block/*/size, 512-byte sectors)."""
    term = Terminal(["./console", vm.name], vm.root, vm.env)
    term.read_until("quit with ~.")
    term.type(f"for d in /sys/block/*; do echo {tag} ${{d##*/}} $(cat $d/size); done; echo {tag}-$((40+2))\r")
    term.read_until(f"{tag}-42")
    term.type("\r~.")
    assert term.wait() == 0
    text = term.out.decode(errors="replace")
    return {m.group(1): int(m.group(2)) * 512 for m in re.finditer(rf"^{tag} (\w+) ([0-9]+)\r?$", text, re.M)}


def wait_sizes(vm, tag, predicate, tries=20):
    for n in range(tries):
        sizes = guest_sizes(vm, f"{tag}{n}")
        if predicate(sizes):
            return sizes
    pytest.fail(vm.explain(f"the guest never listed the expected disks; last: {sizes}"))


def test_a_disk_added_and_grown_while_the_guest_runs_is_seen_by_it(make_vm):
    vm = make_vm("hot", "")
    vm.run("vmset", "hot", "Hotplug=1")
    vm.run("start", "-b", "hot")
    vm.wait_console("KVMGUEST up boot=1")
    before = guest_sizes(vm, "B")
    assert before.get("nvme0n1") == 64 * MIB, vm.explain(f"guest lists {before}")
    res = vm.run("vmdisk", "add", "hot", "24M", "--driver", "virtio-blk")
    assert "hot-plugged" in res.stderr and "at slot 3" in res.stdout, res.stderr
    after = wait_sizes(vm, "A", lambda s: 24 * MIB in s.values())
    new = [d for d in after if d not in before]
    assert new and after[new[0]] == 24 * MIB, after
    res = vm.run("vmdisk", "grow", "hot", "disk1", "40M")
    assert "the guest was told the new size" in res.stderr
    assert (vm.dir / "disk1").stat().st_size == 40 * MIB   # qemu grew the raw file itself
    grown = wait_sizes(vm, "G", lambda s: s.get(new[0]) == 40 * MIB)
    # the main nvme disk: qemu 7.2 cannot resize nvme under a guest, so it is refused, unchanged
    res = vm.run("vmdisk", "grow", "hot", "disk", "80M", ok=False)
    assert res.returncode == 1 and "is running and qemu resizes virtio-blk disks online, not nvme" in res.stderr
    assert (vm.dir / "disk").stat().st_size == 64 * MIB and grown["nvme0n1"] == 64 * MIB
    vm.run("stop", "hot", timeout=90)


@pytest.mark.slow  # two TCG boots: 40-60 s under load
def test_an_export_of_a_running_guest_restored_under_another_name_boots_with_what_it_wrote(make_vm, tmp_path):
    from tests.e2e.conftest import Vm
    from tests.e2e.test_guest_migrate import MARK, disk_mark, write_through_the_console
    vm = make_vm("live", "")
    vm.run("start", "-b", "live")
    vm.wait_console("KVMGUEST up boot=1")
    write_through_the_console(vm)                       # the guest writes MARK on its disk, synced
    out = tmp_path / "live.kvmexport"
    res = vm.run("vmexport", "live", str(out))
    assert "the VM keeps running: crash-consistent" in res.stderr
    assert vm.run("status", "live").stdout.strip() not in ("0", "-1")   # never stopped
    vm.run("stop", "live", timeout=90)
    vm.run("vmrestore", str(out), "back")
    back = Vm(vm.root, vm.env, "back", vm.iso)
    assert disk_mark(back.disk) == MARK
    back.run("start", "-b", "back")
    # the guest's own boot counter, read from the restored disk: its second boot
    back.wait_console("KVMGUEST up boot=2")
    back.run("stop", "back", timeout=90)
