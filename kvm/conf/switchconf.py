"""A switch's settings: ROOT/switches/NAME.conf (sh variables, read and written as set.conf is) ->
a validated SwitchConfig; and the Switch key of a VM's set.conf (its NICs on switches).

A switch is a bridge kvm makes (named as the switch) or one the admin made (Manual=BRIDGE), with
its uplinks, an address, NAT behind the host and kvm's own DHCP server. This module only reads,
checks and renders text; kvm/net makes the host match it.

    Uplinks="em0"          host interfaces made members (each a trunk for the NICs' VLANs)
    Vlan="10"              the uplinks carry the switch tagged 10 (the member is em0.10)
    Mtu="9000"             the bridge's and every member's MTU
    Address="10.0.5.1/24"  the bridge's own address (the guests' gateway)
    Nat="1"                NAT of Address's subnet behind the host (NatOut: the way out)
    NatOut="em0"           the interface NAT leaves by (default: the default route's)
    Dhcp="10.0.5.10-10.0.5.200"   kvm's dnsmasq hands out these addresses
    Private="1"            the VMs' NICs cannot reach each other (only the uplinks and the host)
    Manual="bridge0"       a bridge kvm does not make or remove: NICs are only put on it
"""

import ipaddress
import re

from kvm.conf.confedit import remove_value, set_value
from kvm.conf.shconf import NeedsShell, parse_text
from kvm.errors import ConfigError, UsageError
from kvm.host.record import record

FOLDER = "switches"          # ROOT/switches/NAME.conf
SUFFIX = ".conf"
IFNAME_MAX = 15
VLAN_MIN, VLAN_MAX = 1, 4094
MTU_MIN, MTU_MAX = 576, 9216
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,14}\Z")
IFNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,14}\Z")
# interface names a cloner would claim (FreeBSD: `ifconfig tap3 create`; Linux keeps lo, eth...)
CLONER_RE = re.compile(r"(bridge|tap|vlan|epair|lagg|lo|vmnet|tun|gif|wg|em|igb|ix|re|vtnet|eth|veth|br|"
                       r"virbr|docker|lxcbr)[0-9]+\Z")
KEYS = {
    "Uplinks": "host interfaces made members",
    "Vlan": "the uplinks carry the switch tagged with this VLAN",
    "Mtu": "MTU of the bridge and its members",
    "Address": "the bridge's own address, CIDR",
    "Nat": "1 = NAT of Address's subnet behind the host",
    "NatOut": "the interface NAT leaves by",
    "Dhcp": "FIRST-LAST addresses kvm's dnsmasq hands out",
    "Private": "1 = the VMs' NICs cannot reach each other",
    "Manual": "an existing bridge kvm does not make or remove",
}


@record(frozen=True)
class SwitchConfig:
    """A switch's validated settings (built only by validate())."""

    name: str
    bridge: str
    uplinks: tuple = ()
    vlan: int = 0
    mtu: int = 0
    address: object = None       # ipaddress.IPv4Interface or None
    nat: bool = False
    nat_out: str = ""
    dhcp: tuple = ()             # (first, last) as ipaddress.IPv4Address, or ()
    private: bool = False
    manual: str = ""

    @property
    def network(self):
        return self.address.network if self.address else None

    def members(self):
        """The uplinks as the bridge's members: IF, or IF.N when the switch has a Vlan."""
        return tuple(f"{u}.{self.vlan}" if self.vlan else u for u in self.uplinks)

    def values(self):
        """The settings as set.conf-style text values (what `switch info` and --json show)."""
        return {"Uplinks": " ".join(self.uplinks), "Vlan": str(self.vlan or ""), "Mtu": str(self.mtu or ""),
                "Address": str(self.address or ""), "Nat": "1" if self.nat else "", "NatOut": self.nat_out,
                "Dhcp": f"{self.dhcp[0]}-{self.dhcp[1]}" if self.dhcp else "",
                "Private": "1" if self.private else "", "Manual": self.manual}


def check_name(name):
    """A switch name: 1-15 lower-case letters, digits and _, starting with a letter (it names the
    bridge, so an interface name), and none a cloner would claim (bridge0, tap3...)."""
    if not NAME_RE.match(name or ""):
        raise UsageError(f"switch name '{name}' is not valid (1-{IFNAME_MAX} lower-case letters, digits and _, "
                         f"starting with a letter: it names the bridge)")
    if CLONER_RE.match(name):
        raise UsageError(f"switch name '{name}' looks like a host interface's (bridge0, tap3, em0...): "
                         f"choose another (lan, dmz, nat_net...)")
    return name


def check_ifname(value, what):
    if not IFNAME_RE.match(value or ""):
        raise ValueError(f"{what} '{value}' is not an interface name (1-{IFNAME_MAX} letters, digits, _ and .)")
    return value


def vlan_id(text, what="VLAN"):
    """A VLAN id 1-4094 (0 and 4095 are reserved by 802.1Q)."""
    if not re.fullmatch(r"[0-9]{1,4}", text or "") or not VLAN_MIN <= int(text) <= VLAN_MAX:
        raise ValueError(f"{what} '{text}' is out of {VLAN_MIN}-{VLAN_MAX}")
    return int(text)


def _bad(name, key, value, why):
    return ConfigError(f"{FOLDER}/{name}{SUFFIX}: {key}={value!r} {why}")


def validate(name, values):
    """SwitchConfig from NAME.conf values; ConfigError naming the file, the key and the value."""
    check_name(name)
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(f"{FOLDER}/{name}{SUFFIX}: '{unknown[0]}' is not a switch setting "
                          f"(settings: {', '.join(KEYS)})")
    get = values.get

    def number(key, low, high):
        text = get(key) or ""
        if not text:
            return 0
        if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= high:
            raise _bad(name, key, text, f"is out of {low}-{high}")
        return int(text)

    def flag(key):
        if (get(key) or "") not in ("", "0", "1"):
            raise _bad(name, key, get(key), "must be '0' or '1'")
        return get(key) == "1"

    uplinks = tuple((get("Uplinks") or "").split())
    for u in uplinks:
        try:
            check_ifname(u, "uplink")
        except ValueError as exc:
            raise _bad(name, "Uplinks", get("Uplinks"), str(exc).split("' ", 1)[1]) from None
    if len(set(uplinks)) != len(uplinks):
        raise _bad(name, "Uplinks", get("Uplinks"), "names an interface twice")
    vlan = number("Vlan", VLAN_MIN, VLAN_MAX)
    if vlan and not uplinks:
        raise _bad(name, "Vlan", get("Vlan"), "needs an uplink (it is the tag the uplinks carry)")
    if vlan and any(len(f"{u}.{vlan}") > IFNAME_MAX for u in uplinks):
        raise _bad(name, "Vlan", get("Vlan"), f"makes a member name longer than {IFNAME_MAX} characters")
    mtu = number("Mtu", MTU_MIN, MTU_MAX)
    address = None
    if get("Address"):
        try:
            address = ipaddress.IPv4Interface(get("Address"))
        except ValueError:
            raise _bad(name, "Address", get("Address"), "is not an IPv4 address with its prefix (10.0.5.1/24)") \
                from None
        if "/" not in get("Address") or address.network.prefixlen > 30:
            raise _bad(name, "Address", get("Address"), "needs a prefix of /30 or shorter (10.0.5.1/24)")
        if address.ip in (address.network.network_address, address.network.broadcast_address):
            raise _bad(name, "Address", get("Address"), "is its subnet's network or broadcast address")
    nat = flag("Nat")
    if nat and not address:
        raise ConfigError(f"{FOLDER}/{name}{SUFFIX}: Nat needs an Address (the guests' subnet and gateway)")
    nat_out = get("NatOut") or ""
    if nat_out:
        if not nat:
            raise _bad(name, "NatOut", nat_out, "is set without Nat=1")
        try:
            check_ifname(nat_out, "NatOut")
        except ValueError:
            raise _bad(name, "NatOut", nat_out, "is not an interface name") from None
    dhcp = ()
    if get("Dhcp"):
        if not address:
            raise ConfigError(f"{FOLDER}/{name}{SUFFIX}: Dhcp needs an Address (the subnet it hands out)")
        try:
            dhcp = dhcp_range(get("Dhcp"), address)
        except ConfigError as exc:
            raise ConfigError(f"{FOLDER}/{name}{SUFFIX}: {exc.message}") from None
    manual = get("Manual") or ""
    if manual:
        try:
            check_ifname(manual, "bridge")
        except ValueError:
            raise _bad(name, "Manual", manual, "is not an interface name") from None
        for key in ("Uplinks", "Vlan", "Mtu", "Address", "Nat", "Dhcp"):
            if get(key) and get(key) != "0":
                raise ConfigError(f"{FOLDER}/{name}{SUFFIX}: {key} is set with Manual={manual}: a manual bridge "
                                  f"is the admin's, kvm only puts NICs on it")
    return SwitchConfig(name=name, bridge=manual or name, uplinks=uplinks, vlan=vlan, mtu=mtu, address=address,
                        nat=nat, nat_out=nat_out, dhcp=dhcp, private=flag("Private"), manual=manual)


def dhcp_range(text, address):
    """(first, last) of a Dhcp range inside Address's subnet, not holding Address itself."""
    first, sep, last = (text or "").partition("-")
    try:
        first, last = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip())
    except ValueError:
        first = None
    if not sep or first is None:
        raise ConfigError(f"Dhcp={text!r} is not FIRST-LAST (10.0.5.10-10.0.5.200)")
    net = address.network
    hosts = (net.network_address, net.broadcast_address)
    if first not in net or last not in net or first in hosts or last in hosts:
        raise ConfigError(f"Dhcp={text!r} is not within {net}'s host addresses")
    if first > last:
        raise ConfigError(f"Dhcp={text!r}: its first address comes after its last")
    if first <= address.ip <= last:
        raise ConfigError(f"Dhcp={text!r} holds the switch's own address {address.ip}")
    return first, last


def parse(name, text):
    """SwitchConfig from the text of NAME.conf (plain assignments only: no sh is ever run)."""
    try:
        values = parse_text(text)
    except NeedsShell as exc:
        raise ConfigError(f"{FOLDER}/{name}{SUFFIX}: {exc} (a switch's file holds plain NAME=\"value\" lines)") \
            from None
    return validate(name, values)


def render(cfg, text=""):
    """The text of NAME.conf holding cfg's values, editing `text` (lines kept, as set.conf edits)."""
    if not text:
        text = (f"# kvm switch {cfg.name}: `kvm switch set {cfg.name} KEY=VALUE` edits it "
                f"(kvm.conf(5) SWITCHES)\n")
    for key, value in cfg.values().items():
        text = set_value(text, key, value) if value else remove_value(text, key)
    return text


def overlapping(cfg, others):
    """The first other switch whose subnet overlaps cfg's, or None."""
    if not cfg.network:
        return None
    for other in others:
        if other.name != cfg.name and other.network and other.network.overlaps(cfg.network):
            return other
    return None


# ------------------------------------------------------------------- a VM's Switch key

@record(frozen=True)
class Nic:
    """One NIC of a VM on a switch: its tap (a Devices item's source), the switch, the VLAN (0: none)."""

    tap: str
    switch: str
    vlan: int = 0

    def text(self):
        return f"{self.tap}={self.switch}" + (f":{self.vlan}" if self.vlan else "")


def parse_nics(text):
    """Switch="TAP=SWITCH[:VLAN] ..." -> tuple of Nic; ValueError saying what is wrong."""
    out, taps = [], set()
    for item in (text or "").split():
        tap, eq, rest = item.partition("=")
        switch, colon, vlan = rest.partition(":")
        if not eq or not tap or not switch or (colon and not vlan):
            raise ValueError(f"holds '{item}', which is not TAP=SWITCH or TAP=SWITCH:VLAN")
        try:
            check_ifname(tap, "tap")
            check_name(switch)
            number = vlan_id(vlan) if colon else 0
        except (ValueError, UsageError) as exc:
            raise ValueError(f"holds '{item}': {getattr(exc, 'message', exc)}") from None
        if tap in taps:
            raise ValueError(f"puts tap {tap} on two switches")
        taps.add(tap)
        out.append(Nic(tap, switch, number))
    return tuple(out)


def nics_text(nics):
    return " ".join(n.text() for n in nics)
