"""The guest agent (Agent=yes): the qemu guest agent's protocol (JSON lines, qemu-guest-agent and
its Windows build speak it) on the VM's agent socket (runfiles.helper_file(run, AGENT)): qemu's
virtio-serial port or bhyve's virtio-console port named org.qemu.guest_agent.0.

Each use is one short session: connect, guest-sync with a random id (what was left unread in the
channel by an earlier session is skipped up to the answer with that id), then the command. Used by
stop (guest-shutdown, before ACPI) and vminfo (guest-get-osinfo, guest-network-get-interfaces).
"""

import json
import random
import socket
import time

from kvm.host.runfiles import AGENT, helper_file

SYNC_WAIT = 2.0     # seconds for the agent to answer guest-sync (an absent agent never does)


class AgentError(Exception):
    """No agent answered, or it refused the command."""


class Session:
    def __init__(self, path, timeout):
        self.deadline = time.monotonic() + timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buf = b""
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise AgentError(f"no agent socket {path}: {exc.strerror or exc}") from None

    def close(self):
        self.sock.close()

    def send(self, command, arguments=None):
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise AgentError(f"{command}: {exc.strerror or exc}") from None

    def reply(self):
        """The next JSON object the agent sent (a 0xff byte, guest-sync-delimited's, is skipped)."""
        while True:
            line, sep, rest = self.buf.partition(b"\n")
            if sep:
                self.buf = rest
                line = line.strip(b"\xff \r\t")
                if line:
                    try:
                        return json.loads(line)
                    except ValueError:
                        continue
                continue
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise AgentError("the guest agent did not answer")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                chunk = None
            if not chunk:
                raise AgentError("the guest agent did not answer")
            self.buf += chunk

    def sync(self):
        ident = random.randrange(1, 1 << 31)
        self.send("guest-sync", {"id": ident})
        while self.reply().get("return") != ident:
            pass

    def execute(self, command, arguments=None):
        self.send(command, arguments)
        answer = self.reply()
        if "error" in answer:
            raise AgentError(f"{command}: {answer['error'].get('desc') or answer['error']}")
        return answer.get("return")


def session(run, timeout=SYNC_WAIT):
    s = Session(helper_file(run, AGENT), timeout)
    try:
        s.sync()
    except AgentError:
        s.close()
        raise
    return s


def shutdown(run, timeout=SYNC_WAIT):
    """Ask the guest to power off (guest-shutdown, which answers nothing when it works); True
    when an agent took the request, False when none answered."""
    try:
        s = session(run, timeout)
    except AgentError:
        return False
    try:
        s.send("guest-shutdown", {"mode": "powerdown"})
        return True
    finally:
        s.close()


def facts(run, timeout=1.0):
    """{"os": pretty name, "addresses": [...]} from the agent, or None when none answers."""
    try:
        s = session(run, timeout)
    except AgentError:
        return None
    try:
        info = s.execute("guest-get-osinfo") or {}
        addresses = []
        try:
            for iface in s.execute("guest-network-get-interfaces") or []:
                if iface.get("name") == "lo":
                    continue
                addresses += [a.get("ip-address") for a in iface.get("ip-addresses") or [] if a.get("ip-address")]
        except AgentError:
            pass
        return {"os": info.get("pretty-name") or info.get("name"), "addresses": addresses}
    except AgentError:
        return None
    finally:
        s.close()
