#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the kvm project
# BSD-2-Clause (see the project's README)

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_switch
short_description: A switch of a kvm install root (created, set, brought up or down, destroyed)
version_added: 1.0.0
description:
  - A switch is a bridge kvm makes and keeps for VMs' NICs (ROOT/switches/NAME.conf), with uplinks, a VLAN, an
    address, NAT behind the host and kvm's own DHCP server (kvm(8) SWITCHES).
  - C(present) creates it (C(switch create), which brings it up) unless it exists; else changes, with
    C(switch set), only the settings given that differ from C(switch info --json), so a second run changes nothing.
    An option left out (null) is left as it is.
  - C(up) and C(down) also bring it up or down (C(switch up), C(switch down)) unless it is already.
  - C(absent) destroys it if it exists (C(switch destroy)); a switch VMs' NICs use is refused by kvm, and the task
    fails with kvm's message.
  - Check mode runs the commands' own dry run (C(-n)); diff mode shows the switch's settings before and after.
extends_documentation_fragment:
  - kvm.host.kvm
options:
  name:
    description: The switch's name (1-15 lower-case letters, digits and C(_), starting with a letter).
    type: str
    required: true
  state:
    description: What to make of the switch.
    type: str
    choices: [present, absent, up, down]
    default: present
  uplinks:
    description: Host interfaces made members (C(--uplink), C(Uplinks)); an empty list removes them all.
    type: list
    elements: str
  vlan:
    description: The uplinks carry the switch tagged with this VLAN (1-4094, C(Vlan)); 0 removes it.
    type: int
  mtu:
    description: The MTU of the bridge and its members (C(Mtu)); 0 removes it.
    type: int
  address:
    description: The bridge's address, the guests' gateway, as CIDR (C(10.0.5.1/24), C(Address)); '' removes it.
    type: str
  nat:
    description: NAT of the address's subnet behind the host (C(--nat), C(Nat)).
    type: bool
  nat_out:
    description: The interface NAT leaves by (C(--out), C(NatOut); default the default route's); '' removes it.
    type: str
  dhcp:
    description: kvm's dnsmasq hands out these addresses, C(FIRST-LAST) (C(--dhcp), C(Dhcp)); '' removes it.
    type: str
  private:
    description: The VMs' NICs cannot reach each other (C(--private), C(Private)).
    type: bool
  manual:
    description:
      - Put NICs on this existing bridge of the admin's (C(--manual), C(Manual)); no other setting goes with it.
      - It cannot change once the switch exists (destroy it and create it again).
    type: str
author:
  - kvm project (@kvm)
"""

EXAMPLES = r"""
- name: A NATed switch for the VMs, kvm's DHCP on it
  kvm.host.kvm_switch:
    name: lan
    address: 10.0.5.1/24
    nat: true
    dhcp: 10.0.5.100-10.0.5.200

- name: The uplink em0 carrying VLAN 10
  kvm.host.kvm_switch:
    name: dmz
    uplinks: [em0]
    vlan: 10
    mtu: 9000

- name: Down for a while, kept
  kvm.host.kvm_switch:
    name: dmz
    state: down

- name: Gone (refused while VMs' NICs are on it)
  kvm.host.kvm_switch:
    name: dmz
    state: absent
"""

RETURN = r"""
switch:
  description:
    - The switch after the task, as C(switch info --json) gives it (null when absent).
    - In check mode, the switch as it would be made (C(switch create -n --json)), or as it is.
  returned: always
  type: dict
changes:
  description: The settings changed, as C(switch set) took them (C(KEY=VALUE); C(KEY=) removes one).
  returned: always
  type: list
  elements: str
commands:
  description: The kvm command lines run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvm.host.plugins.module_utils.kvm_cli import COMMON_ARGS, NOT_FOUND, Kvm, KvmFailed, dry, fail

# option: (the NAME.conf key, the create flag)
OPTIONS = (("uplinks", "Uplinks", "--uplink"), ("vlan", "Vlan", "--vlan"), ("mtu", "Mtu", "--mtu"),
           ("address", "Address", "--address"), ("nat", "Nat", "--nat"), ("nat_out", "NatOut", "--out"),
           ("dhcp", "Dhcp", "--dhcp"), ("private", "Private", "--private"), ("manual", "Manual", "--manual"))


def conf_value(option, value):
    """The NAME.conf text of an option's value ('' for none)."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if option == "uplinks":
        return " ".join(value)
    if option in ("vlan", "mtu"):
        return str(value) if value else ""
    return str(value)


def settings(info):
    """{KEY: text} of a switch as switch info --json gives it (the keys of NAME.conf)."""
    if info is None:
        return {}
    got = dict(info)
    got["manual"] = info["bridge"] if info.get("manual") else None
    return dict((key, conf_value(option, got.get(option))) for option, key, dummy in OPTIONS)


def create_args(p):
    args = []
    for option, dummy, flag in OPTIONS:
        value = p[option]
        if option == "uplinks":
            for u in value or []:
                args += [flag, u]
        elif value is True:
            args.append(flag)
        elif value not in (None, False, "", 0):
            args += [flag, value]
    return args


def run(module, kvm, result):
    p = module.params
    name, state = p["name"], p["state"]
    info = kvm.json("switch", "info", name, ok=(NOT_FOUND,))[1]
    result["before"] = settings(info)
    if state == "absent":
        if info is not None:
            kvm.run("switch", "destroy", name, *dry(module))
            result["changed"] = True
        result["switch"] = info if module.check_mode else None   # check mode: as it is, not destroyed
        return
    if info is None:
        info = kvm.json("switch", "create", name, *(create_args(p) + dry(module)))[1]
        result["changed"] = True
        created = True
    else:
        created = False
        have = settings(info)
        for option, key, dummy in OPTIONS:
            if p[option] is None:
                continue
            want = conf_value(option, p[option])
            if want != have[key]:
                result["changes"].append("%s=%s" % (key, want))
        if result["changes"]:
            kvm.run("switch", "set", name, *(result["changes"] + dry(module)))
            result["changed"] = True
            if not module.check_mode:
                info = kvm.json("switch", "info", name)[1]
    # check mode: the settings as switch set would make them (info is still the switch as it is)
    result["after"] = dict(settings(info), **dict(c.split("=", 1) for c in result["changes"]))
    if state in ("up", "down") and not (created and module.check_mode):   # (made in check mode: nothing to bring)
        if info["state"] != state:
            kvm.run("switch", state, name, *dry(module))
            result["changed"] = True
            if not module.check_mode:
                info = kvm.json("switch", "info", name)[1]
    result["switch"] = info


def diff(result, name):
    def text(values):
        return "".join('%s="%s"\n' % (k, v) for k, v in sorted(values.items()) if v)
    header = "switches/%s.conf" % name
    return {"before": text(result["before"]), "after": text(result["after"]), "before_header": header,
            "after_header": header}


def main():
    module = AnsibleModule(
        argument_spec=dict(name=dict(type="str", required=True),
                           state=dict(type="str", default="present", choices=["present", "absent", "up", "down"]),
                           uplinks=dict(type="list", elements="str"), vlan=dict(type="int"), mtu=dict(type="int"),
                           address=dict(type="str"), nat=dict(type="bool"), nat_out=dict(type="str"),
                           dhcp=dict(type="str"), private=dict(type="bool"), manual=dict(type="str"),
                           **COMMON_ARGS),
        supports_check_mode=True)
    kvm = Kvm(module)
    result = dict(changed=False, switch=None, changes=[], commands=kvm.commands, before={}, after={})
    try:
        run(module, kvm, result)
    except KvmFailed as exc:
        result.pop("before")
        result.pop("after")
        fail(module, exc, **result)
    before, after = result.pop("before"), result.pop("after")
    if module._diff:
        result["diff"] = diff(dict(before=before, after=after), module.params["name"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
