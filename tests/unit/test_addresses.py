"""A VM's addresses (kvm/vm/addresses.py): the leases of kvm's dnsmasq matched by the NIC's MAC as
the guest has it (bhyve's net_genmac, or mac=), then the guest agent's reachable addresses."""

import hashlib

from kvm.conf import config
from kvm.conf.devices import default_mac, nic_mac, parse_devices
from kvm.conf.switchconf import parse_nics
from kvm.vm import addresses

NOW = 1_800_000_000


def genmac(name, slot, function=0):
    """bhyve's net_genmac, written again from its source (usr.sbin/bhyve/net_utils.c)."""
    d = hashlib.md5(f"{slot}-{function}-{name}".encode()).digest()
    return "00:a0:98:%02x:%02x:%02x" % (d[0], d[1], d[2])


def lease_file(mac):
    """A lease file as dnsmasq's lease_update_file writes it: IPv4 leases (expiry, MAC, address, name
    or *, client id or *), one infinite (0), one expired, one of another MAC, then the DHCPv6 part."""
    return (f"{NOW + 3600} {mac} 10.0.7.50 web 01:{mac}\n"
            f"0 {mac} 10.0.7.51 * *\n"
            f"{NOW - 10} {mac} 10.0.7.49 web *\n"
            f"{NOW + 3600} 00:a0:98:00:00:01 10.0.7.60 other *\n"
            "duid 00:01:00:01:2c:4f:aa:bb:52:54:00:12:34:56\n"
            f"{NOW + 3600} 1234567 fd00::50 web 00:02:00:00:ab:11\n")


def test_the_mac_is_bhyves_unless_mac_is_given():
    dev = parse_devices("web", "3,virtio-net,tapWEB 4:1,e1000,tapX,mac=58:9C:FC:00:00:01")
    assert default_mac("web", "3") == genmac("web", 3) == nic_mac("web", dev[0])
    assert default_mac("web", "4:1") == genmac("web", 4, 1)
    assert nic_mac("web", dev[1]) == "58:9c:fc:00:00:01"              # as dnsmasq writes it: lower case


def test_unexpired_leases_of_the_nics_mac_on_its_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_RUN_DIR", str(tmp_path))
    mac = genmac("web", 3)
    (tmp_path / "switch" / "lan").mkdir(parents=True)
    (tmp_path / "switch" / "lan" / "dnsmasq.leases").write_text(lease_file(mac))
    macs = config.nic_macs("web", parse_nics("tapWEB=lan"), parse_devices("web", "3,virtio-net,tapWEB"))
    assert macs == [["lan", mac]]
    got = addresses.addresses(macs, now=NOW)
    assert got == [{"address": "10.0.7.50", "source": "lease", "switch": "lan", "mac": mac},
                   {"address": "10.0.7.51", "source": "lease", "switch": "lan", "mac": mac}]
    assert addresses.addresses([["dmz", mac]], now=NOW) == []                     # a switch without leases
    assert addresses.addresses([["lan", genmac("web", 4)]], now=NOW) == []        # another NIC's MAC


def test_agent_addresses_after_the_leases_reachable_ones_ipv4_first(tmp_path, monkeypatch):
    monkeypatch.setenv("KVM_RUN_DIR", str(tmp_path))
    answer = {"os": "x", "addresses": ["fe80::1", "2001:db8::5", "127.0.0.1", "169.254.3.3", "192.0.2.9", "::1"]}
    assert [(a["address"], a["source"]) for a in addresses.addresses([], answer)] == \
        [("192.0.2.9", "agent"), ("2001:db8::5", "agent")]
    assert addresses.addresses([], None) == [] and addresses.addresses([], {"os": "x", "addresses": []}) == []


def test_vmlist_reads_the_macs_from_set_conf_values():
    values = {"Switch": "tapWEB=lan tapWEBn1=dmz:10", "Devices": "3,virtio-net,tapWEB 4,virtio-net,tapWEBn1,mac=02:00:00:00:00:09"}
    assert config.switch_macs("web", values) == [["lan", genmac("web", 3)], ["dmz", "02:00:00:00:00:09"]]
    assert config.switch_macs("web", {"Devices": values["Devices"]}) == []         # no Switch
    assert config.switch_macs("web", values, unevaluated=("Devices",)) == []       # not known without sh
    assert config.switch_macs("web", dict(values, Switch="tapWEB")) == []          # refused: vminfo says why
