"""FreeBSD's switches: if_bridge(4) through ifconfig(8), vlan(4) members, pf(4) anchors through pfctl(8).

Facts this follows (sbin/ifconfig/ifbridge.c, sys/net/if_bridge.c, bridge(4) of FreeBSD 15):
- `ifconfig bridge create name NAME` makes a bridge called NAME (as the shell kvm's CreateIF);
- FreeBSD 15 refuses a member that carries an IP address while net.link.bridge.member_ifaddrs is 0
  (its default; the sysctl is absent on 14, which allows it): BRDGADD fails with EINVAL;
- FreeBSD 15 bridges filter VLANs when the bridge flag `vlanfilter` is set: `addm IF untagged N`
  makes IF an access port of VLAN N, `+iftagged IF N` lets IF carry N tagged (a trunk); 14 has
  neither (vm-bhyve's way there, which kvm keeps for a switch's Vlan: the member is IF.N, a vlan(4)
  interface on the uplink);
- a bridge turns its members' offloads off when one lacks them, re-initialising the NIC (the
  link flap of vm-bhyve #105): kvm turns them off (-txcsum -rxcsum -tso -lro) before adding a member;
- pf anchors: `pfctl -a kvm/NAME -f -` replaces the anchor's rules at once, `-Fa` flushes them; the
  main ruleset evaluates them through `nat-anchor "kvm/*"` and `anchor "kvm/*"` (as authpf's do).
"""

import re

from kvm import host
from kvm.errors import KvmError
from kvm.platform.netbase import digest, step

OFFLOADS = ("-txcsum", "-rxcsum", "-tso", "-lro")
VLANFILTER_OSRELDATE = 1500000        # FreeBSD 15.0: vlanfilter, untagged/tagged members, member_ifaddrs
PF_CONF_LINES = ('nat-anchor "kvm/*"', 'anchor "kvm/*"')
PACKAGES = {"dnsmasq": "dnsmasq"}
SYSCTLS = ("kern.osreldate", "net.link.bridge.member_ifaddrs", "net.inet.ip.forwarding")


def parse_ifconfig(text):
    """{name: {exists, up, mtu, addrs, kind, members, vlanfilter}} from `ifconfig -a` (or one
    interface's `ifconfig NAME`); members: {name: {untagged, tagged, private}}."""
    seen, cur, member = {}, None, None
    for line in text.splitlines():
        m = re.match(r"^([^\s:]+): flags=[0-9a-f]+<([^>]*)>.*?\bmtu (\d+)", line)
        if m:
            cur = {"exists": True, "up": "UP" in m.group(2).split(","), "mtu": int(m.group(3)), "addrs": [],
                   "kind": "", "members": {}, "vlanfilter": False}
            seen[m.group(1)] = cur
            member = None
            continue
        if cur is None:
            continue
        words = line.split()
        if not words:
            continue
        if words[0] == "inet" and len(words) >= 4 and words[2] == "netmask":
            mask = int(words[3], 16)
            cur["addrs"].append(f"{words[1]}/{bin(mask).count('1')}")
        elif words[0] == "member:" and len(words) >= 2:
            member = {"untagged": 0, "tagged": [], "private": "PRIVATE" in line}
            cur["members"][words[1]] = member
        elif words[0] == "port" and member is not None:
            if "untagged" in words:
                member["untagged"] = int(words[words.index("untagged") + 1])
            if "tagged" in words:
                member["tagged"] = vlan_list(words[words.index("tagged") + 1])
        elif words[0] == "bridge" and len(words) >= 2 and words[1].startswith("flags="):
            cur["vlanfilter"] = "VLANFILTER" in words[1]
        elif words[0] == "groups:":
            cur["kind"] = "bridge" if "bridge" in words[1:] else (words[1] if len(words) > 1 else "")
    return seen


def vlan_list(text):
    out = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out += list(range(int(first), int(last or first) + 1))
    return out


class FreeBsdNet:
    """The FreeBSD side of `kvm switch`: what to run, from what was seen."""

    name = "freebsd"
    nat_tool = "pfctl"

    # ---------------------------------------------------------------- reading the host
    def observe(self, vlans=False):
        """Every interface, from one `ifconfig -a` (which shows the members' VLANs too)."""
        res = host.run(["ifconfig", "-a"], mutating=False, check=False)
        return parse_ifconfig(res.stdout)

    def facts(self):
        """{vlanfilter: bool, member_ifaddrs: None|0|1, forwarding: bool} from sysctl (one call)."""
        res = host.run(["sysctl", "-i", *SYSCTLS], mutating=False, check=False)
        values = dict(line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line)
        osrel = int(values.get("kern.osreldate", "0") or 0)
        ifaddrs = values.get("net.link.bridge.member_ifaddrs")
        return {"vlanfilter": osrel >= VLANFILTER_OSRELDATE,
                "member_ifaddrs": int(ifaddrs) if ifaddrs not in (None, "") else None,
                "forwarding": values.get("net.inet.ip.forwarding", "0").strip() == "1"}

    def default_route_interface(self):
        res = host.run(["route", "-n", "get", "default"], mutating=False, check=False)
        m = re.search(r"^\s*interface:\s*(\S+)", res.stdout, re.M)
        return m.group(1) if m else ""

    # ---------------------------------------------------------------- refusing before acting
    def uplink_problem(self, sw, uplink, seen, facts):
        """Why `uplink` cannot be a member of sw's bridge, with the fix; None when it can."""
        info = seen.get(uplink)
        if not info:
            return f"uplink {uplink} does not exist (ifconfig -l lists the interfaces)"
        if info.get("kind") == "bridge":
            return f"uplink {uplink} is a bridge: a bridge cannot be a member of another"
        if info["addrs"] and not sw.vlan and facts["member_ifaddrs"] == 0:
            addr = info["addrs"][0]
            return (f"uplink {uplink} carries the host's address {addr}, and this FreeBSD refuses a bridge member "
                    f"with an address (net.link.bridge.member_ifaddrs=0, FreeBSD 15's default); kvm never strips "
                    f"an address from a live interface: put it on a bridge in /etc/rc.conf: "
                    f"cloned_interfaces=\"bridge0\" ifconfig_bridge0=\"inet {addr} addm {uplink} up\" "
                    f"ifconfig_{uplink}=\"up\" (then reboot or service netif restart from the console), and "
                    f"make the switch use it: kvm switch create {sw.name} --manual bridge0")
        return None

    def nic_vlan_problem(self, facts):
        if not facts["vlanfilter"]:
            return ("this FreeBSD's bridges do not filter VLANs (14 or older; 15 has vlanfilter): make a switch whose "
                    "uplink carries the VLAN (kvm switch create NAME --uplink IF --vlan N) and put the NIC on it "
                    "without --vlan")
        return None

    # ---------------------------------------------------------------- the steps
    def up_steps(self, sw, seen, facts):
        """What makes sw's bridge, members and address as configured (not NAT or DHCP)."""
        out = []
        if sw.manual:
            if sw.bridge not in seen:
                raise KvmError(f"bridge {sw.bridge} (Manual) does not exist: it is the admin's to make "
                               f"(rc.conf cloned_interfaces)")
            return out
        bridge = seen.get(sw.bridge)
        if not bridge:
            out.append(step("ifconfig", "bridge", "create", "name", sw.bridge, why=f"switch {sw.name}'s bridge"))
            bridge = {"mtu": 1500, "members": {}, "addrs": [], "up": False, "vlanfilter": False}
        if sw.mtu and bridge["mtu"] != sw.mtu:
            out.append(step("ifconfig", sw.bridge, "mtu", sw.mtu))
        for uplink, member in zip(sw.uplinks, sw.members()):
            if member not in seen:
                if member != uplink:
                    out.append(step("ifconfig", member, "create", "vlan", sw.vlan, "vlandev", uplink,
                                    why=f"the uplink {uplink} carrying VLAN {sw.vlan}"))
            if member not in bridge["members"]:
                opts = ["mtu", str(sw.mtu)] if sw.mtu and seen.get(member, {}).get("mtu") != sw.mtu else []
                out.append(step("ifconfig", member, *opts, *OFFLOADS, "up",
                                why=f"member {member} (offloads off, then up)"))
                out.append(step("ifconfig", sw.bridge, "addm", member))
            elif not seen.get(member, {}).get("up"):
                out.append(step("ifconfig", member, "up"))
        for addr in bridge["addrs"]:  # the bridge is kvm's: an address the switch no longer has goes
            if addr != str(sw.address or ""):
                out.append(step("ifconfig", sw.bridge, "inet", addr, "-alias"))
        if sw.address and str(sw.address) not in bridge["addrs"]:
            out.append(step("ifconfig", sw.bridge, "inet", str(sw.address)))
        if not bridge["up"]:
            out.append(step("ifconfig", sw.bridge, "up"))
        return out

    def down_steps(self, sw, seen):
        """What removes sw's bridge and the vlan members kvm made (a Manual bridge is left)."""
        if sw.manual:
            return []
        out = []
        for uplink, member in zip(sw.uplinks, sw.members()):
            if member != uplink and member in seen:
                out.append(step("ifconfig", member, "destroy"))
        if sw.bridge in seen:
            out.append(step("ifconfig", sw.bridge, "destroy"))
        return out

    def remove_member_steps(self, sw, uplink, seen):
        """Take uplink (or the IF.N kvm made on it) off sw's bridge."""
        member = f"{uplink}.{sw.vlan}" if sw.vlan else uplink
        out = []
        if member in seen.get(sw.bridge, {}).get("members", {}):
            out.append(step("ifconfig", sw.bridge, "deletem", member))
        if member != uplink and member in seen:
            out.append(step("ifconfig", member, "destroy"))
        return out

    def attach_steps(self, sw, nic, seen, facts):
        """Create the VM's tap (when missing), offloads off, the switch's MTU, up, and put it on the
        bridge (with its VLAN: an access port, the uplinks trunks of it)."""
        bridge = seen.get(sw.bridge) or {"members": {}, "vlanfilter": False}
        out = []
        if nic.tap not in seen:
            out.append(step("ifconfig", "tap", "create", "name", nic.tap))
        mtu = ["mtu", str(sw.mtu)] if sw.mtu else []
        out.append(step("ifconfig", nic.tap, *mtu, *OFFLOADS, "up"))
        if nic.tap in bridge["members"]:
            return out
        if nic.vlan:
            why = self.nic_vlan_problem(facts)
            if why:
                raise KvmError(why)
            if not bridge["vlanfilter"]:
                out.append(step("ifconfig", sw.bridge, "vlanfilter"))
            out.append(step("ifconfig", sw.bridge, "addm", nic.tap, "untagged", nic.vlan))
            for member in sw.members():
                if nic.vlan not in bridge["members"].get(member, {}).get("tagged", []):
                    out.append(step("ifconfig", sw.bridge, "+iftagged", member, nic.vlan))
        else:
            out.append(step("ifconfig", sw.bridge, "addm", nic.tap))
        if sw.private:
            out.append(step("ifconfig", sw.bridge, "private", nic.tap))
        return out

    def detach_steps(self, tap, seen):
        return [step("ifconfig", tap, "destroy")] if tap in seen else []

    # ---------------------------------------------------------------- NAT: a pf anchor
    def anchor(self, sw):
        return f"kvm/{sw.name}"

    def nat_rules(self, sw, out_if):
        """The pf rules of sw's anchor: NAT of its subnet out of out_if, and its guests let in; the
        last rule's label holds the fingerprint of the text (an `up` reads it back to tell whether
        the loaded rules are current)."""
        net = sw.network
        body = (f"# kvm switch {sw.name}: loaded with pfctl -a {self.anchor(sw)} -f - (never pf.conf)\n"
                f"nat on {out_if} inet from {net} to ! {net} -> ({out_if})\n"
                f"pass in quick on {sw.bridge} inet from {net} to any keep state\n")
        return body + f"pass out quick on {sw.bridge} inet to {net} keep state label \"{self.label(sw, body)}\"\n"

    def label(self, sw, body):
        return f"kvm:{sw.name}:{digest(body)}"

    def nat_loaded(self, sw, text):
        """The anchor holds exactly `text`'s rules (its label is there): no reload needed."""
        label = re.search(r'label "([^"]+)"', text).group(1)
        res = host.run(["pfctl", "-a", self.anchor(sw), "-sr"], mutating=False, check=False)
        return res.status == 0 and f'label "{label}"' in res.stdout

    def nat_steps(self, sw, text):
        return [step("pfctl", "-a", self.anchor(sw), "-f", "-", input=text,
                     why=f"switch {sw.name}'s NAT rules (pf anchor {self.anchor(sw)})")]

    def nat_remove_steps(self, sw):
        """Flush sw's anchor when it holds rules (read first: a switch without NAT has none)."""
        held = any(host.run(["pfctl", "-a", self.anchor(sw), flag], mutating=False, check=False).stdout.strip()
                   for flag in ("-sn", "-sr"))
        return [step("pfctl", "-a", self.anchor(sw), "-Fa")] if held else []

    # ---------------------------------------------------------------- check
    def check(self, sw, seen, facts):
        """[(problem, fix)] of what on this host defeats sw."""
        out = []
        if sw.nat:
            if not facts["forwarding"]:
                out.append(("IP forwarding is off (net.inet.ip.forwarding=0): NAT forwards nothing",
                            "sysctl net.inet.ip.forwarding=1 && sysrc gateway_enable=YES"))
            info = host.run(["pfctl", "-si"], mutating=False, check=False)
            if info.status == 127:
                out.append(("pfctl is missing", "pfctl is in FreeBSD's base system: reinstall the base"))
            elif info.status != 0 or "Status: Enabled" not in info.stdout:
                out.append(("pf is not enabled: kvm's NAT rules are not applied",
                            "sysrc pf_enable=YES && service pf start (or kldload pf && pfctl -e)"))
            nat = host.run(["pfctl", "-sn"], mutating=False, check=False).stdout
            rules = host.run(["pfctl", "-sr"], mutating=False, check=False).stdout
            missing = [line for line, text in zip(PF_CONF_LINES, (nat, rules)) if line not in text]
            if missing:
                out.append(("pf's main ruleset does not evaluate kvm's anchors (kvm never edits pf.conf)",
                            "add to /etc/pf.conf, before your own rules: " + "; ".join(PF_CONF_LINES) +
                            "; then pfctl -f /etc/pf.conf"))
        return out

    @staticmethod
    def package(tool):
        return f"pkg install {PACKAGES.get(tool, tool)}"


NET = FreeBsdNet()
