"""Golden bhyve/grub-bhyve command lines: what the shell toolkit would run, item for item."""

import pytest

from kvm.conf import config
from kvm.errors import ConfigError
from kvm.hypervisor.bhyve import backend as bhyve

VMDIR = "/tank/kvm/vm"


def cfg(name, text):
    return config.validate(name, f"{VMDIR}/{name}", config.parse_text(text), cpus=8)


def test_uefi_disk_only():
    c = cfg("web", 'VMrom="uefi"\nCores="2"\nMem="2G"\nVMoptions="AHPw"\nDisk="disk"\n')
    assert bhyve.plan(c, rom="/tank/kvm/BHYVE_UEFI.fd").argv == [
        "bhyve", "-AHPw", "-c", "2", "-m", "2G", "-s", "0,hostbridge", "-s", f"1,nvme,{VMDIR}/web/disk",
        "-s", "31,lpc", "-l", f"bootrom,/tank/kvm/BHYVE_UEFI.fd,{VMDIR}/web/UEFI_VARS.fd", "web"]


def test_pfsense_example_from_the_shell_readme():
    text = ('VMoptions="ASHP"\nVMrom="uefi"\nDisk="disk"\nCores="2"\nMem="4G"\nLAN="tapLAN"\n'
            'BRI="bridgeLOCAL"\nDevices="4,virtio-net,$LAN 5,passthru,3/0/0"\n')
    assert bhyve.plan(cfg("pf", text), rom="/tank/kvm/BHYVE_UEFI.fd").argv == [
        "bhyve", "-ASHP", "-c", "2", "-m", "4G", "-s", "0,hostbridge", "-s", f"1,nvme,{VMDIR}/pf/disk",
        "-s", "31,lpc", "-s", "4,virtio-net,tapLAN", "-s", "5,passthru,3/0/0",
        "-l", f"bootrom,/tank/kvm/BHYVE_UEFI.fd,{VMDIR}/pf/UEFI_VARS.fd", "pf"]


def test_vnc_wait_resolution_com_iso_on_all_addresses():
    text = ('VMrom="uefi"\nDisk="/dev/zvol/tank/win"\nDiskDriver="ahci-hd"\nISO="win.iso"\nVNC="wait"\n'
            'wVNC=1920\nhVNC=1080\nCOM=1\nVNCaddr="0.0.0.0"\n')
    assert bhyve.plan(cfg("win", text), rom="/r/BHYVE_UEFI.fd", vnc_port=5901).argv == [
        "bhyve", "-c", "1", "-m", "1G", "-s", "0,hostbridge", "-s", "1,ahci-hd,/dev/zvol/tank/win",
        "-s", f"2,ahci-cd,{VMDIR}/win/win.iso", "-s", "31,lpc", "-l", "com1,/dev/nmdmwinA",
        "-s", "29,xhci,tablet", "-s", "30,fbuf,tcp=0.0.0.0:5901,wait,w=1920,h=1080",
        "-l", f"bootrom,/r/BHYVE_UEFI.fd,{VMDIR}/win/UEFI_VARS.fd", "win"]


def test_vnc_default_is_localhost_no_tablet_and_password():
    c = cfg("v", 'VMrom="uefi"\nVNC=1\nTablet=0\nVNCpassword="s3cret"\n')
    plan = bhyve.plan(c, rom="/r/u.fd", vnc_port=5900, run_dir="/var/run/kvm")
    # the password is in bhyve's -k config file (0600), after the -s that makes slot 30, never in argv
    assert plan.argv == ["bhyve", "-c", "1", "-m", "1G", "-s", "0,hostbridge", "-s", "31,lpc",
                         "-s", "30,fbuf,tcp=127.0.0.1:5900", "-l", f"bootrom,/r/u.fd,{VMDIR}/v/UEFI_VARS.fd",
                         "-k", "/var/run/kvm/v.bhyve.conf", "v"]
    assert plan.files == (("/var/run/kvm/v.bhyve.conf", "pci.0.30.0.password=s3cret\n", 0o600),)
    assert not any("s3cret" in a for a in plan.argv)
    assert "-k" not in bhyve.plan(cfg("v", 'VMrom="uefi"\nVNC=0\nVNCpassword="s3cret"\n'), rom="/r/u.fd").argv
    # a launch puts it in the VM's run folder (RUN_DIR/ROOT_ID/NAME/bhyve.conf), which no other root shares
    mine = bhyve.plan(c, rom="/r/u.fd", vnc_port=5900, secrets_path="/var/run/kvm/r_1/v/bhyve.conf")
    assert mine.argv[-3:] == ["-k", "/var/run/kvm/r_1/v/bhyve.conf", "v"]
    assert mine.files == (("/var/run/kvm/r_1/v/bhyve.conf", "pci.0.30.0.password=s3cret\n", 0o600),)


def test_grub_plan_device_map_and_forced_com():
    text = 'VMrom="grub"\nBoot="cd0"\nMem="512M"\nVMoptions="S"\nDisk="disk"\nISO="/iso/deb.iso"\n'
    plan = bhyve.plan(cfg("deb", text), grub="/tank/kvm/grub-bhyve")
    assert plan.loader == ["/tank/kvm/grub-bhyve", "-S", "-c", "/dev/nmdmdebA", "-m", f"{VMDIR}/deb/device.map",
                         "-M", "512M", "-r", "cd0", "deb"]
    assert plan.files[0][1] == f"(hd0) {VMDIR}/deb/disk\n(cd0) /iso/deb.iso\n"
    assert plan.argv == ["bhyve", "-S", "-c", "1", "-m", "512M", "-s", "0,hostbridge",
                          "-s", f"1,nvme,{VMDIR}/deb/disk", "-s", "2,ahci-cd,/iso/deb.iso", "-s", "31,lpc",
                          "-l", "com1,/dev/nmdmdebA", "deb"]


def test_absolute_loader_path_is_used_as_rom():
    c = cfg("a", 'VMrom="/usr/local/share/uefi-firmware/BHYVE_UEFI.fd"\n')
    assert c.loader == "uefi"


def test_no_vmrom_refuses_to_plan():
    with pytest.raises(ConfigError, match="VMrom is not set"):
        bhyve.plan(cfg("n", 'Cores=1\n'))


@pytest.mark.parametrize("code, reason", [(0, "reboot"), (1, "poweroff"), (2, "halt"), (3, "triplefault"),
                                          (4, "error"), (7, "unknown"), (-6, "signal")])
def test_exit_code_table(code, reason):
    assert bhyve.classify(code) == reason


def test_describe_names_the_signal():
    assert bhyve.describe(-6) == "killed by SIGABRT"
