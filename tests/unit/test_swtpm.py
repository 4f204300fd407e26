"""swtpm per VM (kvm/run/swtpm.py) with the real swtpm, no guest: the TPM answers on the socket
bhyve uses, its state stays in VM_FOLDER/tpm across starts (the same endorsement key), a clone's
fresh state gives another TPM, and the bad cases are one line with the fix."""

import os
import shutil
from pathlib import Path

import pytest

from kvm.errors import NotFound, PermissionDenied
from kvm.host.runfiles import RunFiles
from kvm.hypervisor.bhyve.backend import Bhyve
from kvm.run import swtpm
from tests.guest import tpm2

pytestmark = pytest.mark.skipif(shutil.which("swtpm") is None and os.environ.get("CI") != "true",
                                reason="swtpm is not installed (apt-get install swtpm swtpm-tools)")


class Vm:
    """What swtpm.Swtpm asks of a VM: its name, folder and run files."""

    def __init__(self, folder, run_folder):
        self.name, self.dir, self.run = folder.name, folder, RunFiles(folder.name, run_folder)


@pytest.fixture
def vm():
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="kt", dir="/tmp"))   # short: a unix socket's path
    (base / "web").mkdir()
    (base / "run").mkdir()
    yield Vm(base / "web", base / "run")
    shutil.rmtree(base, ignore_errors=True)


def endorsement_key(vm):
    """Start swtpm as a launch does, ask it for the endorsement-derived key, stop it."""
    tpm = swtpm.Swtpm(vm, Bhyve())
    pid = tpm.start()
    try:
        key = tpm2.public_point(tpm2.transact(tpm.socket, tpm2.create_primary()))
    finally:
        tpm.stop()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    return key


def test_state_persists_and_a_fresh_identity_is_another_tpm(vm):
    first = endorsement_key(vm)
    folder = vm.dir / "tpm"
    assert folder.stat().st_mode & 0o777 == 0o700 and (folder / "tpm2-00.permall").is_file()
    assert not (vm.run.folder / "tpm.sock").exists() and not (vm.run.folder / "tpm.pid").exists()
    assert endorsement_key(vm) == first            # the state survived: the same TPM
    swtpm.fresh_identity(folder)                   # what vmclone does to a clone's copy
    assert folder.is_dir() and os.listdir(folder) == []
    assert endorsement_key(vm) != first            # a TPM of its own


def test_a_loose_state_folder_is_tightened_and_someone_elses_refused(vm):
    folder = vm.dir / "tpm"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    endorsement_key(vm)
    assert folder.stat().st_mode & 0o777 == 0o700
    os.chown(folder, 65534, 65534)
    with pytest.raises(PermissionDenied) as err:
        swtpm.Swtpm(vm, Bhyve()).start()
    assert err.value.message == (f"TPM state folder {folder} is owned by uid 65534, not by uid 0: refusing to use "
                                 f"its keys (chown -R 0 {folder})")
    shutil.rmtree(folder)
    folder.symlink_to("/etc")
    with pytest.raises(PermissionDenied, match=r"is not a folder \(a link\?\): refusing it"):
        swtpm.Swtpm(vm, Bhyve()).start()


def test_swtpm_missing_says_how_to_install_it(vm, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("KVM_PLATFORM", "linux")
    with pytest.raises(NotFound) as err:
        swtpm.Swtpm(vm, Bhyve()).start()
    assert err.value.message == "TPM=swtpm but swtpm is not installed: apt-get install swtpm swtpm-tools"
