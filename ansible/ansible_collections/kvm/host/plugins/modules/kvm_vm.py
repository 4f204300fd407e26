#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the kvm project
# BSD-2-Clause (see the project's README)

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_vm
short_description: A bhyve or qemu VM of a kvm install root (created, set, started, stopped, destroyed)
version_added: 1.0.0
description:
  - Makes a VM of a kvm install root be as described, with the kvm commands (vmcreate, vmset, start, stop, dorc,
    vmdestroy), reading only their JSON output and exit statuses.
  - C(running), C(stopped) and C(absent) run C(start -b --json), C(stop --json) and C(vmdestroy -f --json) whatever
    the VM's state, and report their C(changed) (a VM already as asked is C(changed=false) with exit 0 under
    C(--json), kvm(8) JSON OUTPUT); a VM that does not exist is no change for C(absent) (exit 6).
  - C(cores), C(mem) and C(settings) are applied with C(vmset), which compares them with set.conf as kvm reads it
    (C(Mem=2GB) is C(2G)), so a second run changes nothing.
  - Check mode runs the commands' own dry run (C(-n)); diff mode shows the set.conf keys changed, before and after.
extends_documentation_fragment:
  - kvm.host.kvm
options:
  name:
    description: The VM's name.
    type: str
    required: true
  state:
    description:
      - C(present) makes it exist; C(running) and C(stopped) also start (C(start -b)) or stop it; C(restarted) stops
        it if it runs and starts it (always a change); C(absent) stops it if it runs and destroys it.
    type: str
    choices: [present, absent, running, stopped, restarted]
    default: present
  cores:
    description: vCPUs (set.conf C(Cores)).
    type: int
  mem:
    description: Memory, as vmcreate takes it (C(2G), C(512M)); set.conf C(Mem).
    type: str
  disk_size:
    description: Size of the disk made with the VM (vmcreate C(--disk-size)); used only when the VM is created.
    type: str
  from_image:
    description: Create the VM as a clone of this image (C(image list)); used only when the VM is created.
    type: str
  network:
    description: Whether the VM gets the basic network (a tap on C(bridge)) when it is created.
    type: bool
    default: true
  bridge:
    description: The basic network's bridge when the VM is created (vmcreate C(--bridge)).
    type: str
  vnc:
    description: VNC screen when the VM is created (vmcreate C(--vnc)).
    type: str
    choices: ['yes', 'wait', 'no']
  com:
    description: A serial console on COM1 when the VM is created (vmcreate C(--com)).
    type: bool
  cloud_init:
    description:
      - Write a cloud-init seed when the VM is created (vmcreate C(--cloud-init) and its flags).
    type: dict
    suboptions:
      user:
        description: The login to create.
        type: str
      ssh_keys:
        description: Public key files for the user (public keys, not secrets).
        type: list
        elements: path
        default: []
      password_hash:
        description: A crypt hash for the user, never a plain password (not logged).
        type: str
      hostname:
        description: The guest's host name (default the VM's name).
        type: str
      ip:
        description: A static address ADDR/LEN (default DHCP).
        type: str
      gateway:
        description: The default route.
        type: str
      dns:
        description: Name servers.
        type: list
        elements: str
        default: []
  settings:
    description:
      - Any set.conf keys and their values (C(vmset KEY=VALUE)); a value of null removes the key (C(vmset -u KEY)).
    type: dict
    default: {}
  restart_on_change:
    description:
      - When a change of set.conf needs a restart of the running VM (vmset's C(restart_required)), stop and start it.
      - Otherwise the running VM uses the change at its next guest reboot, and the result says C(restart_required).
    type: bool
    default: false
  autostart:
    description: Start the VM at boot (C(dorc NAME --enable)), or not (C(dorc -r NAME)).
    type: bool
  force_stop:
    description: Force the power off at once when stopping (C(stop -f)).
    type: bool
    default: false
  stop_timeout:
    description: Seconds a stop waits for the guest before forcing the power off (C(stop -t)).
    type: int
author:
  - kvm project (@kvm)
"""

EXAMPLES = r"""
- name: A VM from an image, with cloud-init, running
  kvm.host.kvm_vm:
    name: web1
    state: running
    from_image: debian12
    disk_size: 20G
    cores: 2
    mem: 2G
    bridge: bridge0
    cloud_init:
      user: admin
      ssh_keys: [/root/.ssh/id_ed25519.pub]

- name: More memory, restarting the VM if it runs
  kvm.host.kvm_vm:
    name: web1
    mem: 4G
    restart_on_change: true

- name: Any set.conf key
  kvm.host.kvm_vm:
    name: web1
    settings:
      StopTimeout: "120"
      VNCwait: null

- name: Gone
  kvm.host.kvm_vm:
    name: web1
    state: absent
"""

RETURN = r"""
vm:
  description: The VM as C(vminfo --json) gives it after the task (absent, or in check mode before it existed, null).
  returned: always
  type: dict
changes:
  description: The set.conf keys vmset changed (or would, in check mode), each with its old and new value.
  returned: always
  type: list
  elements: dict
  sample: [{"key": "Mem", "old": "1G", "new": "2G"}]
restart_required:
  description: A set.conf change waits for a restart of the running VM (not done, or C(restart_on_change) was false).
  returned: always
  type: bool
power:
  description:
    - The JSON objects of the C(start), C(stop) and C(vmdestroy) the task ran, by command (kvm(8) JSON OUTPUT);
      C(start) has C(state), C(pid) and C(changed); C(stop) has C(was), C(how) (agent, acpi, force, none) and
      C(changed); C(vmdestroy) has C(destroyed), the datasets.
  returned: always
  type: dict
  sample: {"stop": {"vm": "web1", "was": "running", "how": "acpi", "detail": "acpi", "changed": true}}
commands:
  description: The kvm command lines run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvm.host.plugins.module_utils.kvm_cli import (
    COMMON_ARGS, NOT_FOUND, Kvm, KvmFailed, dry, fail)


def create_args(p):
    """vmcreate's flags from the module's options."""
    args = ["-y"]
    for opt, flag in (("cores", "--cores"), ("mem", "--mem"), ("disk_size", "--disk-size"),
                      ("from_image", "--from"), ("bridge", "--bridge"), ("vnc", "--vnc")):
        if p[opt] is not None:
            args += [flag, p[opt]]
    if not p["network"]:
        args.append("--no-network")
    if p["com"] is not None:
        args += ["--com", "yes" if p["com"] else "no"]
    ci = p["cloud_init"]
    if ci is not None:
        args.append("--cloud-init")
        for opt, flag in (("user", "--user"), ("password_hash", "--password-hash"), ("hostname", "--hostname"),
                          ("ip", "--ip"), ("gateway", "--gateway")):
            if ci.get(opt):
                args += [flag, ci[opt]]
        for key in ci.get("ssh_keys") or []:
            args += ["--ssh-key", key]
        for server in ci.get("dns") or []:
            args += ["--dns", server]
    return args


def wanted_settings(p):
    """{KEY: value or None} the VM's set.conf must say."""
    out = dict((k, None if v is None else str(v)) for k, v in (p["settings"] or {}).items())
    if p["cores"] is not None:
        out["Cores"] = str(p["cores"])
    if p["mem"] is not None:
        out["Mem"] = p["mem"]
    return out


class VmTask(object):
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.kvm = Kvm(module)
        self.name = self.p["name"]
        self.changed = False
        self.changes = []
        self.restart_required = False
        self.results = {}   # the JSON objects of start, stop and vmdestroy, by command

    def run(self):
        state = self.p["state"]
        if state == "absent":
            return self.absent()
        info = self.kvm.vminfo(self.name)
        if info is None:
            if self.module.check_mode and self.image_missing():
                # an earlier task of the play (kvm_image) would import it: vmcreate -n cannot say more
                self.module.warn("image %s does not exist (yet): in check mode, %s would be created from it"
                                 % (self.p["from_image"], self.name))
                self.changed = True
                return None
            made = self.kvm.json("vmcreate", self.name, *(create_args(self.p) + dry(self.module)))[1]
            self.changed = True
            if made.get("dry_run"):
                return None   # check mode: nothing exists to set, start or enable
        self.apply_settings()
        if self.p["autostart"] is not None:
            self.autostart(self.p["autostart"])
        # vmset's restart_required is true only for a VM that runs
        restart = self.restart_required and self.p["restart_on_change"]
        if state == "running":
            if not self.start() and restart:
                self.restart()
        elif state == "stopped":
            self.stop()
        elif state == "restarted" or restart:
            self.restart()
        return self.kvm.vminfo(self.name)

    def image_missing(self):
        """from_image is given and no image of that name exists."""
        name = self.p["from_image"]
        return bool(name) and all(i["name"] != name for i in self.kvm.json("image", "list")[1])

    def apply_settings(self):
        want = wanted_settings(self.p)
        if not want:
            return
        sets = ["%s=%s" % (k, v) for k, v in sorted(want.items()) if v is not None]
        unsets = [a for k in sorted(k for k, v in want.items() if v is None) for a in ("-u", k)]
        result = self.kvm.json("vmset", self.name, *(sets + unsets + dry(self.module)))[1]
        if result["changed"]:
            self.changed = True
            self.changes = result["changes"]
            self.restart_required = result["restart_required"]

    def autostart(self, enable):
        rows = self.kvm.json("vmlist")[1]
        auto = any(r["name"] == self.name and r["auto"] for r in rows)
        if auto == enable:
            return
        self.changed = True
        if enable:
            self.kvm.run("dorc", self.name, "-y", "--enable", *dry(self.module))
        else:
            self.kvm.run("dorc", "-r", self.name, "-y", *dry(self.module))

    def start(self):
        """start -b --json (in check mode start -n --json, which checks set.conf): True when it started it."""
        result = self.kvm.json("start", *(["-n"] if self.module.check_mode else ["-b"]) + [self.name])[1]
        self.results["start"] = result
        self.changed = self.changed or result["changed"]
        return result["changed"]

    def stop(self, ok=()):
        """stop --json: True when it stopped it."""
        args = ["-f"] if self.p["force_stop"] else []
        if self.p["stop_timeout"]:
            args += ["-t", self.p["stop_timeout"]]
        result = self.kvm.json("stop", *(args + dry(self.module) + [self.name]), ok=ok)[1]
        if result is None:
            return False
        self.results["stop"] = result
        self.changed = self.changed or result["changed"]
        return result["changed"]

    def restart(self):
        """Stop (when it runs) and start: always a change (in check mode, the start's dry run sees it
        running still, and says no change: the stop's dry run said one)."""
        self.stop()
        self.start()
        self.changed = True
        self.restart_required = False

    def absent(self):
        """vmdestroy -y -f --json; no such VM (6) is no change. force_stop or stop_timeout: stop --json first."""
        if self.p["force_stop"] or self.p["stop_timeout"]:
            self.stop(ok=(NOT_FOUND,))
        rc, result = self.kvm.json("vmdestroy", "-y", "-f", *(dry(self.module) + [self.name]), ok=(NOT_FOUND,))
        if rc != NOT_FOUND:
            self.results["vmdestroy"] = result
            self.changed = True
        return None

    def diff(self):
        def fmt(key, value):
            return "" if value is None else "%s=%s\n" % (key, value)
        return {"before": "".join(fmt(c["key"], c["old"]) for c in self.changes),
                "after": "".join(fmt(c["key"], c["new"]) for c in self.changes),
                "before_header": "%s set.conf" % self.name, "after_header": "%s set.conf" % self.name}


def main():
    ci = dict(user=dict(type="str"), ssh_keys=dict(type="list", elements="path", default=[], no_log=False),
              password_hash=dict(type="str", no_log=True), hostname=dict(type="str"), ip=dict(type="str"),
              gateway=dict(type="str"), dns=dict(type="list", elements="str", default=[]))
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent", "running", "stopped", "restarted"]),
            cores=dict(type="int"), mem=dict(type="str"), disk_size=dict(type="str"), from_image=dict(type="str"),
            network=dict(type="bool", default=True), bridge=dict(type="str"),
            vnc=dict(type="str", choices=["yes", "wait", "no"]), com=dict(type="bool"),
            cloud_init=dict(type="dict", options=ci),
            settings=dict(type="dict", default={}), restart_on_change=dict(type="bool", default=False),
            autostart=dict(type="bool"), force_stop=dict(type="bool", default=False), stop_timeout=dict(type="int"),
            **COMMON_ARGS),
        supports_check_mode=True)
    task = VmTask(module)
    try:
        vm = task.run()
    except KvmFailed as exc:
        fail(module, exc, changed=task.changed, power=task.results, commands=task.kvm.commands)
    result = dict(changed=task.changed, vm=vm, changes=task.changes, restart_required=task.restart_required,
                  power=task.results, commands=task.kvm.commands)
    if module._diff:
        result["diff"] = task.diff()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
