"""Which accelerator qemu gets: KVM when /dev/kvm really runs a guest, else TCG.

/dev/kvm existing is not enough: on nested machines (this one) KVM accepts a VM and then
hangs or aborts once the guest runs with `-cpu host`. So a tiny guest is run in a child
process with a time limit, with the real plan's machine and CPU: a 64 KiB firmware whose
reset vector writes to qemu's isa-debug-exit port, which ends qemu with status 3. Anything
else (an abort, a hang past the limit) means TCG. The answer is kept in RUN_DIR/host/accel
per boot of the host, so vmlist and vminfo do not pay for the probe each time.
"""

import os

from kvm import host
from kvm.errors import KvmError
from kvm.host import paths

ENV = "KVM_ACCEL"
KVM_DEV = "/dev/kvm"
PROBE_LIMIT = 5           # seconds; a working KVM answers in well under 1
PROBE_EXIT = 3            # isa-debug-exit: (1 << 1) | 1 for the value 1 written
CACHE = "accel"
# mov al,1 ; out 0xf4,al ; hlt ; jmp $  -- at the reset vector (the ROM's last 16 bytes)
RESET_CODE = b"\xb0\x01\xe6\xf4\xf4\xeb\xfe"


def chosen(binary="qemu-system-x86_64"):
    """kvm or tcg: KVM_ACCEL when set, else the (cached) probe."""
    wanted = os.environ.get(ENV)
    if wanted:
        if wanted not in ("kvm", "tcg"):
            raise KvmError(f"{ENV}={wanted!r}: unknown accelerator (known: kvm, tcg)")
        return wanted
    if not os.access(KVM_DEV, os.R_OK | os.W_OK):
        return "tcg"
    boot = _boot_id()
    cache = paths.current().run_dir / "host" / CACHE
    try:
        seen_boot, answer = cache.read_text().split()
        if seen_boot == boot and answer in ("kvm", "tcg"):
            return answer
    except (OSError, ValueError):
        pass
    answer = probe(binary, cache.parent)
    if host.dry_run():
        return answer
    try:
        host.make_dirs(cache.parent)
        host.write_file(cache, f"{boot} {answer}\n")
    except (KvmError, OSError):
        pass  # a reader without write access probes again next time
    return answer


def probe(binary, folder):
    """Run the tiny guest under KVM; "kvm" when it ended as it should, in time."""
    rom = folder / f"kvm-probe.{os.getpid()}.rom"
    try:
        os.makedirs(folder, exist_ok=True)
        code = bytearray(b"\xf4" * 65536)
        code[0xfff0:0xfff0 + len(RESET_CODE)] = RESET_CODE
        rom.write_bytes(bytes(code))
    except OSError:
        return "tcg"
    try:
        status = host.run_limited([binary, "-accel", "kvm", "-cpu", "host", "-machine", "q35",
                                   "-nodefaults", "-no-user-config", "-display", "none",
                                   "-bios", str(rom), "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
                                  PROBE_LIMIT)
    finally:
        rom.unlink(missing_ok=True)
    return "kvm" if status == PROBE_EXIT else "tcg"


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"
