"""image import|publish|list|destroy: images in ROOT's dataset/images/NAME for vmcreate --from."""

import sys
import time

from kvm import vm as vmmod
from kvm.cli import common, jsonout
from kvm.errors import UsageError
from kvm.manage.info import human_size
from kvm.storage import images
from kvm.storage.snap import hold

PROG = "image"
VERBS = ("import", "publish", "list", "destroy")


def build_parser():
    p = common.parser(PROG, "Images to create VMs from in an instant (vmcreate NAME --from IMAGE): "
                            "import NAME FILE [--os HINT] (raw as is; qcow2, vmdk... converted with "
                            "qemu-img), publish VM NAME [--snapshot S] (a VM's snapshot, without its "
                            "MACs, UEFI vars and logs), list, destroy NAME (refused while clones exist).",
                      dry_run=True, intermixed=True)
    p.add_argument("verb", choices=VERBS)
    p.add_argument("args", nargs="*", help="import: NAME FILE; publish: VM NAME; destroy: NAME")
    p.add_argument("--os", default="", help="import: a hint of the image's OS (shown by list)")
    p.add_argument("--snapshot", help="publish: the VM's snapshot to publish (default: a new one)")
    p.add_argument("-H", dest="scripted", action="store_true", help="list: no header, tab-separated")
    p.add_argument("--json", action="store_true", help="list: JSON; import, publish: the image made as JSON; "
                                                       "destroy: what it destroyed; any verb: an error as JSON")
    return p


def _want(args, n, usage):
    if len(args.args) != n:
        raise UsageError(f"usage: image {args.verb} {usage}")
    return args.args


def _progress(done, size):
    end = "\n" if done >= size else ""
    print(f"\r{PROG}: copied {done >> 20} of {size >> 20} MiB", end=end, file=sys.stderr, flush=True)


def body(args):
    root = common.get_root(args)
    if args.verb == "list":
        _want(args, 0, "[-H] [--json]")
        rows = images.listing(root)
        if args.json:
            jsonout.emit(rows, indent=2)
            return 0
        common.print_table(["NAME", "SIZE", "USED", "CLONES", "CREATED", "OS"],
                           [[r["name"], human_size(r["size"]), human_size(r["used"]), str(len(r["clones"])),
                             _when(r["created"]), r["os"] or "-"] for r in rows], args.scripted)
        return 0
    common.need_root_user()
    if args.verb == "import":
        name, path = _want(args, 2, "NAME FILE [--os HINT]")
        values = images.import_file(root, name, path, args.os, _progress)
        done = f"imported {name} ({values['format']}, sha256 {values['sha256']})"
        would = f"would import {name} ({values['format']})"  # its sha256 is known only once copied
    elif args.verb == "publish":
        vm_name, name = _want(args, 2, "VM NAME [--snapshot S]")
        vm = common.get_vm(args, root_user=True, name=vm_name)
        if vmmod.runtime(vm).active:
            common.warn(PROG, "the VM is running: this image is crash-consistent (like pulling the plug); "
                              "stop the VM for a clean one", vm=vm.name)
        with hold(vm, "image publish", running_ok=True):
            values = images.publish(root, vm, name, args.snapshot)
        done = f"published {vm_name} as image {name} ({values['source']})"
        would = f"would publish {vm_name} as image {name} ({values['source']})"
    else:
        (name,) = _want(args, 1, "NAME")
        dataset = images.destroy(root, name)
        done, would = f"destroyed image {name} ({dataset})", f"would destroy image {name} ({dataset})"
        if args.json:
            jsonout.emit({"name": name, "dataset": dataset, "destroyed": True, "dry_run": bool(args.dry_run)})
            return 0
    if args.json:
        jsonout.emit(made_json(root, name, values, args.dry_run), indent=2)
        return 0
    common.said(args, done, would)
    return 0


def made_json(root, name, values, dry_run):
    """image import|publish --json: the image as image list --json has it (in a dry run, what
    is known before the copy)."""
    row = {} if dry_run else next((r for r in images.listing(root) if r["name"] == name), {})
    known = {k: v for k, v in values.items() if isinstance(v, (str, int))}
    return {**known, **row, "name": name, "dry_run": bool(dry_run)}


def _when(epoch):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else "-"
