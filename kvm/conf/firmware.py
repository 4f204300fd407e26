"""Where the pinned firmware of an install root is (ours in firmware/, the shell toolkit's in the root)."""

import os
from pathlib import Path

UEFI_CODE = "BHYVE_UEFI.fd"
UEFI_VARS = "BHYVE_UEFI_VARS.fd"
GRUB = "grub-bhyve"


def _first(*candidates):
    for path in candidates:
        if Path(path).is_file():
            return Path(path)
    return None


def uefi_code(root):
    """The pinned UEFI code file."""
    return _first(Path(root) / "firmware" / UEFI_CODE, Path(root) / UEFI_CODE)


def vars_template(root):
    """The pinned UEFI vars template each new VM gets a copy of."""
    return _first(Path(root) / "firmware" / UEFI_VARS, Path(root) / "UEFI_VARS.fd")


def grub(root):
    """The pinned grub-bhyve."""
    return _first(Path(root) / "firmware" / GRUB, Path(root) / GRUB)


OVMF_CODE = "OVMF_CODE_4M.fd"    # Debian's ovmf package, 4 MiB flash layout
OVMF_VARS = "OVMF_VARS_4M.fd"
OVMF_DIR = "/usr/share/OVMF"     # where that package puts them (KVM_OVMF_DIR overrides)


def ovmf_dir():
    return Path(os.environ.get("KVM_OVMF_DIR") or OVMF_DIR)


def ovmf_code(root):
    """OVMF's code file: the pinned one, else the host's."""
    return _first(Path(root) / "firmware" / OVMF_CODE, ovmf_dir() / OVMF_CODE)


def ovmf_vars(root):
    """OVMF's vars template, copied into each new VM on a qemu host."""
    return _first(Path(root) / "firmware" / OVMF_VARS, ovmf_dir() / OVMF_VARS)
