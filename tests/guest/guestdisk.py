"""The test guest's disk: a raw file whose first 4 KiB hold the "disk script" its init reads.

Layout (see tests/guest/README.md): bytes 0-4095 the script (key=value words, NUL padded),
bytes 4096-4607 the boot counter as decimal text, written by the guest at each boot.
"""

import os

SCRIPT_SIZE = 4096
COUNTER_AT = 4096


def make_disk(path, script="", size=64 << 20):
    """A sparse raw disk of `size` bytes with `script` (e.g. "reboot=2 acpi=ignore") and no boots."""
    data = script.encode()
    if len(data) >= SCRIPT_SIZE:
        raise ValueError("disk script longer than 4 KiB")
    with open(path, "wb") as f:
        f.write(data.ljust(SCRIPT_SIZE + 512, b"\0"))
        f.truncate(size)
    return str(path)


def boots(path):
    """How many times the guest booted from this disk (its own counter)."""
    with open(path, "rb") as f:
        f.seek(COUNTER_AT)
        text = f.read(512).decode(errors="replace").strip("\0 \n")
    return int(text) if text.isdigit() else 0
