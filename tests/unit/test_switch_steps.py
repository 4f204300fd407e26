"""kvm switch without a host: the switch file's checks, a VM's Switch key, and the platforms' steps
(golden argvs, pf and nftables rule text, dnsmasq's configuration) from what they would see."""

import ipaddress

import pytest

from kvm.conf import switchconf
from kvm.errors import ConfigError, UsageError
from kvm.platform import freebsd_net, linux_net
from kvm.platform.netbase import dnsmasq_conf, read_leases


def cfg(name="lan", **values):
    return switchconf.validate(name, values)


def argvs(steps):
    return [list(s.argv) for s in steps]


@pytest.mark.parametrize("values, needle", [
    ({"Vlan": "0", "Uplinks": "em0"}, "Vlan='0' is out of 1-4094"),
    ({"Vlan": "4095", "Uplinks": "em0"}, "Vlan='4095' is out of 1-4094"),
    ({"Vlan": "10"}, "needs an uplink"),
    ({"Mtu": "100"}, "Mtu='100' is out of 576-9216"),
    ({"Address": "10.0.5.1"}, "needs a prefix"),
    ({"Address": "10.0.5.255/24"}, "network or broadcast"),
    ({"Address": "fe80::1/64"}, "is not an IPv4 address"),
    ({"Nat": "yes", "Address": "10.0.5.1/24"}, "Nat='yes' must be '0' or '1'"),
    ({"NatOut": "em0", "Address": "10.0.5.1/24"}, "NatOut='em0' is set without Nat=1"),
    ({"Dhcp": "10.0.5.20-10.0.5.10", "Address": "10.0.5.1/24"}, "comes after its last"),
    ({"Uplinks": "em0 em0"}, "names an interface twice"),
    ({"Uplinks": "em0;reboot"}, "is not an interface name"),
    ({"Colour": "blue"}, "'Colour' is not a switch setting"),
    ({"Manual": "bridge0", "Address": "10.0.5.1/24"}, "Address is set with Manual=bridge0"),
])
def test_bad_switch_files_are_one_line_naming_the_key(values, needle):
    with pytest.raises(ConfigError) as exc:
        cfg(**values)
    assert needle in exc.value.message and exc.value.message.startswith("switches/lan.conf: ")


@pytest.mark.parametrize("name", ["bridge0", "tap3", "em0", "vlan10", "lo0", "Lan", "a" * 16, "1lan", "la-n"])
def test_switch_names_that_would_clash_or_are_no_interface_names(name):
    with pytest.raises(UsageError):
        switchconf.check_name(name)


def test_render_and_parse_round_trip_keep_other_lines():
    c = cfg(Uplinks="em0 em1", Vlan="10", Address="10.0.5.1/24", Nat="1", Dhcp="10.0.5.10-10.0.5.20")
    text = "# mine\n" + switchconf.render(c)
    assert switchconf.parse("lan", text) == c
    edited = switchconf.render(cfg(Uplinks="em0"), text)
    assert edited.startswith("# mine\n") and 'Uplinks="em0"' in edited and "Nat=" not in edited
    assert c.members() == ("em0.10", "em1.10")


def test_the_switch_key_of_set_conf():
    nics = switchconf.parse_nics("tapWEB=lan:10 tapWEBn1=dmz")
    assert nics == (switchconf.Nic("tapWEB", "lan", 10), switchconf.Nic("tapWEBn1", "dmz", 0))
    assert switchconf.nics_text(nics) == "tapWEB=lan:10 tapWEBn1=dmz"
    for bad, needle in (("tapWEB", "not TAP=SWITCH"), ("tapWEB=lan:0", "out of 1-4094"),
                        ("tapWEB=lan tapWEB=dmz", "two switches"), ("tapWEB=Lan", "is not valid")):
        with pytest.raises(ValueError) as exc:
            switchconf.parse_nics(bad)
        assert needle in str(exc.value)


def test_overlapping_subnets():
    a, b = cfg("lan", Address="10.0.5.1/24"), cfg("dmz", Address="10.0.5.129/25")
    assert switchconf.overlapping(b, [a]) == a and switchconf.overlapping(cfg("x", Address="10.0.6.1/24"), [a]) is None


# ------------------------------------------------------------------------- FreeBSD

IFCONFIG_A = """em0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500
\toptions=4e524bb<RXCSUM,TXCSUM,VLAN_MTU,VLAN_HWTAGGING>
\tether 58:9c:fc:00:00:01
\tinet 192.168.1.5 netmask 0xffffff00 broadcast 192.168.1.255
\tgroups: em
lan: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 9000
\tether 58:9c:fc:10:ff:01
\tinet 10.0.5.1 netmask 0xffffff00 broadcast 10.0.5.255
\tid 58:9c:fc:10:ff:01 priority 32768 hellotime 2 fwddelay 15
\tmaxage 20 holdcnt 6 proto rstp maxaddr 2000 timeout 1200
\troot id 58:9c:fc:10:ff:01 priority 32768 ifcost 0 port 0
\tbridge flags=1<VLANFILTER>
\tmember: tapWEB flags=943<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP,PRIVATE>
\t        port 5 priority 128 path cost 2000000 untagged 10
\tmember: em0.20 flags=143<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP>
\t        port 4 priority 128 path cost 20000 tagged 10,30-32
\tgroups: bridge
"""


def test_freebsd_reads_ifconfig_a_as_ifbridge_prints_it():
    seen = freebsd_net.parse_ifconfig(IFCONFIG_A)
    assert seen["em0"]["addrs"] == ["192.168.1.5/24"] and seen["em0"]["up"] and seen["em0"]["kind"] == "em"
    lan = seen["lan"]
    assert lan["kind"] == "bridge" and lan["mtu"] == 9000 and lan["vlanfilter"]
    assert lan["members"] == {"tapWEB": {"untagged": 10, "tagged": [], "private": True},
                              "em0.20": {"untagged": 0, "tagged": [10, 30, 31, 32], "private": False}}


FACTS15 = {"vlanfilter": True, "member_ifaddrs": 0, "forwarding": True}
FACTS14 = {"vlanfilter": False, "member_ifaddrs": None, "forwarding": True}


def test_freebsd_private_nic_and_uplink_problems():
    n = freebsd_net.NET
    sw = cfg(Uplinks="em0", Private="1")
    seen = freebsd_net.parse_ifconfig(IFCONFIG_A)
    assert "member_ifaddrs=0" in n.uplink_problem(sw, "em0", seen, FACTS15)
    assert n.uplink_problem(sw, "em0", seen, FACTS14) is None
    assert n.uplink_problem(sw, "em9", seen, FACTS15).startswith("uplink em9 does not exist")
    bridge = {"lan": {"members": {"em0": {}}, "vlanfilter": False, "mtu": 1500, "addrs": [], "up": True}}
    steps = n.attach_steps(sw, switchconf.Nic("tapDB", "lan"), bridge, FACTS15)
    assert argvs(steps) == [["ifconfig", "tap", "create", "name", "tapDB"],
                            ["ifconfig", "tapDB", "-txcsum", "-rxcsum", "-tso", "-lro", "up"],
                            ["ifconfig", "lan", "addm", "tapDB"], ["ifconfig", "lan", "private", "tapDB"]]


def test_freebsd_pf_rules_text():
    sw = cfg(Address="10.0.5.1/24", Nat="1")
    text = freebsd_net.NET.nat_rules(sw, "em0")
    lines = text.splitlines()
    assert lines[1:3] == ["nat on em0 inet from 10.0.5.0/24 to ! 10.0.5.0/24 -> (em0)",
                          "pass in quick on lan inet from 10.0.5.0/24 to any keep state"]
    assert lines[3].startswith('pass out quick on lan inet to 10.0.5.0/24 keep state label "kvm:lan:')
    assert freebsd_net.NET.nat_rules(sw, "em1") != text, "another way out is another fingerprint"


# ------------------------------------------------------------------------- Linux

def test_linux_up_attach_down_golden_argv():
    n = linux_net.NET
    sw = cfg(Uplinks="eth0", Mtu="9000", Address="10.0.5.1/24", Private="1")
    seen = {"eth0": {"exists": True, "up": True, "mtu": 1500, "addrs": [], "kind": "", "master": "", "members": {}}}
    assert argvs(n.up_steps(sw, seen, n.facts())) == [
        ["ip", "link", "add", "name", "lan", "type", "bridge"],
        ["ip", "link", "set", "dev", "lan", "mtu", "9000"],
        ["ip", "link", "set", "dev", "eth0", "mtu", "9000", "master", "lan", "up"],
        ["ip", "addr", "add", "10.0.5.1/24", "dev", "lan"],
        ["ip", "link", "set", "dev", "lan", "up"],
    ]
    seen["lan"] = {"exists": True, "up": True, "mtu": 9000, "addrs": ["10.0.5.1/24"], "kind": "bridge",
                   "master": "", "vlanfilter": False,
                   "members": {"eth0": {"untagged": 0, "tagged": [], "private": False}}}
    seen["eth0"].update(master="lan", mtu=9000)
    assert n.up_steps(sw, seen, n.facts()) == []
    assert argvs(n.attach_steps(sw, switchconf.Nic("tapWEB", "lan", 10), seen, n.facts())) == [
        ["ip", "tuntap", "add", "dev", "tapWEB", "mode", "tap"],
        ["ip", "link", "set", "dev", "tapWEB", "mtu", "9000", "master", "lan", "up"],
        ["ip", "link", "set", "dev", "lan", "type", "bridge", "vlan_filtering", "1"],
        ["bridge", "vlan", "add", "dev", "tapWEB", "vid", "10", "pvid", "untagged"],
        ["bridge", "vlan", "del", "dev", "tapWEB", "vid", "1"],
        ["bridge", "vlan", "add", "dev", "eth0", "vid", "10"],
        ["bridge", "link", "set", "dev", "tapWEB", "isolated", "on"],
    ]
    assert argvs(n.down_steps(sw, seen)) == [["ip", "link", "set", "dev", "eth0", "nomaster"],
                                             ["ip", "link", "delete", "dev", "lan"]]


def test_linux_nft_transaction_text():
    sw = cfg(Address="10.0.5.1/24", Nat="1")
    text = linux_net.NET.nat_rules(sw, "eth0")
    assert text.splitlines()[1:9] == [
        "table ip kvm {", "}",
        "add chain ip kvm lan_nat { type nat hook postrouting priority srcnat; policy accept; }",
        "flush chain ip kvm lan_nat",
        "add chain ip kvm lan_fwd { type filter hook forward priority filter; policy accept; }",
        "flush chain ip kvm lan_fwd",
        'add rule ip kvm lan_fwd iifname "lan" ip saddr 10.0.5.0/24 accept',
        'add rule ip kvm lan_fwd oifname "lan" ct state established,related accept',
    ]
    assert text.splitlines()[9].startswith('add rule ip kvm lan_nat ip saddr 10.0.5.0/24 ip daddr != 10.0.5.0/24 '
                                           'oifname "eth0" masquerade comment "kvm:lan:')


RULESET = """table ip filter {
\tchain FORWARD {
\t\ttype filter hook forward priority filter; policy drop;
\t\tcounter packets 0 bytes 0 jump DOCKER-USER
\t}
}
table ip kvm {
\tchain lan_fwd {
\t\ttype filter hook forward priority filter; policy drop;
\t}
}
table inet mine {
\tchain fwd {
\t\ttype filter hook forward priority 0; policy accept;
\t}
}
"""


def test_linux_finds_forward_drops_outside_kvms_table():
    assert linux_net.forward_drops(RULESET) == [("ip filter", "FORWARD")]


def test_dnsmasq_conf_and_leases():
    sw = cfg(Address="10.0.5.1/24", Dhcp="10.0.5.10-10.0.5.99")
    text = dnsmasq_conf(sw, {"pid": "/run/kvm/switch/lan/dnsmasq.pid", "leases": "/run/kvm/switch/lan/dnsmasq.leases"})
    assert text.splitlines()[1:] == [
        "interface=lan", "bind-dynamic", "except-interface=lo", "no-hosts",
        "dhcp-range=10.0.5.10,10.0.5.99,255.255.255.0,12h", "dhcp-option=option:router,10.0.5.1",
        "dhcp-option=option:dns-server,10.0.5.1", "dhcp-authoritative",
        "dhcp-leasefile=/run/kvm/switch/lan/dnsmasq.leases", "pid-file=/run/kvm/switch/lan/dnsmasq.pid"]
    assert read_leases("1700000000 52:54:00:12:34:56 10.0.5.42 kvmguest 01:52:54:00:12:34:56\n"
                       "1700000001 52:54:00:12:34:57 10.0.5.43 * *\n") == [
        {"expires": 1700000000, "mac": "52:54:00:12:34:56", "ip": "10.0.5.42", "hostname": "kvmguest"},
        {"expires": 1700000001, "mac": "52:54:00:12:34:57", "ip": "10.0.5.43", "hostname": ""}]
    assert ipaddress.IPv4Address("10.0.5.10") == sw.dhcp[0]
