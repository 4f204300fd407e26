#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the kvm project
# BSD-2-Clause (see the project's README)

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_send
short_description: Copy or migrate a kvm VM to another host (or another install root of this host)
version_added: 1.0.0
description:
  - Runs C(vmsend) on the source host, which sends the VM's dataset with zfs send/receive over ssh to C(dest), or to
    the install root C(local_root) of the same host.
  - Runs C(vmsend --json) and reports its C(changed) (kvm(8) JSON OUTPUT).
  - C(migrate) (the default) sends while the VM runs, stops it, sends the rest, starts it on the destination and
    marks it migrated here; a VM already migrated to this destination is no change (vmsend says C(changed=false)),
    one migrated elsewhere is refused (exit 8). With C(local_root), a VM gone from here and present there is no
    change either.
  - C(cold) stops it first and sends once; C(copy) replicates only (the VM keeps running here). Each copy sends what
    changed since the last one, so it always reports a change.
  - Check mode runs C(vmsend -n --json).
extends_documentation_fragment:
  - kvm.host.kvm
options:
  name:
    description: The VM's name.
    type: str
    required: true
  dest:
    description: The destination C([user@]host[:ROOT]), reached with ssh; kvm must be installed there.
    type: str
  local_root:
    description: Instead of C(dest), a kvm install root on this same host.
    type: path
  mode:
    description: How to send.
    type: str
    choices: [migrate, cold, copy]
    default: migrate
  start:
    description: Start the VM on the destination (C(--no-start) when false).
    type: bool
    default: true
  keep:
    description: Leave the source startable (no kvm:migrated mark).
    type: bool
    default: false
  force:
    description: Send into a destination copy changed since the last send (its changes are rolled back).
    type: bool
    default: false
  ssh_opts:
    description: ssh C(-o) options.
    type: list
    elements: str
    default: []
  remote_kvm:
    description: The kvm command on the destination.
    type: str
author:
  - kvm project (@kvm)
"""

EXAMPLES = r"""
- name: Migrate web1 to the host of the inventory called host-b
  kvm.host.kvm_send:
    name: web1
    dest: "root@{{ hostvars['host-b'].ansible_host }}"

- name: A nightly copy to a second root of this host
  kvm.host.kvm_send:
    name: web1
    mode: copy
    local_root: /backup/kvm
"""

RETURN = r"""
vm:
  description: The VM on the source after the task, as C(vminfo --json) gives it.
  returned: always
  type: dict
dest_vm:
  description: The VM on the destination after the task, for C(local_root) only.
  returned: when local_root is given
  type: dict
send:
  description:
    - vmsend's JSON object (null when nothing was run), with C(mode) (warm, cold, copy), C(bytes) sent, C(downtime_s)
      (null when the VM did not stop), C(started) on the destination, C(migrated) and C(changed).
  returned: always
  type: dict
  sample: {"vm": "web1", "dest": "root@host-b", "mode": "warm", "bytes": 1048576, "downtime_s": 0.8,
           "started": true, "migrated": true, "changed": true, "dry_run": false}
commands:
  description: The kvm command lines run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvm.host.plugins.module_utils.kvm_cli import (
    COMMON_ARGS, NOT_FOUND, Kvm, KvmFailed, dry, fail)


def run(module, kvm, result):
    p = module.params
    there = Kvm(module, root=p["local_root"]) if p["local_root"] else None
    args = ["-y"] + {"migrate": [], "cold": ["--cold"], "copy": ["--copy"]}[p["mode"]]
    args += [] if p["start"] else ["--no-start"]
    args += ["--keep"] if p["keep"] else []
    args += ["--force"] if p["force"] else []
    for opt in p["ssh_opts"]:
        args += ["--ssh-opt", opt]
    args += ["--remote-kvm", p["remote_kvm"]] if p["remote_kvm"] else []
    args += ["--local", p["local_root"]] if p["local_root"] else []
    try:
        sent = kvm.json("vmsend", *(args + dry(module) + [p["name"]] + ([p["dest"]] if p["dest"] else [])))[1]
    except KvmFailed as exc:
        # moved here by an earlier run and destroyed at the source since: no change
        if not (exc.rc == NOT_FOUND and p["mode"] != "copy" and there and there.vminfo(p["name"])):
            raise
        sent = None
    result["send"] = sent
    result["changed"] = bool(sent and sent["changed"])
    result["vm"] = kvm.vminfo(p["name"])
    if there is not None:
        result["dest_vm"] = there.vminfo(p["name"])


def main():
    module = AnsibleModule(
        argument_spec=dict(name=dict(type="str", required=True), dest=dict(type="str"), local_root=dict(type="path"),
                           mode=dict(type="str", default="migrate", choices=["migrate", "cold", "copy"]),
                           start=dict(type="bool", default=True), keep=dict(type="bool", default=False),
                           force=dict(type="bool", default=False), ssh_opts=dict(type="list", elements="str", default=[]),
                           remote_kvm=dict(type="str"), **COMMON_ARGS),
        required_one_of=[("dest", "local_root")], mutually_exclusive=[("dest", "local_root")],
        supports_check_mode=True)
    kvm = Kvm(module)
    result = dict(changed=False, vm=None, send=None, commands=kvm.commands)
    try:
        run(module, kvm, result)
    except KvmFailed as exc:
        fail(module, exc, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
