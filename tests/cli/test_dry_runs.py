"""Issue 14 item 5: every dry run says what it WOULD do ("would create ...", "would stop ..."),
never "created ..." for work it did not do, and changes nothing on disk: the install root, the
pool's datasets and snapshots, rc.d, rc.conf and the run dir (no lock file either)."""

import contextlib
import time
from pathlib import Path

import pytest

from tests.conftest import cmd, create_vm, datasets, fake_iso, kvm, snapshot_tree
from tests.cli.test_run import guest_up, script, wait_for
from tests.images.test_images import raw_image

PAST = ("created", "destroyed", "removed", "renamed", "inserted", "ejected", "wrote", "installed", "upgraded",
        "imported", "published", "rolled back", "stop requested", "stopped", "pinned")


@contextlib.contextmanager
def nothing_changes(pool, env, root=None):
    """Assert that the block changes no file of the root or the system folders, and no dataset."""
    system = Path(env["KVM_RUN_DIR"]).parent

    def trees():
        # sim/ is the simulator's own record of the calls (read-only ones too), not the host's
        folders = {k: v for k, v in snapshot_tree(system).items() if not k.startswith("sim")}
        return {} if root is None else snapshot_tree(root), folders, datasets(pool)
    before = trees()
    yield
    after = trees()
    for was, now in zip(before, after):
        assert now == was, {k for k in set(was) | set(now) if was.get(k) != now.get(k)}


def dry(root, env, *argv, status=0):
    """Run a dry run; its stdout lines, after checking that none claims work done."""
    res = cmd(root, env, *argv, "--dry-run")
    assert res.returncode == status, (res.stdout, res.stderr)
    for line in (res.stdout + res.stderr).splitlines():
        assert not line.split(": ")[-1].startswith(PAST), line   # "web: inserted X" would be a lie
    return res.stdout.splitlines()


def test_kvminst_install_upgrade_and_uninstall(pool, env):
    from tests.conftest import destroy_dataset
    destroy_dataset(f"{pool}/kvm")
    with nothing_changes(pool, env):
        res = kvm(env, "kvminst", "-p", pool, "--dry-run")
        assert res.returncode == 0, res.stderr
        assert f"would install kvm in /{pool}/kvm (dataset {pool}/kvm)" in res.stdout.splitlines()
        assert f"would create dataset {pool}/kvm" in res.stderr and "installed" not in res.stdout
    assert kvm(env, "kvminst", "-p", pool, "-y").returncode == 0
    root = Path(f"/{pool}/kvm")
    try:
        with nothing_changes(pool, env, root):
            res = kvm(env, "kvminst", "-p", pool, "--dry-run", "--repin")
            assert f"would upgrade kvm in {root} (dataset {pool}/kvm)" in res.stdout.splitlines()
            assert "would pin firmware BHYVE_UEFI.fd" in res.stderr and "pinned" not in res.stderr
            assert any(line.startswith(f"would write {root}/start ") for line in res.stdout.splitlines())
            res = kvm(env, "kvminst", "--uninstall", "-p", pool, "--dry-run")   # a dry run asks nothing
            assert res.returncode == 0 and res.stdout.splitlines()[-1] == f"would remove {pool}/kvm"
    finally:
        destroy_dataset(f"{pool}/kvm")


def test_vmcreate_and_vmcreate_from(install, env, pool, tmp_path):
    with nothing_changes(pool, env, install):
        lines = dry(install, env, "vmcreate", "dry1", "-y", "--disk-size", "1G")
        assert lines[-1] == f"would create dry1 in {install}/vm/dry1"
        assert f"would write {install}/vm/dry1/set.conf" in " ".join(lines)
    assert cmd(install, env, "image", "import", "deb", raw_image(tmp_path)).returncode == 0
    with nothing_changes(pool, env, install):
        assert dry(install, env, "vmcreate", "a", "-y", "--from", "deb")[-1] == f"would create a in {install}/vm/a"


def test_insert_eject_and_cloudinit(install, env, pool, tmp_path):
    d = create_vm(install, env, "web")
    iso = tmp_path / "x.iso"
    fake_iso(iso)
    with nothing_changes(pool, env, install):
        lines = dry(install, env, "insert", "web", iso)
        assert lines == [f"would write {d}/set.conf.sav ({(d / 'set.conf').stat().st_size} bytes, mode 644)",
                         lines[1], f"web: would insert {iso}"] and lines[1].startswith(f"would write {d}/set.conf ")
    assert cmd(install, env, "insert", "web", iso).returncode == 0
    with nothing_changes(pool, env, install):
        assert dry(install, env, "eject", "web")[-1] == f"web: would eject {iso}"
        lines = dry(install, env, "cloudinit", "web", "--hostname", "h1")
        assert f"would write {d}/seed.iso" in " ".join(lines)
        assert lines[-1].startswith("web: would write a new seed")


def test_snap_create_destroy_rollback_and_prune(install, env, pool):
    create_vm(install, env, "web")
    for s in ("s1", "s2", "s3"):
        assert cmd(install, env, "snap", "c", "web", s).returncode == 0
    ds = f"{pool}/kvm/vm/web"
    with nothing_changes(pool, env, install):
        assert dry(install, env, "snap", "c", "web", "s4") == [f"zfs snapshot {ds}@s4",
                                                                f"would create snapshot {ds}@s4"]
        assert dry(install, env, "snap", "d", "web", "s1") == [f"zfs destroy {ds}@s1", "would destroy web@s1"]
        assert dry(install, env, "snap", "r", "web") == [f"zfs rollback {ds}@s3", "web: would roll back to s3"]
        assert dry(install, env, "snap", "r", "-r", "web", "s1")[-1] == "web: would roll back to s1"
        assert dry(install, env, "snap", "prune", "web", "--keep", "1") == ["would destroy web@s1",
                                                                              "would destroy web@s2"]


def test_dorc_and_dorc_remove(install, env, pool):
    create_vm(install, env, "web")
    rcd = Path(env["KVM_RCDIR"])
    with nothing_changes(pool, env, install):
        lines = dry(install, env, "dorc", "web", "-y", "--enable")
        assert lines[-1] == f"web: would install the rc.d script {rcd}/web and enable it"
        assert f"would write {rcd}/web (" in " ".join(lines)
    assert cmd(install, env, "dorc", "web", "-y", "--enable").returncode == 0
    with nothing_changes(pool, env, install):
        assert dry(install, env, "dorc", "-r", "web")[-1] == f"would remove {rcd}/web"


def test_vmrename_vmclone_vmdestroy_and_image_commands(install, env, pool, tmp_path):
    create_vm(install, env, "web", "--disk-size", "16M")
    assert cmd(install, env, "image", "import", "deb", raw_image(tmp_path)).returncode == 0
    with nothing_changes(pool, env, install):
        assert dry(install, env, "vmrename", "web", "web2")[-1] == f"would rename web to web2 ({install}/vm/web2)"
        assert dry(install, env, "vmclone", "web", "cl", "-y")[-1].startswith(f"would create cl in {install}/vm/cl")
        assert dry(install, env, "vmdestroy", "web", "-y")[-1] == f"would destroy web ({pool}/kvm/vm/web)"
        assert dry(install, env, "image", "import", "d2", raw_image(tmp_path, name="b.raw"))[-1] == \
            "would import d2 (raw)"
        assert dry(install, env, "image", "publish", "web", "pub")[-1].startswith("would publish web as image pub")
        assert dry(install, env, "image", "destroy", "deb")[-1] == f"would destroy image deb ({pool}/kvm/images/deb)"


def test_start_stop_and_the_forced_commands_on_a_running_vm(install, env, pool):
    create_vm(install, env, "web")
    with nothing_changes(pool, env, install):
        lines = dry(install, env, "start", "web")
        assert lines[0] == "would start web with these steps (preRun to postRun again at each guest reboot):"
    script(env, "web", "run")
    assert cmd(install, env, "start", "-b", "web").returncode == 0
    try:
        wait_for(lambda: guest_up(install, env), what="the guest")
        with nothing_changes(pool, env, install):
            lines = dry(install, env, "stop", "web", "-t", "20")
            assert lines[-1] == "web: would stop it: the ACPI power button, then the power forced off after 20 s"
            assert dry(install, env, "stop", "-f", "web")[-1] == "web: would force the power off (-f)"
            # -f plans the stop, then the destroy/rename a stopped VM would get (it used to fail: "is running")
            lines = dry(install, env, "vmdestroy", "-y", "-f", "web")
            assert any(line.startswith("kill -TERM") for line in lines)
            assert lines[-1] == f"would destroy web ({pool}/kvm/vm/web)"
            assert dry(install, env, "vmrename", "-f", "web", "web2")[-1].startswith("would rename web to web2")
            # without -f a dry run refuses a running VM as the real command does
            res = cmd(install, env, "vmdestroy", "-y", "web", "--dry-run")
            assert res.returncode == 8 and "is running" in res.stderr
        assert guest_up(install, env)
    finally:
        assert cmd(install, env, "stop", "-f", "web").returncode == 0


def test_vmsend(install, env, pool, far):
    from tests.cli.test_run import make
    root, fpool = far
    make(install, env)
    with nothing_changes(fpool, env, install), nothing_changes(pool, env):
        lines = dry(install, env, "vmsend", "web", "--local", root)
        assert lines[0].startswith(f"# would migrate web to {root}: warm, stopped, full")
        lines = dry(install, env, "vmsend", "web", "--local", root, "--copy")
        assert lines[0].startswith(f"# would copy web to {root}: copy")


from tests.cli.test_vmsend import far  # noqa: E402,F401 - the second root on a pool of its own
