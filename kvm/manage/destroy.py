"""Destroying a VM: its rc.d script and variables, then its dataset with every snapshot.

The script goes first: a vmdestroy killed in between leaves a VM without a script (which
vmdestroy run again destroys), never a script and `_enable` under a name no VM has.
"""

import os
import time

from kvm import host, zfs
from kvm import vm as vmmod
from kvm.errors import Refused, StateError
from kvm.host import lock
from kvm.manage import rcinstall
from kvm.platform import rcd
from kvm.zfs.deps import dependents, origins_in, release_origin

LEFT_DESTROY_WAIT = 30   # seconds a vmdestroy waits for the `zfs destroy` a killed one left running


def left_destroy(dataset):
    """The pid of a `zfs destroy ... DATASET` still running (the child of a vmdestroy that was
    killed: ZFS goes on with it), or None."""
    for pid, args in host.list_processes():
        for i, word in enumerate(args[:-1]):
            if os.path.basename(word) == "zfs" and args[i + 1] == "destroy" and args[-1] == dataset:
                return pid
    return None


def wait_left_destroy(root, name, say=None, seconds=LEFT_DESTROY_WAIT):
    """Before a vmdestroy looks at the VM: wait for the `zfs destroy` a killed vmdestroy left running
    (meanwhile the VM is half there: its folder unmounted, its snapshots going); StateError when it
    still runs after `seconds`."""
    dataset = f"{root.vm_dataset()}/{name}"
    pid = left_destroy(dataset)
    if pid is None:
        return
    if say:
        say(f"{name}: a `zfs destroy` of {dataset} left by a vmdestroy that was killed still runs (pid {pid}): "
            f"waiting for it")
    end = time.time() + seconds
    while host.pid_alive(pid):
        if time.time() > end:
            raise Refused(f"a `zfs destroy` of {dataset} left by a vmdestroy that was killed still runs "
                             f"(pid {pid}): run vmdestroy again when it has ended", vm=name)
        time.sleep(0.2)


def dataset_of(vm):
    """The VM's dataset; StateError when the VM folder is a plain folder, not the dataset."""
    dataset = vm.dataset()
    if not zfs.lzc_exists(dataset):
        raise StateError(f"{vm.dir} is not the dataset {dataset}: not destroying a plain folder", vm=vm.name)
    return dataset


def check_not_busy(vm):
    """Before asking: refuse when another command (not a supervisor: -f stops that) holds the lock."""
    path = vm.run.lock
    found = lock.holder(path)
    if found and found[1]:
        raise Refused(f"is busy: {lock.describe_holder(found)} holds {path}; try again when it is done",
                         vm=vm.name)


def script_of(vm):
    """Our rc.d script of this VM (pointing into its root), or None."""
    script = rcd.our_script(vm.name)
    if script and (script.shell_toolkit or str(vm.root.path) in script.path.read_text(errors="replace")):
        return script
    return None


def check_no_clones(vm, recursive=False):
    """The datasets that depend on the VM's snapshots (clones, images published from it), deepest
    first; StateError naming them unless `recursive` (-R) accepts destroying them too."""
    users = dependents(dataset_of(vm))
    if users and not recursive:
        raise Refused(f"has clones: {', '.join(users)}; destroy them first, or -R to destroy them too",
                         vm=vm.name)
    check_free(vm, users)
    return users


def check_free(vm, users):
    """-R: refused before anything goes when a clone VM is in use."""
    for clone in _clone_vms(vm, users):
        check_not_busy(clone)
        if vmmod.runtime(clone).active:
            raise Refused(f"its clone {clone.name} is running: stop it first", vm=vm.name)


def _clone_vms(vm, users):
    """The dependents that are VMs of this root."""
    prefix = vm.root.vm_dataset() + "/"
    names = [n[len(prefix):] for n in users if n.startswith(prefix) and "/" not in n[len(prefix):]]
    return [vmmod.Vm(vm.root, n) for n in names if vmmod.Vm(vm.root, n).exists()]


def destroy_dependents(vm, users):
    """-R: each dependent VM of this root as vmdestroy would (its rc.d script too), others by zfs."""
    vms = {c.dataset(): c for c in _clone_vms(vm, users)}
    for name in users:
        if name in vms:
            destroy(vms[name])
        else:
            zfs.destroy_recursive(name)


def destroy(vm):
    """Destroy the VM (stopped by the caller) under its lock; returns the dataset destroyed."""
    with lock.hold_vm(vm.run, "vmdestroy"):
        dataset = dataset_of(vm)
        origins = origins_in(dataset)
        if script_of(vm):
            rcinstall.remove(vm.root, vm.name)
        zfs.destroy_recursive(dataset)
        for origin in origins:  # SRC@clone-NAME-... that vmclone took for it (and for its zvols)
            release_origin(origin)
    return dataset
