"""Which datasets a snapshot covers: the VM's, and every zvol or dataset its set.conf points at."""

from kvm.conf import config
from kvm.storage import snap
from kvm.vm.root import Root
from kvm.vm import Vm


def test_zvols_of_disk_and_block_devices_are_included_once():
    root = Root("/tank/kvm", "tank/kvm")
    vm = Vm(root, "win")
    text = ('VMrom="uefi"\nDisk="/dev/zvol/tank/win-c"\n'
            'Devices="4,virtio-blk,/dev/zvol/tank/win-d 5,nvme,/dev/zvol/tank/win-c,nocache '
            '6,virtio-net,tap0"\n')
    cfg = config.validate("win", "/tank/kvm/vm/win", config.parse_text(text))
    assert snap.datasets_of(vm, cfg) == ["tank/kvm/vm/win", "tank/win-c", "tank/win-d"]


def test_files_inside_the_vm_folder_need_no_other_dataset():
    vm = Vm(Root("/tank/kvm", "tank/kvm"), "web")
    cfg = config.validate("web", "/tank/kvm/vm/web", config.parse_text('VMrom="uefi"\nDisk="disk"\n'))
    assert snap.datasets_of(vm, cfg) == ["tank/kvm/vm/web"]
