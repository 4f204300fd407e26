#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the kvm project
# BSD-2-Clause (see the project's README)

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_info
short_description: Facts of a kvm install root - its VMs, one VM in full, its images
version_added: 1.0.0
description:
  - C(vmlist --json) for every VM; C(vminfo --json) for the VMs named (or all with C(details)); C(image list --json).
  - Reads only; no root needed on the host.
extends_documentation_fragment:
  - kvm.host.kvm
options:
  names:
    description: VMs to describe in full (C(vminfo)); a VM that does not exist is null.
    type: list
    elements: str
    default: []
  details:
    description: Describe every VM in full.
    type: bool
    default: false
  snapshots:
    description: Also list the snapshot sets of the VMs described in full.
    type: bool
    default: false
author:
  - kvm project (@kvm)
"""

EXAMPLES = r"""
- name: What runs here
  kvm.host.kvm_info:
  register: kvm

- name: The running ones
  ansible.builtin.debug:
    msg: "{{ kvm.vms | selectattr('state', 'equalto', 'running') | map(attribute='name') | list }}"

- name: One VM in full, with its snapshots
  kvm.host.kvm_info:
    names: [web1]
    snapshots: true
  register: web1
"""

RETURN = r"""
vms:
  description: Every VM of the root, as C(vmlist --json) gives it.
  returned: always
  type: list
  elements: dict
vm:
  description: VM name -> C(vminfo --json) (with C(snapshots) when asked), for the VMs described in full.
  returned: always
  type: dict
images:
  description: The root's images, as C(image list --json) gives them.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvm.host.plugins.module_utils.kvm_cli import COMMON_ARGS, Kvm, KvmFailed, fail


def main():
    module = AnsibleModule(
        argument_spec=dict(names=dict(type="list", elements="str", default=[]), details=dict(type="bool", default=False),
                           snapshots=dict(type="bool", default=False), **COMMON_ARGS),
        supports_check_mode=True)
    kvm = Kvm(module)
    try:
        vms = kvm.json("vmlist")[1]
        names = [v["name"] for v in vms] if module.params["details"] else module.params["names"]
        full = {}
        for name in names:
            full[name] = kvm.vminfo(name)
            if full[name] is not None and module.params["snapshots"]:
                full[name]["snapshots"] = kvm.json("snap", "list", name)[1]
        images = kvm.json("image", "list")[1]
    except KvmFailed as exc:
        fail(module, exc, changed=False)
    module.exit_json(changed=False, vms=vms, vm=full, images=images)


if __name__ == "__main__":
    main()
