"""A VM's guest addresses from what kvm knows, for vminfo and vmlist (`addresses` in --json, the
inventory's ansible_host): the DHCP leases kvm's dnsmasq gave on the VM's switches, matched by
each NIC's MAC as the guest has it, then the guest agent's answer (Agent=yes). No process is run
and nothing is asked of the guest here: the agent's answer is the one vminfo got, or the one the
supervisor recorded in the state file.

A lease file is dnsmasq's: one line per IPv4 lease, `EXPIRES MAC IP HOSTNAME|* CLIENT-ID|*`
(EXPIRES in epoch seconds, 0 for an infinite lease; the MAC lower-case hex with colons), then a
`duid ...` line and DHCPv6 leases whose second field is an IAID, not a MAC (matched by nothing).
"""

import time

from kvm.host import runfiles

LEASES = "dnsmasq.leases"   # kvm/net RUN_FILES["leases"]


def read_leases(text):
    """[(expires, mac, ip)] of the IPv4 lines of a dnsmasq lease file."""
    out = []
    for line in (text or "").splitlines():
        f = line.split()
        if len(f) >= 3 and f[0].isdigit() and f[1].count(":") == 5:
            out.append((int(f[0]), f[1].lower(), f[2]))
    return out


def switch_leases(switch, cache=None):
    """The leases of a switch's dnsmasq ([] when it has none, or no DHCP); cache: {switch: leases}
    shared by the VMs of one listing, so that each file is read once."""
    if cache is not None and switch in cache:
        return cache[switch]
    try:
        leases = read_leases(runfiles.switch_file(switch, LEASES).read_text(errors="replace"))
    except OSError:
        leases = []
    if cache is not None:
        cache[switch] = leases
    return leases


def from_leases(macs, now=None, cache=None):
    """[{address, source: lease, switch, mac}] of the unexpired leases of each (switch, MAC)."""
    now = time.time() if now is None else now
    out = []
    for switch, mac in macs:
        for expires, leased, ip in switch_leases(switch, cache):
            if leased == mac and (expires == 0 or expires > now):
                out.append({"address": ip, "source": "lease", "switch": switch, "mac": mac})
    return out


def _reachable(address):
    """Not loopback, not link-local: an address another host can use."""
    a = address.lower()
    return not (a.startswith(("127.", "169.254.", "fe80:")) or a == "::1")


def from_agent(answer):
    """[{address, source: agent, switch: null, mac: null}] of the guest agent's answer ({os,
    addresses} or None): IPv4 first, loopback and link-local left out."""
    found = [a for a in ((answer or {}).get("addresses") or []) if isinstance(a, str) and _reachable(a)]
    found.sort(key=lambda a: ":" in a)
    return [{"address": a, "source": "agent", "switch": None, "mac": None} for a in found]


def addresses(macs, answer=None, now=None, cache=None):
    """The VM's addresses: its leases first, then the agent's others (the first is the one to reach
    it by: the inventory's ansible_host)."""
    out = from_leases(macs, now, cache)
    seen = {a["address"] for a in out}
    return out + [a for a in from_agent(answer) if a["address"] not in seen]
