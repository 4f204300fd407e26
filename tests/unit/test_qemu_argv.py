"""Golden qemu command lines built from set.conf (kvm.hypervisor.qemu), and its exit table."""

import pytest

from kvm.conf import config
from kvm.errors import ConfigError
from kvm.hypervisor.qemu import argv as qemu

VMDIR = "/tank/kvm/vm"
RUN = "/var/run/kvm/zroot_kvm_1a2b3c4d"   # RUN_DIR/ROOT_ID: the VM's run folder is RUN/NAME
CODE = "/tank/kvm/firmware/OVMF_CODE_4M.fd"
HEAD = ["-no-user-config", "-nodefaults", "-machine", "q35", "-accel", "tcg"]
ACTIONS = ["-action", "reboot=shutdown", "-action", "panic=shutdown", "-device", "pvpanic"]


def cfg(name, text):
    return config.validate(name, f"{VMDIR}/{name}", config.parse_text(text), cpus=8)


def plan(name, text, **kw):
    kw.setdefault("code", CODE)
    return qemu.plan(cfg(name, text), sockets=qemu.run_files(f"{RUN}/{name}"), **kw)


def qmp(name):
    return ["-qmp", f"unix:{RUN}/{name}/qmp,server=on,wait=off"]


def test_uefi_nvme_disk_com():
    p = plan("web", 'VMrom="uefi"\nCores="2"\nMem="2G"\nVMoptions="AHPw"\nDisk="disk"\nCOM=1\n')
    assert p.argv == ["qemu-system-x86_64", "-name", "web,process=qemu:web", *HEAD,
                      "-smp", "2", "-m", "2048M", "-rtc", "base=localtime", *ACTIONS,
                      "-drive", f"if=pflash,unit=0,format=raw,readonly=on,file={CODE}",
                      "-drive", f"if=pflash,unit=1,format=raw,file={VMDIR}/web/OVMF_VARS.fd",
                      "-drive", f"if=none,id=disk0,format=raw,file={VMDIR}/web/disk",
                      "-device", "nvme,drive=disk0,serial=disk0,bus=pcie.0,addr=0x1",
                      "-chardev", f"socket,id=com1,path={RUN}/web/console,server=on,wait=off",
                      "-serial", "chardev:com1", "-display", "none", *qmp("web")]
    assert (p.qmp, p.console, p.paused) == (f"{RUN}/web/qmp", f"{RUN}/web/console", False)
    assert [n.split(" (")[0] for n in p.notes] == ["VMoptions letter A", "VMoptions letter H",
                                                   "VMoptions letter P", "VMoptions letter w"]


def test_grub_boots_the_cd_with_the_bios_locked_memory_utc():
    p = plan("deb", 'VMrom="grub"\nBoot="cd0"\nMem="512M"\nVMoptions="Su"\nDisk="disk"\n'
                    'DiskDriver="virtio-blk"\nISO="/iso/deb.iso"\n', code=None)
    assert p.argv == ["qemu-system-x86_64", "-name", "deb,process=qemu:deb", *HEAD,
                      "-smp", "1", "-m", "512M", "-overcommit", "mem-lock=on", "-rtc", "base=utc", *ACTIONS,
                      "-drive", f"if=none,id=disk0,format=raw,file={VMDIR}/deb/disk",
                      "-device", "virtio-blk-pci,drive=disk0,bus=pcie.0,addr=0x1",
                      "-device", "ahci,id=ahci2,bus=pcie.0,addr=0x2",
                      "-drive", "if=none,id=cd0,format=raw,file=/iso/deb.iso,media=cdrom,readonly=on",
                      "-device", "ide-cd,drive=cd0,bus=ahci2.0,bootindex=1",
                      "-chardev", f"socket,id=com1,path={RUN}/deb/console,server=on,wait=off",
                      "-serial", "chardev:com1", "-display", "none", *qmp("deb")]
    assert p.notes == ()


def test_grub_boot_hd_puts_the_disk_first():
    argv = plan("d", 'VMrom="grub"\nBoot="hd0,msdos1"\nDisk="disk"\nDiskDriver="ahci-hd"\nISO="/i.iso"\n').argv
    assert argv[argv.index("-device", argv.index("if=none,id=disk0,format=raw,file=/tank/kvm/vm/d/disk")) + 1] \
        == "ide-hd,drive=disk0,bus=ahci1.0,bootindex=1"
    assert "ide-cd,drive=cd0,bus=ahci2.0" in argv


def test_vnc_wait_resolution_address_tablet_password():
    p = plan("win", 'VMrom="uefi"\nVNC="wait"\nwVNC=1920\nhVNC=1080\nVNCaddr="0.0.0.0"\nVNCpassword="s3c"\n',
             vnc_port=5901)
    i = p.argv.index("-display")
    assert p.argv[i:i + 12] == ["-display", "none", "-vnc", "0.0.0.0:1,password=on",
                                "-device", "VGA,bus=pcie.0,addr=0x1e,xres=1920,yres=1080",
                                "-device", "qemu-xhci,id=xhci,bus=pcie.0,addr=0x1d",
                                "-device", "usb-tablet,bus=xhci.0", "-qmp", f"unix:{RUN}/win/qmp,server=on,wait=off"]
    assert p.argv[-1] == "-S"
    assert (p.paused, p.wait_vnc, p.vnc_password) == (True, True, "s3c")
    assert not any("s3c" in a for a in p.argv)  # the password goes through QMP, never into ps


def test_vnc_ipv6_no_tablet_not_paused():
    p = plan("v", 'VMrom="uefi"\nVNC=1\nTablet=0\nVNCaddr="::1"\n', vnc_port=5900)
    assert "[::1]:0" in p.argv and "usb-tablet,bus=xhci.0" not in p.argv and "-S" not in p.argv
    assert (p.paused, p.vnc_password) == (False, None)


def test_devices_nics_rng_disks_passthru_at_their_slots():
    p = plan("pf", 'VMrom="uefi"\nVMoptions="S"\nDevices="3,virtio-net,tap0,mac=58:9c:fc:01:02:03 '
                   '4,e1000,tap1 5,virtio-rnd 6,ahci-cd,/iso/a.iso 7,virtio-blk,data.img,ro '
                   '8:1,nvme,/dev/zvol/tank/n,nocache 9,passthru,3/0/0"\n')
    argv = p.argv[p.argv.index("-display") + 2:-2]
    assert argv == [
        "-netdev", "tap,id=dev3,ifname=tap0,script=no,downscript=no",
        "-device", "virtio-net-pci,netdev=dev3,bus=pcie.0,addr=0x3,mac=58:9c:fc:01:02:03",
        "-netdev", "tap,id=dev4,ifname=tap1,script=no,downscript=no",
        "-device", "e1000,netdev=dev4,bus=pcie.0,addr=0x4,mac=00:a0:98:17:1a:38",
        "-object", "rng-random,id=dev5,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=dev5,bus=pcie.0,addr=0x5",
        "-device", "ahci,id=ahci6,bus=pcie.0,addr=0x6",
        "-drive", "if=none,id=dev6,format=raw,file=/iso/a.iso,media=cdrom,readonly=on",
        "-device", "ide-cd,drive=dev6,bus=ahci6.0",
        "-drive", f"if=none,id=dev7,format=raw,file={VMDIR}/pf/data.img,readonly=on",
        "-device", "virtio-blk-pci,drive=dev7,bus=pcie.0,addr=0x7",
        "-drive", "if=none,id=dev8_1,format=raw,file=/dev/zvol/tank/n,cache.direct=on",
        "-device", "nvme,drive=dev8_1,serial=dev8_1,bus=pcie.0,addr=0x8.1",
        "-device", "vfio-pci,host=0000:03:00.0,bus=pcie.0,addr=0x9"]


def test_kvm_accel_uses_the_host_cpu():
    argv = plan("k", 'VMrom="uefi"\n', accel="kvm").argv
    assert argv[argv.index("-accel"):argv.index("-accel") + 4] == ["-accel", "kvm", "-cpu", "host"]


def test_memory_not_whole_mib_is_given_in_bytes():
    argv = plan("m", 'VMrom="uefi"\nMem="33793K"\n').argv
    assert argv[argv.index("-m") + 1] == f"{33793 * 1024}B"


@pytest.mark.parametrize("text, words", [
    ('Devices="3,virtio-9p,share=/tmp"', ["Devices item '3,virtio-9p,share=/tmp'", "virtio-9p cannot be mapped"]),
    ('Devices="3,virtio-net,vmnet0"', ["Devices item '3,virtio-net,vmnet0'", "only tap"]),
    ('Devices="3,virtio-net,tap0,mtu=9000"', ["Devices item", "'mtu=9000' cannot be mapped"]),
    ('Devices="3,ahci-hd,/d.img,sectorsize=4096"', ["Devices item", "'sectorsize=4096' cannot be mapped"]),
    ('DiskDriver="ahci"\nDisk="disk"', ["DiskDriver='ahci' cannot be mapped"]),
    ('Devices="3,hda,play=/dev/dsp"', ["Devices item '3,hda,play=/dev/dsp'"]),
])
def test_what_cannot_be_mapped_is_an_error_naming_the_key(text, words):
    with pytest.raises(ConfigError) as err:
        plan("bad", 'VMrom="uefi"\n' + text + "\n")
    line = err.value.line("start")
    assert line.startswith("start: bad: ") and "\n" not in line
    for word in words:
        assert word in line


def test_uefi_without_ovmf_and_vnc_without_port_are_errors():
    with pytest.raises(ConfigError, match="apt-get install ovmf"):
        plan("u", 'VMrom="uefi"\n', code=None)
    with pytest.raises(ConfigError, match="no port"):
        plan("u", 'VMrom="uefi"\nVNC=1\n')
    with pytest.raises(ConfigError, match="VMrom is not set"):
        plan("u", 'Cores=1\n')


@pytest.mark.parametrize("reason, code, want", [
    ("guest-reset", 0, "reboot"), ("host-qmp-system-reset", 0, "reboot"),
    ("guest-shutdown", 0, "poweroff"), ("host-qmp-quit", 0, "poweroff"), ("host-signal", 0, "poweroff"),
    ("guest-panic", 0, "fault"), ("host-error", 0, "error"), (None, 0, "unknown"), ("", 0, "unknown"),
    ("guest-reset", 1, "error"), (None, -9, "signal")])
def test_exit_reasons(reason, code, want):
    assert qemu.classify(reason, code) == want


def test_the_plan_names_its_vm_and_the_console_log_qemu_writes():
    """The supervisor takes the VM's name and console.log from the plan (not back from the argv)."""
    p = plan("web", 'VMrom="uefi"\nCOM=1\n', console_log=f"{VMDIR}/web,1/console.log")
    assert (p.name, p.log) == ("web", f"{VMDIR}/web,1/console.log")
    assert f"socket,id=com1,path={RUN}/web/console,server=on,wait=off,logfile={VMDIR}/web,,1/console.log,logappend=on" \
        in p.argv
    assert plan("web", 'VMrom="uefi"\n', console_log=f"{VMDIR}/web/console.log").log is None  # no COM: no log
    assert p.argv[1:3] == ["-name", qemu.process_name("web")] == ["-name", "web,process=qemu:web"]
