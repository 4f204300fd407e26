#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the kvm project
# BSD-2-Clause (see the project's README)

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_image
short_description: Images of a kvm install root (imported from a file, published from a VM, destroyed)
version_added: 1.0.0
description:
  - Images are what C(kvm_vm)'s C(from_image) clones in an instant.
  - C(imported) imports C(path) (raw as is; qcow2, vmdk... converted by qemu-img) unless an image of that name exists.
  - C(published) publishes a VM's snapshot (C(image publish)) unless an image of that name exists.
  - C(absent) destroys it (refused while VMs are cloned from it).
  - An existing image is never replaced; its content is not compared with C(path).
  - Check mode runs the commands' dry run (C(-n)).
extends_documentation_fragment:
  - kvm.host.kvm
options:
  name:
    description: The image's name.
    type: str
    required: true
  state:
    description: What to make of the image.
    type: str
    choices: [imported, published, absent]
    default: imported
  path:
    description: The file to import (C(state=imported)), on the managed host.
    type: path
  os:
    description: A hint of the image's OS, shown by C(image list).
    type: str
    default: ''
  vm:
    description: The VM to publish (C(state=published)).
    type: str
  snapshot:
    description: The VM's snapshot to publish (default a new one).
    type: str
author:
  - kvm project (@kvm)
"""

EXAMPLES = r"""
- name: Debian's cloud image
  kvm.host.kvm_image:
    name: debian12
    path: /var/tmp/debian-12-generic-amd64.qcow2
    os: debian12

- name: A golden VM as an image
  kvm.host.kvm_image:
    name: web-golden
    state: published
    vm: web1
"""

RETURN = r"""
image:
  description: The image after the task, as C(image list --json) gives it (null when absent).
  returned: always
  type: dict
commands:
  description: The kvm command lines run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvm.host.plugins.module_utils.kvm_cli import COMMON_ARGS, Kvm, KvmFailed, dry, fail


def find(kvm, name):
    return next((i for i in kvm.json("image", "list")[1] if i["name"] == name), None)


def run(module, kvm, result):
    p = module.params
    have = find(kvm, p["name"])
    if p["state"] == "absent":
        if have:
            kvm.json("image", "destroy", p["name"], *dry(module))
            result["changed"] = True
        result["image"] = None if not module.check_mode else have
        return
    if have:
        result["image"] = have
        return
    if p["state"] == "imported":
        made = kvm.json("image", "import", p["name"], p["path"], "--os", p["os"], *dry(module))[1]
    else:
        extra = ["--snapshot", p["snapshot"]] if p["snapshot"] else []
        made = kvm.json("image", "publish", p["vm"], p["name"], *(extra + dry(module)))[1]
    result["changed"] = True
    result["image"] = made


def main():
    module = AnsibleModule(
        argument_spec=dict(name=dict(type="str", required=True),
                           state=dict(type="str", default="imported", choices=["imported", "published", "absent"]),
                           path=dict(type="path"), os=dict(type="str", default=""), vm=dict(type="str"),
                           snapshot=dict(type="str"), **COMMON_ARGS),
        required_if=[("state", "imported", ["path"]), ("state", "published", ["vm"])],
        supports_check_mode=True)
    kvm = Kvm(module)
    result = dict(changed=False, image=None, commands=kvm.commands)
    try:
        run(module, kvm, result)
    except KvmFailed as exc:
        fail(module, exc, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
