"""Everything vminfo shows about one VM, as a plain dict (the --json schema)."""

import os
import shlex
import time

from kvm import platform, zfs
from kvm import vm as vmmod
from kvm.conf import cloudinit, config, guestconf
from kvm.conf.guestconf import TPM_DIR
from kvm.host.runfiles import AGENT, helper_file
from kvm.hypervisor import current as hypervisor
from kvm.manage.listing import human_size  # noqa: F401 - vminfo, snap and image lists show sizes alike
from kvm.run import agent as agentmod
from kvm.run import launch, ports
from kvm.vm import addresses as addrmod
from kvm.vm import root as rootmod

# what vminfo asks zfs of the VM's dataset; kvm:migrated is vmsend's mark (migrate/receive.py
# MIGRATED_PROP: manage sits beside migrate and does not import it) of a VM migrated away
USAGE_PROPS = ["mountpoint", "used", "origin", "kvm:migrated"]


def dataset_usage_later(vm):
    """Start the zfs call for (dataset, used bytes) of the VM folder; returns a function that
    waits for it and gives the answer, so the call runs while the rest is being read.

    The root's marker file names its dataset, so zfs is asked about the VM's dataset only;
    the answer counts only if its mountpoint is the VM folder (a stale marker falls back to
    listing every dataset).
    """
    guess = None
    try:
        marker = (vm.root.path / rootmod.MARKER).read_text().strip()
        guess = f"{marker}/vm/{vm.name}" if marker else None
    except OSError:
        pass
    pending = zfs.get_props_later([guess] if guess else None, USAGE_PROPS)

    def answer():
        rows = pending()
        if guess and (rows.get(guess, {}).get("mountpoint") or "").rstrip("/") == str(vm.dir):
            return guess, int(rows[guess].get("used") or 0), rows[guess].get("origin"), _set(rows[guess])
        if guess:
            rows = zfs.get_props_later(None, USAGE_PROPS)()
        for name, props in rows.items():
            if (props.get("mountpoint") or "").rstrip("/") == str(vm.dir):
                return name, int(props.get("used") or 0), props.get("origin"), _set(props)
        return None, None, None, None
    return answer


def _set(props):
    """The kvm:migrated mark (where the VM went), or None."""
    value = props.get("kvm:migrated")
    return value if value and value != "-" else None


def device_info(dev):
    """Extra facts for a Devices item (taps, passthru)."""
    if dev.kind == "nic" and dev.source and not dev.source.startswith("netgraph"):
        return platform.current().interface_info(dev.source)
    if dev.kind == "passthru":
        return platform.current().pci_info(dev.source)
    return {}


def collect(vm):
    """The vminfo dict for a VM (reads only; no root needed)."""
    usage = dataset_usage_later(vm)  # zfs answers while set.conf and the runtime are read
    cfg = vm.config()
    rt = vmmod.runtime(vm)
    dataset, used, origin, migrated = usage()
    now = time.time()
    disk = None
    if cfg.disk:
        size = vmmod.folder_size_hint(cfg.disk)
        disk = {"path": cfg.disk, "driver": cfg.disk_driver, "exists": size is not None,
                "size": size[0] if size else None, "allocated": size[1] if size else None}
    hv = hypervisor()
    # the launch plan names the firmware; a running VM's port, else any (vminfo does not choose one)
    plan = launch.plan(vm, cfg, vnc_port=rt.vnc_port or ports.FIRST, strict=False, hv=hv) if cfg.loader else None
    fw = plan.firmware if plan and not _placeholder(plan.firmware) else None
    refused, placed = config.check_paths(cfg)
    guest = guest_info(vm, cfg, rt)
    answer = (guest["agent"] or {}).get("answer") or (rt.agent if cfg.agent else None)
    return {
        "name": vm.name, "hypervisor": hv.name, "accelerator": hv.accelerator(), "dir": str(vm.dir),
        "dataset": dataset, "used": used, "origin": origin_info(origin), "migrated": migrated,
        "cloud_init": (vm.dir / "seed.iso").is_file() and
        any(d.slot == cloudinit.CD_SLOT and d.kind in ("cdrom", "disk") for d in cfg.devices),
        "state": rt.state, "pid": rt.bhyve, "supervisor": rt.supervisor, "allocated": rt.allocated,
        "crashed": rt.crashed or None, "started": int(rt.started) or None,
        "uptime": int(now - rt.started) if rt.started and rt.bhyve else None,
        "boots": rt.boots,
        "loader": {"VMrom": cfg.vmrom or None, "kind": cfg.loader or None, "firmware": str(fw) if fw else None},
        "boot": cfg.boot or None, "cores": cfg.cores, "mem": cfg.mem, "options": cfg.options or None,
        "disk": disk, "iso": cfg.iso or None,
        "vnc": {"mode": cfg.vnc, "address": cfg.vnc_addr, "port": rt.vnc_port or None,
                "width": cfg.vnc_size[0] if cfg.vnc_size else None,
                "height": cfg.vnc_size[1] if cfg.vnc_size else None,
                "tablet": cfg.tablet, "password": bool(cfg.vnc_password)} if cfg.vnc else None,
        "com": {"device": hv.console_device(vm.run), "attach": shlex.join(hv.console_command(vm.run))}
        if cfg.com else None,
        "devices": [{"slot": d.slot, "emulation": d.emulation, "conf": d.conf, "info": device_info(d)}
                    for d in cfg.devices],
        "restart_on_fault": cfg.restart_on_fault,
        "switches": [{"tap": n.tap, "switch": n.switch, "vlan": n.vlan or None} for n in cfg.nics],
        **guest,
        "addresses": addrmod.addresses(config.nic_macs(vm.name, cfg.nics, cfg.devices), answer),
        "allow_paths": list(cfg.allow_paths),
        "warnings": list(cfg.warnings) + list(cfg.not_evaluated) + [f"start will refuse: {line}" for line in refused]
        + placed,
        "unevaluated": dict(cfg.unevaluated),  # setting -> "line N not evaluated: why" (never run)
    }


def guest_info(vm, cfg, rt):
    """TPM, Limits, CPUPin, Agent as vminfo --json gives them (None / [] when unset)."""
    tpm = None
    if cfg.tpm:
        tpm = {"kind": cfg.tpm.kind, "device": cfg.tpm.path or None,
               "state": str(vm.dir / TPM_DIR) if cfg.tpm.kind == "swtpm" else None,
               "state_exists": (vm.dir / TPM_DIR).is_dir() if cfg.tpm.kind == "swtpm" else None}
    agent = None
    if cfg.agent:
        answer = agentmod.facts(vm.run) if rt.bhyve and os.access(helper_file(vm.run, AGENT), os.W_OK) else None
        agent = {"socket": str(helper_file(vm.run, AGENT)), "answer": answer}
    return {"tpm": tpm, "limits": {name: number for name, number in cfg.limits} or None,
            "cpu_pin": [{"vcpu": v, "host_cpu": h} for v, h in cfg.cpu_pin], "agent": agent}


def origin_info(origin):
    """{snapshot, image or vm} of a clone's origin (zfs says "-" for none), or None."""
    if not origin or origin == "-":
        return None
    parent, short = zfs.split_snapshot(origin)[0].rsplit("/", 2)[-2:]
    kind = {"images": "image", "vm": "vm"}.get(parent)
    return {"snapshot": origin, kind or "dataset": short}


def _placeholder(path):
    """A plan made without strictness names missing firmware by its bare file name."""
    return not path or not path.startswith("/")


def duration(seconds):
    """3725 -> 1h02m05s."""
    d, rem = divmod(int(seconds), 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}d" if d else "") + f"{h}h{m:02d}m{s:02d}s"


def state_line(info, cleanup=None):
    """The one-line running state; cleanup: the command that cleans a VM left allocated."""
    st = info["state"]
    if st in ("running", "orphaned"):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])) if info["started"] else "?"
        up = duration(info["uptime"]) if info["uptime"] is not None else "?"
        extra = "" if st == "running" else " WITHOUT supervisor (stop it with: stop NAME)"
        return f"running, pid {info['pid']}, started {started}, up {up}{extra}"
    if st == "starting":
        return f"starting (supervisor pid {info['supervisor']}, bhyve not launched yet)"
    if st == "allocated":
        return f"not running, but left allocated: clean with {cleanup or 'the hypervisor'}"
    if st == "crashed":
        return f"crashed ({info['crashed']}), not running"
    return "not running"


# vminfo rows and the set.conf setting each shows, to mark a value the reader did not evaluate
ROW_SETTINGS = {"loader": "VMrom", "boot": "Boot", "cores": "Cores", "memory": "Mem", "options": "VMoptions",
                "disk": "Disk", "iso": "ISO", "vnc": "VNC", "com": "COM"}


def lines(info, cleanup=None):
    """vminfo's text output, `key: value` lines; cleanup: as state_line's."""
    out = [("name", info["name"]), ("state", state_line(info, cleanup).replace("NAME", info["name"])),
           ("dataset", f"{info['dataset'] or '-'} (used {human_size(info['used'])})"), ("folder", info["dir"])]
    if hypervisor().shows_accelerator:  # qemu: kvm, or tcg (as kvm(8) says vminfo shows)
        out.append(("hypervisor", f"{info['hypervisor']}, accelerator {info['accelerator']}"))
    o = info.get("origin")
    if o:
        what = f"image {o['image']}" if "image" in o else f"VM {o['vm']}" if "vm" in o else "dataset"
        out.append(("origin", f"{what} ({o['snapshot']})"))
    ld = info["loader"]
    out.append(("loader", f"{ld['VMrom'] or 'NOT SET (start will refuse)'}"
                          + (f" ({ld['firmware']})" if ld["firmware"] else "")))
    if info["boot"]:
        out.append(("boot", info["boot"]))
    out += [("cores", str(info["cores"])), ("memory", info["mem"]), ("options", info["options"] or "-")]
    d = info["disk"]
    if d:
        state = f"{human_size(d['size'])}, {human_size(d['allocated'])} used" if d["exists"] else "MISSING"
        out.append(("disk", f"{d['path']} ({d['driver']}, {state})"))
    else:
        out.append(("disk", "-"))
    out.append(("iso", info["iso"] or "-"))
    v = info["vnc"]
    if v:
        where = f"{v['address']}:{v['port']}" if v["port"] else f"{v['address']}, port chosen at start"
        size = f", {v['width']}x{v['height']}" if v["width"] else ""
        out.append(("vnc", f"{'on' if v['mode'] == 'on' else 'wait'} ({where}{size}"
                           f"{', no tablet' if not v['tablet'] else ''}{', password' if v['password'] else ''})"))
    else:
        out.append(("vnc", "off"))
    out.append(("com", f"on: {info['com']['attach']}" if info["com"] else "off"))
    if info.get("cloud_init"):
        out.append(("cloud-init", f"{info['dir']}/seed.iso (slot 28; cloudinit {info['name']} to change it)"))
    for dev in info["devices"]:
        out.append((f"slot {dev['slot']}", f"{dev['emulation']} {dev['conf']}".rstrip() + _dev_extra(dev)))
    for nic in info.get("switches") or []:
        out.append(("switch", f"{nic['tap']} on {nic['switch']}" + (f", VLAN {nic['vlan']}" if nic["vlan"] else "")
                    + " (made at start, removed at stop; kvm switch info " + nic["switch"] + ")"))
    out += guest_lines(info)
    for a in info.get("addresses") or []:
        out.append(("address", a["address"] + (f" (DHCP lease on {a['switch']}, mac {a['mac']})"
                                               if a["source"] == "lease" else " (guest agent)")))
    if info.get("allow_paths"):
        out.append(("allowed paths", " ".join(info["allow_paths"]) + " (AllowPath: disks and ISOs outside the folder)"))
    notes = info.get("unevaluated") or {}
    return [(k, f"{v} ({notes[ROW_SETTINGS[k]]})" if ROW_SETTINGS.get(k) in notes else v) for k, v in out]


def guest_lines(info):
    """vminfo's rows for TPM, Limits, CPUPin and Agent, each only when set."""
    out = []
    t = info.get("tpm")
    if t:
        where = (f"state in {t['state']}" + ("" if t["state_exists"] else ", made at the first start")
                 if t["kind"] == "swtpm" else t["device"])
        out.append(("tpm", f"{t['kind']} ({where})"))
    if info.get("limits"):
        pairs = tuple(info["limits"].items())
        out.append(("limits", guestconf.limits_text(pairs)))
    if info.get("cpu_pin"):
        out.append(("cpu pinning", " ".join(f"{p['vcpu']}:{p['host_cpu']}" for p in info["cpu_pin"])
                    + " (vCPU:host CPU)"))
    a = info.get("agent")
    if a:
        answer = a.get("answer")
        out.append(("agent", "yes" + (f" ({agent_text(answer)})" if answer else "")))
    return out


def agent_text(answer):
    """The agent's answer in a few words: the guest OS, its addresses."""
    words = []
    if answer.get("os"):
        words.append(answer["os"])
    if answer.get("addresses"):
        words.append(" ".join(answer["addresses"]))
    return ", ".join(words) or "answers"


def _dev_extra(dev):
    i = dev["info"]
    if not i:
        return ""
    if "mac" in i or "exists" in i:
        if not i.get("exists"):
            return " (interface not created yet)"
        return f" (mac {i.get('mac') or '?'}, bridge {i.get('bridge') or 'none'})"
    if i.get("found"):
        return f" ({i.get('vendor', '?')} {i.get('device', '')}, driver {i.get('driver')})".rstrip()
    return f" ({i.get('selector')} not found by pciconf)"
