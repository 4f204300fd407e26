"""What both platforms' switch code shares: a step (one command, with its input), kvm's dnsmasq
configuration (the same program on both), and the words of the checks.

A platform's switch code (freebsd_net.py, linux_net.py) turns a SwitchConfig and what it saw of
the host (`seen`: interface name -> facts) into steps: plain data, so that tests compare them
with golden argvs, a dry run prints them, and `switch up` run again after a kill makes only the
steps still missing.
"""

import hashlib

from kvm.host.record import record

DNSMASQ_LEASE_TIME = "12h"


@record(frozen=True)
class Step:
    """One command kvm runs to make the host match a switch: argv, and the text fed on its stdin."""

    argv: tuple
    input: str = None
    why: str = ""

    def shown(self):
        import shlex
        line = shlex.join(self.argv)
        return f"{line} <<'EOF'\n{self.input}EOF" if self.input is not None else line


def step(*argv, input=None, why=""):
    return Step(tuple(str(a) for a in argv), input, why)


def digest(text):
    """A short fingerprint of rule text: stored in the rules, so that an `up` can tell they are current."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def dnsmasq_conf(sw, files):
    """kvm's own dnsmasq for a switch: bound to its bridge only, its pid and leases under the run dir
    (`files`: {"pid", "leases"} paths); never the system's dnsmasq.conf (--conf-file names this one,
    and no other is read)."""
    first, last = sw.dhcp
    return "".join(f"{line}\n" for line in (
        f"# kvm switch {sw.name}: written by kvm at each `switch up` (never edit: `kvm switch set`)",
        f"interface={sw.bridge}",
        "bind-dynamic",
        "except-interface=lo",
        "no-hosts",
        f"dhcp-range={first},{last},{sw.network.netmask},{DNSMASQ_LEASE_TIME}",
        f"dhcp-option=option:router,{sw.address.ip}",
        f"dhcp-option=option:dns-server,{sw.address.ip}",
        "dhcp-authoritative",
        f"dhcp-leasefile={files['leases']}",
        f"pid-file={files['pid']}",
    ))


def dnsmasq_argv(conf_path):
    """The command that starts kvm's dnsmasq for a switch (it forks into the background and writes
    its pid file; --conf-file alone: /etc/dnsmasq.conf is not read)."""
    return ("dnsmasq", f"--conf-file={conf_path}")


def read_leases(text):
    """[{expires, mac, ip, hostname}] from a dnsmasq lease file."""
    out = []
    for line in (text or "").splitlines():
        f = line.split()
        if len(f) >= 4 and f[0].isdigit():
            out.append({"expires": int(f[0]), "mac": f[1], "ip": f[2], "hostname": "" if f[3] == "*" else f[3]})
    return out
