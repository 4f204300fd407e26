"""Linux's switches: bridges, taps and VLANs through iproute2 (`ip`, `bridge`), NAT in kvm's own
nftables table (`table ip kvm`: a switch's chains replaced at once by one `nft -f` transaction).

A bridge gets `vlan_filtering 1` when a NIC with a VLAN comes (as FreeBSD's vlanfilter): every port
is then in VLAN 1 untagged by default (the NICs without a VLAN keep talking), a NIC with a VLAN is
an access port of it (`bridge vlan
add dev TAP vid N pvid untagged`, VLAN 1 removed), the uplinks trunks of it (`bridge vlan add dev
IF vid N`). Linux bridges do not re-initialise members for offloads (FreeBSD's link flap), so
offloads are left as they are here.
"""

import json
import re
from pathlib import Path

from kvm import host
from kvm.errors import KvmError
from kvm.platform.netbase import digest, step

TABLE = "kvm"
PACKAGES = {"dnsmasq": "dnsmasq-base", "nft": "nftables", "ip": "iproute2", "bridge": "iproute2"}
PROC_SYS = Path("/proc/sys")


def parse_ip_addr(text):
    """{name: {exists, up, mtu, addrs, kind, master, members, vlanfilter}} from `ip -j -d addr show`."""
    try:
        rows = json.loads(text or "[]")
    except ValueError:
        rows = []
    seen = {}
    for row in rows:
        info = row.get("linkinfo") or {}
        data = info.get("info_data") or {}
        seen[row["ifname"]] = {
            "exists": True, "up": "UP" in row.get("flags", []), "mtu": row.get("mtu", 1500),
            "addrs": [f"{a['local']}/{a['prefixlen']}" for a in row.get("addr_info", []) if a.get("family") == "inet"],
            "kind": info.get("info_kind", ""), "master": row.get("master", ""), "members": {},
            "vlanfilter": bool(data.get("vlan_filtering")), "isolated": bool(
                (info.get("info_slave_data") or {}).get("isolated"))}
    for name, i in seen.items():
        if i["master"] in seen:
            seen[i["master"]]["members"][name] = {"untagged": 0, "tagged": [], "private": i["isolated"]}
    return seen


class LinuxNet:
    """The Linux side of `kvm switch`: what to run, from what was seen."""

    name = "linux"
    nat_tool = "nft"

    # ---------------------------------------------------------------- reading the host
    def observe(self, vlans=False):
        """Every interface from one `ip -j -d addr show`; with vlans, each port's VLANs (`bridge -j vlan`)."""
        res = host.run(["ip", "-j", "-d", "addr", "show"], mutating=False, check=False)
        if res.status == 127:
            raise KvmError(f"ip is missing: {self.package('ip')}")
        seen = parse_ip_addr(res.stdout)
        if vlans:
            out = host.run(["bridge", "-j", "vlan", "show"], mutating=False, check=False).stdout
            try:
                ports = json.loads(out or "[]")
            except ValueError:
                ports = []
            for port in ports:
                name = port.get("ifname")
                master = seen.get(name, {}).get("master")
                if master in seen and name in seen[master]["members"]:
                    m = seen[master]["members"][name]
                    for v in port.get("vlans", []):
                        if "PVID" in v.get("flags", []):
                            m["untagged"] = v["vlan"]
                        elif "Egress Untagged" not in v.get("flags", []):
                            m["tagged"].append(v["vlan"])
        return seen

    def facts(self):
        return {"vlanfilter": True, "member_ifaddrs": 0, "forwarding": _sysctl("net/ipv4/ip_forward") == "1"}

    def default_route_interface(self):
        res = host.run(["ip", "-j", "route", "show", "default"], mutating=False, check=False)
        try:
            rows = json.loads(res.stdout or "[]")
        except ValueError:
            rows = []
        return rows[0].get("dev", "") if rows else ""

    # ---------------------------------------------------------------- refusing before acting
    def uplink_problem(self, sw, uplink, seen, facts):
        info = seen.get(uplink)
        if not info:
            return f"uplink {uplink} does not exist (ip link lists the interfaces)"
        if info.get("kind") == "bridge":
            return f"uplink {uplink} is a bridge: a bridge cannot be a member of another"
        if info["master"] and info["master"] != sw.bridge:
            return f"uplink {uplink} is already a member of {info['master']}"
        if info["addrs"] and not sw.vlan:
            addr = info["addrs"][0]
            return (f"uplink {uplink} carries the host's address {addr}: a bridge member's address stops working, "
                    f"and kvm never strips an address from a live interface: move it onto a bridge in "
                    f"/etc/network/interfaces (ifupdown: auto br0 / iface br0 inet static / address {addr} / "
                    f"bridge_ports {uplink}; and iface {uplink} inet manual), or with iproute2 from a console: "
                    f"ip link add br0 type bridge && ip addr del {addr} dev {uplink} && ip link set {uplink} master "
                    f"br0 && ip addr add {addr} dev br0 && ip link set br0 up; then kvm switch create "
                    f"{sw.name} --manual br0")
        return None

    def nic_vlan_problem(self, facts):
        return None

    # ---------------------------------------------------------------- the steps
    def up_steps(self, sw, seen, facts):
        out = []
        if sw.manual:
            if sw.bridge not in seen:
                raise KvmError(f"bridge {sw.bridge} (Manual) does not exist: it is the admin's to make")
            return out
        bridge = seen.get(sw.bridge)
        if not bridge:
            out.append(step("ip", "link", "add", "name", sw.bridge, "type", "bridge", why=f"switch {sw.name}'s bridge"))
            bridge = {"mtu": 1500, "members": {}, "addrs": [], "up": False}
        if sw.mtu and bridge["mtu"] != sw.mtu:
            out.append(step("ip", "link", "set", "dev", sw.bridge, "mtu", sw.mtu))
        for uplink, member in zip(sw.uplinks, sw.members()):
            if member != uplink and member not in seen:
                out.append(step("ip", "link", "add", "link", uplink, "name", member, "type", "vlan", "id", sw.vlan,
                                why=f"the uplink {uplink} carrying VLAN {sw.vlan}"))
            if member not in bridge["members"] or not seen.get(member, {}).get("up"):
                mtu = ["mtu", str(sw.mtu)] if sw.mtu and seen.get(member, {}).get("mtu") != sw.mtu else []
                out.append(step("ip", "link", "set", "dev", member, *mtu, "master", sw.bridge, "up"))
        for addr in bridge["addrs"]:  # the bridge is kvm's: an address the switch no longer has goes
            if addr != str(sw.address or ""):
                out.append(step("ip", "addr", "del", addr, "dev", sw.bridge))
        if sw.address and str(sw.address) not in bridge["addrs"]:
            out.append(step("ip", "addr", "add", str(sw.address), "dev", sw.bridge))
        if not bridge["up"]:
            out.append(step("ip", "link", "set", "dev", sw.bridge, "up"))
        return out

    def down_steps(self, sw, seen):
        if sw.manual:
            return []
        out = []
        for uplink, member in zip(sw.uplinks, sw.members()):
            if member != uplink and member in seen:
                out.append(step("ip", "link", "delete", "dev", member))
            elif member in seen and seen[member].get("master") == sw.bridge:
                out.append(step("ip", "link", "set", "dev", member, "nomaster"))
        if sw.bridge in seen:
            out.append(step("ip", "link", "delete", "dev", sw.bridge))
        return out

    def remove_member_steps(self, sw, uplink, seen):
        member = f"{uplink}.{sw.vlan}" if sw.vlan else uplink
        if member != uplink:
            return [step("ip", "link", "delete", "dev", member)] if member in seen else []
        if seen.get(member, {}).get("master") == sw.bridge:
            return [step("ip", "link", "set", "dev", member, "nomaster")]
        return []

    def attach_steps(self, sw, nic, seen, facts):
        bridge = seen.get(sw.bridge) or {"members": {}}
        out = []
        if nic.tap not in seen:
            out.append(step("ip", "tuntap", "add", "dev", nic.tap, "mode", "tap"))
        mtu = ["mtu", str(sw.mtu)] if sw.mtu else []
        out.append(step("ip", "link", "set", "dev", nic.tap, *mtu, "master", sw.bridge, "up"))
        if nic.vlan:
            if not bridge.get("vlanfilter"):
                out.append(step("ip", "link", "set", "dev", sw.bridge, "type", "bridge", "vlan_filtering", "1",
                                why=f"VLAN filtering on bridge {sw.bridge} (a kernel built without "
                                    f"CONFIG_BRIDGE_VLAN_FILTERING refuses it)"))
            member = bridge["members"].get(nic.tap, {})
            if member.get("untagged") != nic.vlan:
                out.append(step("bridge", "vlan", "add", "dev", nic.tap, "vid", nic.vlan, "pvid", "untagged"))
                out.append(step("bridge", "vlan", "del", "dev", nic.tap, "vid", "1"))
            for up in sw.members():
                if nic.vlan not in bridge["members"].get(up, {}).get("tagged", []):
                    out.append(step("bridge", "vlan", "add", "dev", up, "vid", nic.vlan))
        if sw.private:
            out.append(step("bridge", "link", "set", "dev", nic.tap, "isolated", "on"))
        return out

    def detach_steps(self, tap, seen):
        return [step("ip", "link", "delete", "dev", tap)] if tap in seen else []

    # ---------------------------------------------------------------- NAT: kvm's nftables table
    def chains(self, sw):
        return f"{sw.name}_nat", f"{sw.name}_fwd"

    def nat_rules(self, sw, out_if):
        """One `nft -f` transaction: sw's two chains in table ip kvm made (or kept) and refilled;
        the masquerade rule's comment holds the fingerprint of the text."""
        nat, fwd = self.chains(sw)
        net = sw.network
        body = (f"# kvm switch {sw.name}: loaded with nft -f - (one transaction)\n"
                f"table ip {TABLE} {{\n}}\n"
                f"add chain ip {TABLE} {nat} {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
                f"flush chain ip {TABLE} {nat}\n"
                f"add chain ip {TABLE} {fwd} {{ type filter hook forward priority filter; policy accept; }}\n"
                f"flush chain ip {TABLE} {fwd}\n"
                f"add rule ip {TABLE} {fwd} iifname \"{sw.bridge}\" ip saddr {net} accept\n"
                f"add rule ip {TABLE} {fwd} oifname \"{sw.bridge}\" ct state established,related accept\n")
        return body + (f"add rule ip {TABLE} {nat} ip saddr {net} ip daddr != {net} oifname \"{out_if}\" "
                       f"masquerade comment \"kvm:{sw.name}:{digest(body)}\"\n")

    def nat_loaded(self, sw, text):
        label = re.search(r'comment "([^"]+)"', text).group(1)
        res = host.run(["nft", "list", "chain", "ip", TABLE, self.chains(sw)[0]], mutating=False, check=False)
        if res.status == 127:
            raise KvmError(f"nft is missing: {self.package('nft')}")
        return res.status == 0 and f'comment "{label}"' in res.stdout

    def nat_steps(self, sw, text):
        return [step("nft", "-f", "-", input=text, why=f"switch {sw.name}'s NAT rules (nftables table ip {TABLE})")]

    def nat_remove_steps(self, sw):
        res = host.run(["nft", "list", "table", "ip", TABLE], mutating=False, check=False)
        names = [c for c in self.chains(sw) if re.search(rf"\bchain {c} ", res.stdout)]
        if not names:
            return []
        text = "".join(f"delete chain ip {TABLE} {c}\n" for c in names)
        return [step("nft", "-f", "-", input=text)]

    # ---------------------------------------------------------------- check
    def check(self, sw, seen, facts):
        out = []
        if sw.nat:
            if not facts["forwarding"]:
                out.append(("IP forwarding is off (net.ipv4.ip_forward=0): NAT forwards nothing",
                            "sysctl -w net.ipv4.ip_forward=1 && echo net.ipv4.ip_forward=1 > "
                            "/etc/sysctl.d/90-kvm.conf"))
        res = host.run(["nft", "list", "ruleset"], mutating=False, check=False)
        if res.status == 127:
            if sw.nat:
                out.append(("nft is missing", self.package("nft")))
            return out
        for table, chain in forward_drops(res.stdout):
            docker = " (Docker's)" if chain == "FORWARD" else ""
            out.append((f"chain {chain} of table {table}{docker} drops forwarded packets by default: the guests' "
                        f"traffic through {sw.bridge} is dropped there",
                        f"iptables -I {'DOCKER-USER' if docker else chain} -i {sw.bridge} -j ACCEPT && iptables -I "
                        f"{'DOCKER-USER' if docker else chain} -o {sw.bridge} -j ACCEPT (or nft insert rule "
                        f"{table} {chain} iifname {sw.bridge} accept)"))
        return out

    @staticmethod
    def package(tool):
        return f"apt-get install {PACKAGES.get(tool, tool)}"


def forward_drops(ruleset):
    """(table, chain) of every forward-hook chain with policy drop outside kvm's table."""
    out, table = [], None
    for line in ruleset.splitlines():
        m = re.match(r"^table (\S+) (\S+) \{", line)
        if m:
            table = f"{m.group(1)} {m.group(2)}"
            continue
        m = re.match(r"^\s*chain (\S+) \{", line)
        if m:
            chain = m.group(1)
            continue
        if "hook forward" in line and "policy drop" in line and table and table != f"ip {TABLE}":
            out.append((table, chain))
    return out


def _sysctl(path):
    try:
        return (PROC_SYS / path).read_text().strip()
    except OSError:
        return ""


NET = LinuxNet()
