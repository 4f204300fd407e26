"""vm-bhyve's NAME.conf read as vm-bhyve reads it, and its PCI layout as lib/vm-run builds it
(the mapping is pure: no pool, no command)."""

from pathlib import Path

import pytest

from kvm.errors import ConfigError
from kvm.manage.importers import vmbhyve


class FakeVm:
    def __init__(self, name, folder):
        self.name, self.dir = name, Path(folder)

    def dataset(self):
        return f"tank/kvm/vm/{self.name}"


def plan(tmp_path, text, disks=(), name="g1", **kw):
    g = tmp_path / name
    g.mkdir()
    (g / f"{name}.conf").write_text(text)
    for d in disks:
        (g / d).write_bytes(b"x")
    return vmbhyve.plan(FakeVm(name, "/r/vm/" + name), g, **kw), g


def test_the_conf_is_read_as_vm_bhyve_reads_it(tmp_path):
    p = tmp_path / "x.conf"
    p.write_text('cpu="2"  # two\n  memory=8G\nMemory=9G\nmemory="1G"\ncpu=4\nvnc_password="a#b"\nloader=\'uefi\'\n')
    assert vmbhyve.read_conf("x", p) == {"cpu": "2", "memory": "1G", "vnc_password": "a", "loader": "'uefi'"}


def test_uefi_disks_take_a_slot_each_and_nics_share_one(tmp_path):
    text = ('loader="uefi"\ncpu=1\nmemory=1G\nutctime=no\n'
            'disk0_type=nvme\ndisk0_name=a.img\ndisk1_type=virtio-blk\ndisk1_name=b.img\n'
            'disk2_type=ahci-cd\ndisk2_name=seed.iso\n'
            'network0_type=virtio-net\nnetwork1_type=e1000\nvirt_random=yes\n'
            'passthru0=3/0/0\npassthru1=3/0/1\npassthru2=4/0/0\nsound=yes\nvirt_console0=yes\n')
    p, g = plan(tmp_path, text, disks=("a.img", "b.img", "seed.iso"))
    assert p.settings["Disk"] == f"{g}/a.img" and p.settings["DiskDriver"] == "nvme"
    assert p.settings["VMoptions"] == "AHPwS"  # passthru wires memory; utctime=no: no u
    assert p.settings["Devices"].split() == [
        f"5,virtio-blk,{g}/b.img", f"6,ahci-cd,{g}/seed.iso", "7,virtio-net,tapG1", "7:1,e1000,tapG1n1",
        "8,virtio-rnd", "9,passthru,3/0/0", "9:1,passthru,3/0/1", "10,passthru,4/0/0",
        "11,hda,play=/dev/dsp0", "12,virtio-console,0=/r/vm/g1/vtcon.0"]
    assert p.post == ["DestroyIF tapG1", "DestroyIF tapG1n1"]
    assert [line.split(" ")[0] for line in p.report] == ["network0_switch", "network1_switch"]  # all else mapped


def test_the_report_names_what_has_no_counterpart(tmp_path):
    text = ('loader="grub"\ncpu=2\ncpu_sockets=2\nmemory=1G\ngraphics_port=5999\nbhyve_options="-p 1:1"\n'
            'grub_run0="linux /vmlinuz"\nhostbridge=amd\nwhat=1\n')
    p, _ = plan(tmp_path, text)
    keys = [line.split("=", 1)[0] for line in p.report]
    assert keys == ["grub_run0", "bhyve_options", "hostbridge", "cpu_sockets", "graphics_port", "what"]
    assert p.settings["Boot"] == "hd0,1" and p.settings["COM"] == "1"


@pytest.mark.parametrize("text, needle", [
    ('loader=uefi\ncpu=0\nmemory=1G\n', "cpu='0' is out of range"),
    ('loader=uefi\ncpu=1\nmemory=1G\ngraphics=yes\ngraphics_res=big\n', "graphics_res='big' is not WIDTHxHEIGHT"),
    ('loader=uefi\ncpu=1\nmemory=1G\nstart_slot=27\ndisk0_type=nvme\ndisk0_name=a\ndisk1_type=nvme\n'
     'disk1_name=a\nnetwork0_type=virtio-net\nnetwork1_type=virtio-net\nvirt_random=yes\n',
     "network0_type='virtio-net' lands at PCI slot 29"),
    ('loader=uefi\ncpu=1\nmemory=1G\nnetwork0_type=rtl8139\n', "network0_type='rtl8139' is not a NIC"),
    ('loader=uefi\ncpu=1\nmemory=1G\nnetwork0_type=e1000\nnetwork0_mac=58:9c\n', "network0_mac='58:9c' is not a MAC"),
    ('loader=uefi\r\ncpu=1\nmemory=1G\n', "loader='uefi\\r' holds a control character"),
])
def test_bad_values_name_the_key_and_the_value(tmp_path, text, needle):
    with pytest.raises(ConfigError) as err:
        plan(tmp_path, text, disks=("a",))
    assert needle in str(err.value) and err.value.vm == "g1"


def test_vm_bhyve_limits_become_limits(tmp_path):
    text = 'loader="uefi"\ncpu=1\nmemory=1G\nlimit_pcpu=50\nlimit_rbps=100M\nlimit_wiops=1000\n'
    p, _ = plan(tmp_path, text)
    assert p.settings["Limits"] == "pcpu=50 rbps=100M wiops=1000"
    assert not any(line.startswith("limit_") for line in p.report)
    with pytest.raises(ConfigError, match=r"g2.conf: limits 'pcpu=-3' holds pcpu='-3', which is not a whole number"):
        plan(tmp_path, 'loader="uefi"\ncpu=1\nmemory=1G\nlimit_pcpu=-3\n', name="g2")
