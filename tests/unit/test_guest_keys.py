"""Issue 22's set.conf keys (TPM, Limits, CPUPin, Agent): what is read, what is refused (one line
naming the key and the value), and the golden command lines of both hypervisors."""

import pytest

from kvm.conf import config, guestconf
from kvm.errors import ConfigError
from kvm.hypervisor.bhyve import argv as bhyve_argv
from kvm.hypervisor.bhyve import backend as bhyve
from kvm.hypervisor.qemu import argv as qemu

VMDIR = "/tank/kvm/vm"
RUN = "/var/run/kvm/zroot_kvm_1a2b3c4d"
ROM = "/tank/kvm/BHYVE_UEFI.fd"
CODE = "/tank/kvm/firmware/OVMF_CODE_4M.fd"
WIN = ('VMrom="uefi"\nCores="2"\nMem="4G"\nDisk="disk"\nTPM="swtpm"\nCPUPin="0:1 1:0"\n'
       'Limits="pcpu=50 rbps=100M wbps=100M riops=1000 wiops=1000 vmem=6G"\nAgent=yes\n')


def cfg(text, name="win", cpus=2):
    return config.validate(name, f"{VMDIR}/{name}", config.parse_text(text), cpus=cpus)


def guest(name="win"):
    return (f"{RUN}/{name}/tpm.sock", f"{RUN}/{name}/agent")


def test_values_read():
    c = cfg(WIN)
    assert c.tpm == guestconf.Tpm("swtpm")
    assert c.limits == (("pcpu", 50), ("rbps", 100 << 20), ("wbps", 100 << 20), ("riops", 1000),
                        ("wiops", 1000), ("vmem", 6 << 30))
    assert c.cpu_pin == ((0, 1), (1, 0))
    assert c.agent is True
    assert guestconf.limits_text(c.limits) == "pcpu=50 rbps=100M wbps=100M riops=1000 wiops=1000 vmem=6G"
    plain = cfg('VMrom="uefi"\n')
    assert (plain.tpm, plain.limits, plain.cpu_pin, plain.agent) == (None, (), (), False)
    assert cfg('VMrom="uefi"\nTPM="passthru:/dev/tpm0"\nAgent=no\n').tpm == guestconf.Tpm("passthru", "/dev/tpm0")


@pytest.mark.parametrize("line, why", [
    ('TPM="tpm2"', "TPM='tpm2' is not swtpm or passthru:/dev/tpmN"),
    ('TPM="passthru:/etc/passwd"', "TPM='passthru:/etc/passwd' names '/etc/passwd', which is not a TPM device"),
    ('Limits="cpu=50"', "Limits='cpu=50' holds the unknown limit 'cpu' (limits: pcpu, rbps, wbps, riops, wiops, vmem)"),
    ('Limits="pcpu=-5"', "Limits='pcpu=-5' holds pcpu='-5', which is not a whole number"),
    ('Limits="pcpu=0"', "Limits='pcpu=0' holds pcpu=0, out of range (1..200"),
    ('Limits="pcpu=5000"', "Limits='pcpu=5000' holds pcpu=5000, out of range (1..200"),
    ('Limits="rbps=100X"', "Limits='rbps=100X' holds rbps='100X', which is not a number with K, M, G or T"),
    ('Limits="wbps=2T"', "Limits='wbps=2T' holds wbps=2T, out of range (4K..1T"),
    ('Limits="riops=99999999999"', "holds riops=99999999999, out of range (10..10000000"),
    ('Limits="vmem=1G"', "Limits='vmem=1G' holds vmem=1G, below the guest's own memory (Mem)"),
    ('Limits="pcpu=50 pcpu=60"', "sets pcpu twice"),
    ('Limits="pcpu"', "holds 'pcpu', which is not NAME=VALUE"),
    ('CPUPin="0-2"', "CPUPin='0-2' holds '0-2', which is not VCPU:HOSTCPU (like 0:2)"),
    ('CPUPin="2:0"', "CPUPin='2:0' pins vCPU 2, but the VM has 2 (Cores): vCPUs are 0..1"),
    ('CPUPin="0:1 0:0"', "pins vCPU 0 twice"),
    ('CPUPin="0:5000"', "pins vCPU 0 to host CPU 5000, past the highest a host may have (1023)"),
    ('Agent="maybe"', "Agent='maybe' must be yes or no"),
    ('Agent=yes\nDevices="27,virtio-rnd"', "Agent='yes' needs slot 27 for the guest agent's channel, which "
                                           "Devices item '27,virtio-rnd' uses"),
])
def test_bad_values_are_one_line_naming_key_and_value(line, why):
    with pytest.raises(ConfigError) as err:
        cfg(f'VMrom="uefi"\nCores=2\nMem=2G\n{line}\n')
    assert why in err.value.message and "\n" not in err.value.message
    assert err.value.vm == "win"


def test_offline_cpu_line():
    assert guestconf.parse_cpu_list("0-3,6,8-9\n") == {0, 1, 2, 3, 6, 8, 9}
    assert guestconf.offline_pins(((0, 1), (1, 7)), {0, 1, 2, 3, 6}) == (
        "CPUPin pins vCPU 1 to host CPU 7, which does not exist or is offline (online: 0,1,2,3,6)")
    assert guestconf.offline_pins(((0, 1),), {0, 1}) is None


def test_bhyve_golden_every_key():
    argv = bhyve_argv.plan(cfg(WIN), rom=ROM, guest=guest()).argv
    assert argv == ["bhyve", "-c", "2", "-m", "4G", "-p", "0:1", "-p", "1:0", "-s", "0,hostbridge",
                    "-s", f"1,nvme,{VMDIR}/win/disk", "-s", "31,lpc",
                    "-s", f"27,virtio-console,org.qemu.guest_agent.0={RUN}/win/agent",
                    "-l", f"bootrom,{ROM},{VMDIR}/win/UEFI_VARS.fd",
                    "-l", f"tpm,swtpm,{RUN}/win/tpm.sock", "win"]


def test_bhyve_golden_passthru_tpm_no_agent():
    argv = bhyve_argv.plan(cfg('VMrom="uefi"\nTPM="passthru:/dev/tpm0"\n'), rom=ROM, guest=guest()).argv
    assert argv == ["bhyve", "-c", "1", "-m", "1G", "-s", "0,hostbridge", "-s", "31,lpc",
                    "-l", f"bootrom,{ROM},{VMDIR}/win/UEFI_VARS.fd", "-l", "tpm,passthru,/dev/tpm0", "win"]


def test_bhyve_refuses_a_tpm_its_binary_lacks():
    swtpm = cfg('VMrom="uefi"\nTPM="swtpm"\n')
    bhyve.check_tpm(swtpm, {"passthru", "swtpm"})
    with pytest.raises(ConfigError, match=r"has only TPM passthrough .* use TPM=\"passthru:/dev/tpm0\""):
        bhyve.check_tpm(swtpm, {"passthru"})
    with pytest.raises(ConfigError, match=r"has no TPM support \(`bhyve -l help` lists no tpm\)"):
        bhyve.check_tpm(cfg('VMrom="uefi"\nTPM="passthru:/dev/tpm0"\n'), set())


def test_qemu_golden_every_key():
    p = qemu.plan(cfg(WIN), sockets=qemu.run_files(f"{RUN}/win"), code=CODE, guest=guest())
    i = p.argv.index("-chardev")
    assert p.argv[i:] == [
        "-chardev", f"socket,id=chrtpm,path={RUN}/win/tpm.sock", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", "tpm-crb,tpmdev=tpm0",
        "-chardev", f"socket,id=qga0,path={RUN}/win/agent,server=on,wait=off",
        "-device", "virtio-serial-pci,id=vser0,bus=pcie.0,addr=0x1b",
        "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
        "-qmp", f"unix:{RUN}/win/qmp,server=on,wait=off", "-qmp", f"unix:{RUN}/win/ctl,server=on,wait=off", "-S"]
    # paused (-S) so that the vCPUs are pinned and the limits applied before the guest runs
    assert (p.paused, p.wait_vnc, p.tpm, p.agent) == (True, False, f"{RUN}/win/tpm.sock", f"{RUN}/win/agent")
    assert (p.cpu_pin, p.limits) == (((0, 1), (1, 0)), cfg(WIN).limits)


def test_qemu_golden_passthru_and_nothing_paused_without_pins_or_limits():
    p = qemu.plan(cfg('VMrom="uefi"\nTPM="passthru:/dev/tpm0"\n'), sockets=qemu.run_files(f"{RUN}/win"),
                  code=CODE, guest=guest())
    i = p.argv.index("-tpmdev")
    assert p.argv[i:i + 4] == ["-tpmdev", "passthrough,id=tpm0,path=/dev/tpm0", "-device", "tpm-crb,tpmdev=tpm0"]
    assert (p.paused, p.tpm, p.agent) == (False, None, None) and "-S" not in p.argv
