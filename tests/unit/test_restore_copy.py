"""vmrestore's rule for a copy (kvm/migrate/archive.py): which restores rewrite the VM's files, and
the exported dataset of a file written before the manifest named it."""

from kvm.migrate import archive

CONF = 'Disk="/dev/zvol/tank/kvm/vm/web/disk"\nDevices="4,virtio-blk,/dev/zvol/tank/kvm/vm/web2/disk"\n'


def test_the_manifests_dataset_else_the_one_its_zvol_paths_name():
    assert archive.exported_dataset({"name": "web", "dataset": "p/kvm/vm/web", "set.conf": CONF}) == "p/kvm/vm/web"
    assert archive.exported_dataset({"name": "web", "set.conf": CONF}) == "tank/kvm/vm/web"
    assert archive.exported_dataset({"name": "web2", "set.conf": CONF}) == "tank/kvm/vm/web2"
    assert archive.exported_dataset({"name": "we", "set.conf": CONF}) is None   # no zvol of "we"
    assert archive.exported_dataset({"name": "web", "set.conf": 'Disk="disk"\n'}) is None


def test_a_copy_is_another_name_or_another_dataset():
    info = {"name": "web", "dataset": "tank/kvm/vm/web", "set.conf": CONF}
    assert archive.copy_of(info, "web", "tank/kvm/vm/web") is None                      # the backup, back
    assert archive.copy_of(info, "db", "tank/kvm/vm/db") == ("web", "tank/kvm/vm/web")  # a copy
    assert archive.copy_of(info, "web", "other/kvm/vm/web") == ("web", "tank/kvm/vm/web")  # zvol paths follow
    old = {"name": "web", "set.conf": 'Disk="disk"\n'}   # an earlier file, no zvols: nothing to follow
    assert archive.copy_of(old, "web", "other/kvm/vm/web") is None
    assert archive.copy_of(old, "db", "other/kvm/vm/db") == ("web", "other/kvm/vm/db")
