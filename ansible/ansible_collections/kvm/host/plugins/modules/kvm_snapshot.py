#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the kvm project
# BSD-2-Clause (see the project's README)

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_snapshot
short_description: Snapshot sets of a kvm VM (taken, pruned, destroyed, rolled back)
version_added: 1.0.0
description:
  - A snapshot set covers every dataset of the VM, taken at once (C(snap create)).
  - C(present) takes it unless it exists; with C(keep), the oldest sets beyond the newest C(keep) are destroyed
    (C(snap prune)).
  - C(absent) destroys it if it exists.
  - C(rolled_back) rolls the VM back to it (C(snap rollback)); the VM must be stopped. A rollback always reports a
    change (kvm cannot tell whether the VM was written since the snapshot).
  - Check mode runs the commands' dry run (C(-n)).
extends_documentation_fragment:
  - kvm.host.kvm
options:
  vm:
    description: The VM's name.
    type: str
    required: true
  name:
    description: The snapshot's name; required unless C(state=present) with C(keep) only.
    type: str
  state:
    description: What to make of the snapshot.
    type: str
    choices: [present, absent, rolled_back]
    default: present
  keep:
    description: With C(state=present), keep only the newest N snapshot sets of the VM (C(snap prune --keep N)).
    type: int
  destroy_newer:
    description: With C(state=rolled_back), allow a snapshot older than the latest, destroying the newer ones (C(-r)).
    type: bool
    default: false
author:
  - kvm project (@kvm)
"""

EXAMPLES = r"""
- name: A snapshot before the upgrade, keeping five
  kvm.host.kvm_snapshot:
    vm: web1
    name: before-upgrade
    keep: 5

- name: Back to it
  kvm.host.kvm_snapshot:
    vm: web1
    name: before-upgrade
    state: rolled_back
    destroy_newer: true
"""

RETURN = r"""
snapshots:
  description: The VM's snapshot sets after the task, as C(snap list --json) gives them.
  returned: always
  type: list
  elements: dict
snapshot:
  description: The set made, as C(snap create --json) gives it.
  returned: when a snapshot was made
  type: dict
pruned:
  description: The names of the sets destroyed by C(keep).
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


def run(module, kvm, result):
    p = module.params
    vm, name, state = p["vm"], p["name"], p["state"]
    rc, listed = kvm.json("snap", "list", vm, ok=(NOT_FOUND,) if module.check_mode else ())
    if listed is None:
        # check mode, no such VM: an earlier task of the play (kvm_vm) would create it
        module.warn("VM %s does not exist (yet): in check mode, its snapshot %s would be made" % (vm, name))
        result["changed"] = state == "present" and bool(name)
        return
    have = [s["name"] for s in listed]
    if state == "present":
        if name and name not in have:
            result["snapshot"] = kvm.json("snap", "create", vm, name, *dry(module))[1]
            result["changed"] = True
            have.append(name)
        if p["keep"] is not None and len(have) > p["keep"]:
            result["pruned"] = kvm.json("snap", "prune", vm, "--keep", p["keep"], "-y", *dry(module))[1]["destroyed"]
            result["changed"] = True
    elif state == "absent":
        if name in have:
            kvm.json("snap", "destroy", vm, name, *dry(module))
            result["changed"] = True
    else:
        kvm.json("snap", "rollback", vm, name, "-y", *((["-r"] if p["destroy_newer"] else []) + dry(module)))
        result["changed"] = True
    result["snapshots"] = kvm.json("snap", "list", vm)[1]
    return rc


def main():
    module = AnsibleModule(
        argument_spec=dict(vm=dict(type="str", required=True), name=dict(type="str"),
                           state=dict(type="str", default="present", choices=["present", "absent", "rolled_back"]),
                           keep=dict(type="int"), destroy_newer=dict(type="bool", default=False), **COMMON_ARGS),
        required_if=[("state", "absent", ["name"]), ("state", "rolled_back", ["name"])],
        required_one_of=[("name", "keep")],
        supports_check_mode=True)
    kvm = Kvm(module)
    result = dict(changed=False, pruned=[], commands=kvm.commands)
    try:
        run(module, kvm, result)
    except KvmFailed as exc:
        fail(module, exc, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
