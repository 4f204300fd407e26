"""vmcreate --from at image sizes 64 MiB, 1 GiB and 8 GiB (sparse): the time should be flat in the
size (a ZFS clone of @base) and the new VM's dataset should use next to nothing; a plain copy of
the same disk into a new dataset is timed beside it for contrast."""

import statistics
import subprocess
import time

from bench_migrate import destroy  # zfs destroy -r, again while zfs-fuse says busy (bench/ is on sys.path)

SIZES = {"64M": 64 << 20, "1G": 1 << 30, "8G": 8 << 30}
TARGETS = {"flat_ratio": 1.2, "over_interpreter_ms": 300, "clone_used_bytes": 1 << 20, "over_bare": 2.0}


def make_image(bed, label, size):
    """What `image import` leaves (disk, image.conf, read-only, @base), made directly: the import's
    copy of 8 GiB is not what is measured here."""
    ds = f"{bed.pool}/kvm/images/img{label}"
    subprocess.run(["zfs", "create", "-p", ds], check=True, capture_output=True)
    d = bed.root / "images" / f"img{label}"
    with open(d / "disk", "wb") as fh:
        fh.write(b"BOOT" * 128)
        fh.truncate(size)
    (d / "image.conf").write_text(f'format="raw"\nsize="{size}"\nsource="bench"\n')
    subprocess.run(["zfs", "set", "readonly=on", ds], check=True, capture_output=True)
    subprocess.run(["zfs", "snapshot", f"{ds}@base"], check=True, capture_output=True)
    return ds, d / "disk"


def used(ds):
    res = subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", "used", ds], capture_output=True, text=True)
    return int(res.stdout.strip() or 0)


def one_from(bed, label, i):
    """(ms of vmcreate --from, bytes the new dataset uses); the VM is destroyed after."""
    name = f"from{label}x{i}"
    t = time.perf_counter()
    subprocess.run([str(bed.root / "vmcreate"), name, "-y", "--no-network", "--from", f"img{label}"], env=bed.env,
                   cwd=bed.root, check=True, capture_output=True)
    ms = (time.perf_counter() - t) * 1000
    ds = f"{bed.pool}/kvm/vm/{name}"
    space = used(ds)
    destroy(ds)
    return ms, space


def bare_clone(bed, label, i):
    """ms of the bare work of a vmcreate --from, as one sh script: a zfs snapshot, a zfs clone of the
    image and a set.conf written (issue 25: vmcreate --from takes at most twice that)."""
    img, ds = f"{bed.pool}/kvm/images/img{label}", f"{bed.pool}/kvm/vm/bare{label}x{i}"
    script = (f"zfs snapshot {img}@bare{i} && zfs clone {img}@bare{i} {ds} && "
              f"printf 'VMrom=\"uefi\"\\nCores=\"1\"\\nMem=\"1G\"\\n' > /{ds}/set.conf")
    t = time.perf_counter()
    subprocess.run(["sh", "-c", script], check=True, capture_output=True)
    ms = (time.perf_counter() - t) * 1000
    destroy(ds)
    destroy(f"{img}@bare{i}")
    return ms


def plain_copy(bed, label, disk):
    """(ms, bytes used) of `cp` of the disk into a new dataset (cp keeps the holes: the kindest copy)."""
    ds = f"{bed.pool}/kvm/copy{label}"
    subprocess.run(["zfs", "create", ds], check=True, capture_output=True)
    t = time.perf_counter()
    subprocess.run(["cp", str(disk), f"/{ds}/disk"], check=True, capture_output=True)
    subprocess.run(["sync"], check=True)
    ms = (time.perf_counter() - t) * 1000
    space = used(ds)
    destroy(ds)
    return ms, space


def run(bed, runs):
    """{size label: {ms, used, copy_ms, copy_used}} and the flatness ratio."""
    out = {}
    for label, size in SIZES.items():
        _, disk = make_image(bed, label, size)
        samples, bare = [], []
        for i in range(runs):  # in turns: a load that comes and goes weighs on both alike
            samples.append(one_from(bed, label, i))
            bare.append(bare_clone(bed, label, i))
        copy_ms, copy_used = plain_copy(bed, label, disk)
        out[label] = {"ms": statistics.median(s[0] for s in samples), "used": max(s[1] for s in samples),
                      "bare_ms": statistics.median(bare), "copy_ms": copy_ms, "copy_used": copy_used}
    times = [v["ms"] for v in out.values()]
    return {"sizes": out, "flat_ratio": max(times) / min(times)}


def rows(r, base):
    """Table rows for bench.py's report."""
    f = r["from_image"]
    out = []
    for label, v in f["sizes"].items():
        out.append((f"vmcreate --from, {label} image", f"{v['ms']:.1f} ms",
                    f"+{v['ms'] - base:.1f} ms (target +{TARGETS['over_interpreter_ms']})",
                    f"bare snapshot+clone+set.conf {v['bare_ms']:.1f} ms: x{v['ms'] / v['bare_ms']:.2f} "
                    f"(target <= {TARGETS['over_bare']})",
                    f"clone uses {v['used'] / 1024:.0f} KiB (target <= 1024)",
                    f"plain copy: {v['copy_ms']:.0f} ms, {v['copy_used'] / 1048576:.1f} MiB"))
    out.append(("vmcreate --from, 8G / 64M time", f"x{f['flat_ratio']:.2f}", f"target <= {TARGETS['flat_ratio']}",
                "", ""))
    return out


def main():
    """Only these figures, on a bed of bench.py's own (bench/run measures them with the rest)."""
    import bench  # beside this file; imported here only: bench.py imports this module
    subprocess.run([bench.PY, "-m", "compileall", "-q", str(bench.REPO / "kvm")], check=True)
    bed = bench.Bed()
    try:
        base = bench.timeit({"base": [bench.PY, "-c", "pass"]}, bed.env, 11)["base"]
        r = {"from_image": run(bed, 5)}
    finally:
        bed.close()
    print(f"python3 -c pass (baseline): {base:.1f} ms")
    for row in rows(r, base):
        print("  ".join(c for c in row if c))


if __name__ == "__main__":
    main()
