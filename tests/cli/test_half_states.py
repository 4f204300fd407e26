"""Half states a kill or a power loss leaves: a dataset still marked kvm:creating after vmcreate
and its watchdog both died, and a VM dataset left unmounted."""

import os
import subprocess

from tests.conftest import cmd, create_vm, datasets, one_line_error


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_vmcreate_destroys_datasets_left_marked_by_a_dead_creator(install, env, pool):
    ghost, live = f"{pool}/kvm/vm/ghost", f"{pool}/kvm/vm/busy"
    subprocess.run(["zfs", "create", "-o", f"kvm:creating={dead_pid()}", ghost], check=True)
    (install / "vm" / "ghost" / "set.conf").write_text('VMrom="uefi"\n')  # half-made: no run
    subprocess.run(["zfs", "create", "-o", f"kvm:creating={os.getpid()}", live], check=True)  # still being made
    try:
        create_vm(install, env, "other")
        assert ghost not in datasets(pool) and live in datasets(pool)
        assert not (install / "vm" / "ghost").exists()
        create_vm(install, env, "ghost")  # the name is free again
    finally:
        subprocess.run(["zfs", "destroy", "-r", live], capture_output=True)


def test_a_committed_vm_is_never_taken_for_a_half_made_one(install, env, pool):
    create_vm(install, env, "web")
    create_vm(install, env, "web2")
    assert f"{pool}/kvm/vm/web" in datasets(pool)
    assert cmd(install, env, "vminfo", "web").returncode == 0


def test_an_unmounted_vm_dataset_is_reported_with_the_way_back(install, env, pool):
    # a command killed between an unmount and its mount: who cannot mount is told how; a command
    # run as root (not a dry run) mounts the VM's own dataset again and goes on
    create_vm(install, env, "web")
    ds = f"{pool}/kvm/vm/web"
    subprocess.run(["zfs", "unmount", ds], check=True)
    try:
        one_line_error(cmd(install, env, "start", "-n", "web"), f"{ds} exists but is not mounted",
                       f"zfs mount {ds}", status=6)
        one_line_error(cmd(install, env, "vmcreate", "web", "-y"), "already exists", status=7)
        assert cmd(install, env, "vminfo", "web").returncode == 0
        mounted = subprocess.run(["zfs", "get", "-H", "-o", "value", "mounted", ds], capture_output=True, text=True)
        assert mounted.stdout.strip() == "yes"
    finally:
        subprocess.run(["zfs", "mount", ds], capture_output=True)
