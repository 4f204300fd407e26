"""CloudInit="1": seed.iso becomes one more CD at slot 28, in the bhyve and in the qemu argv alike."""

import pytest

from kvm.conf import config
from kvm.errors import ConfigError
from kvm.hypervisor.bhyve import backend as bhyve
from kvm.hypervisor.qemu import argv as qemu

VMDIR = "/tank/kvm/vm"
BASE = 'VMrom="uefi"\nDisk="disk"\n'


def cfg(text):
    return config.validate("web", f"{VMDIR}/web", config.parse_text(text), cpus=8)


def test_bhyve_gets_the_seed_as_an_ahci_cd_at_slot_28():
    argv = bhyve.plan(cfg(BASE + 'CloudInit="1"\n'), rom="/r/BHYVE_UEFI.fd").argv
    at = argv.index(f"28,ahci-cd,{VMDIR}/web/seed.iso")
    assert argv[at - 1] == "-s"
    without = bhyve.plan(cfg(BASE), rom="/r/BHYVE_UEFI.fd").argv
    assert "seed.iso" not in " ".join(without)  # no CloudInit: the argv as before


def test_virtio_blk_gives_a_read_only_disk_at_slot_28_on_both():
    c = cfg(BASE + 'CloudInit="virtio-blk"\n')
    assert f"28,virtio-blk,{VMDIR}/web/seed.iso,ro" in bhyve.plan(c, rom="/r/BHYVE_UEFI.fd").argv
    argv = qemu.plan(c, sockets=qemu.run_files("/var/run/kvm/r_00000000/web"), code="/c/OVMF_CODE.fd").argv
    assert "virtio-blk-pci,drive=dev28,bus=pcie.0,addr=0x1c" in argv
    assert f"if=none,id=dev28,format=raw,file={VMDIR}/web/seed.iso,readonly=on" in argv


def test_qemu_gets_the_same_cd_at_addr_28():
    argv = qemu.plan(cfg(BASE + 'CloudInit="1"\n'), sockets=qemu.run_files("/var/run/kvm/r_00000000/web"),
                     code="/c/OVMF_CODE.fd").argv
    assert "ahci,id=ahci28,bus=pcie.0,addr=0x1c" in argv
    assert f"if=none,id=dev28,format=raw,file={VMDIR}/web/seed.iso,media=cdrom,readonly=on" in argv


@pytest.mark.parametrize("text, words", [
    ('CloudInit="yes"\n', ["CloudInit='yes'", "'0', '1' (a CD) or 'virtio-blk'"]),
    ('CloudInit="1"\nDevices="28,virtio-rnd"\n', ["slot 28", "28,virtio-rnd"]),
])
def test_bad_cloudinit_settings_are_errors_naming_the_value(text, words):
    with pytest.raises(ConfigError) as exc:
        cfg(BASE + text)
    for word in words:
        assert word in str(exc.value)
