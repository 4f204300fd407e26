# -*- coding: utf-8 -*-
# Copyright: the kvm project
# BSD-2-Clause (see the project's README)

from __future__ import annotations

DOCUMENTATION = r"""
name: kvm
short_description: Every VM of every kvm host, each a host of its own
version_added: 1.0.0
description:
  - Runs C(kvm vmlist --json) on each hypervisor host listed in C(hosts) (on the controller itself, or over ssh), and
    adds each VM as an inventory host.
  - Each VM gets the variables C(kvm_host) (its hypervisor host), C(kvm_root), C(kvm_state) and C(kvm_vm) (its
    C(vmlist --json) object), and is put in the groups C(kvm_STATE) (kvm_running, kvm_stopped...) and C(kvm_on_HOST).
  - C(kvm_addresses) is the list of the VM's addresses kvm knows (C(addresses) of C(vmlist --json)), each with
    C(address) and C(source) C(lease) (the DHCP lease kvm's dnsmasq gave the NIC's MAC on a kvm switch) or C(agent)
    (the guest agent's answer, asked with C(vminfo --json) for a running VM with C(Agent=yes) that has no lease).
  - C(ansible_host) is the first of them when there is one; C(compose) may set it otherwise (a naming rule, DNS).
  - Files named C(*.kvm.yml) or C(*.kvm.yaml).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [kvm.host.kvm]
    type: str
  hosts:
    description:
      - The hypervisor hosts. Each is a dict with C(name) (how groups and C(kvm_host) call it), and optionally C(ssh)
        (a C([user@]host) to run kvm on over ssh; none runs it on the controller), C(root) (the install root),
        C(kvm_bin) (default C(kvm)).
    type: list
    elements: dict
    required: true
  name_format:
    description: The inventory name of a VM; C({vm}) and C({host}) are replaced.
    type: str
    default: "{vm}"
  ssh_command:
    description: The ssh command for hosts with C(ssh).
    type: list
    elements: str
    default: [ssh, -o, BatchMode=yes]
"""

EXAMPLES = r"""
# fleet.kvm.yml
plugin: kvm.host.kvm
hosts:
  - name: host-a
    ssh: root@host-a.example.net
  - name: host-b
    ssh: root@host-b.example.net
    root: /tank/kvm
name_format: "{host}-{vm}"
compose:
  # where kvm knows no address (no lease, no agent): a naming rule
  ansible_host: kvm_addresses[0].address if kvm_addresses else kvm_vm.name + '.vm.example.net'
keyed_groups:
  - key: kvm_vm.loader
    prefix: loader
"""

import json
import re
import shlex
import subprocess

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

SCHEMA = 1


def _group(text):
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


class InventoryModule(BaseInventoryPlugin, Constructable):

    NAME = "kvm.host.kvm"

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith((".kvm.yml", ".kvm.yaml"))

    def vmlist(self, host):
        """vmlist --json of one hypervisor host."""
        return self._kvm(host, ["vmlist", "--json"])

    def vminfo(self, host, name):
        """vminfo NAME --json of one VM of a hypervisor host (its guest agent's answer)."""
        return self._kvm(host, ["vminfo", name, "--json"])

    def _kvm(self, host, args):
        """A kvm command's JSON on a hypervisor host, its contract's version checked."""
        argv = shlex.split(host.get("kvm_bin") or "kvm")
        argv += (["--root", host["root"]] if host.get("root") else []) + args
        if host.get("ssh"):
            argv = list(self.get_option("ssh_command")) + [host["ssh"], " ".join(shlex.quote(a) for a in argv)]
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            why = res.stderr.strip()
            raise AnsibleParserError("kvm inventory: %s: %s failed: %s" % (host["name"], " ".join(argv), why))
        value = json.loads(res.stdout)
        for row in value if isinstance(value, list) else [value]:
            if row.get("schema") != SCHEMA:
                raise AnsibleParserError("kvm inventory: %s: %s --json speaks schema %r, this plugin %d"
                                         % (host["name"], args[0], row.get("schema"), SCHEMA))
        return value

    def addresses(self, host, row):
        """The VM's addresses: vmlist's (the leases), else for a running VM with a guest agent vminfo's."""
        found = row.get("addresses") or []
        if not found and row.get("agent") and row["state"] == "running":
            found = self.vminfo(host, row["name"]).get("addresses") or []
        return found

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        strict = self.get_option("strict")
        for host in self.get_option("hosts"):
            if "name" not in host:
                raise AnsibleParserError("kvm inventory: every item of hosts needs a name")
            on = self.inventory.add_group(_group("kvm_on_" + host["name"]))
            for row in self.vmlist(host):
                name = self.get_option("name_format").format(vm=row["name"], host=host["name"])
                self.inventory.add_host(name, group=on)
                self.inventory.add_host(name, group=self.inventory.add_group(_group("kvm_" + row["state"])))
                found = self.addresses(host, row)
                facts = {"kvm_host": host["name"], "kvm_root": host.get("root"), "kvm_state": row["state"],
                         "kvm_vm": row, "kvm_addresses": found}
                if found:
                    facts["ansible_host"] = found[0]["address"]
                for key, value in facts.items():
                    self.inventory.set_variable(name, key, value)
                self._set_composite_vars(self.get_option("compose"), facts, name, strict=strict)
                self._add_host_to_composed_groups(self.get_option("groups"), facts, name, strict=strict)
                self._add_host_to_keyed_groups(self.get_option("keyed_groups"), facts, name, strict=strict)
