"""Per-VM rc.d scripts: pure rendering, telling ours from others', and the rc.conf variable.

rc.subr evaluates `${name}_enable`, so the rc name must be an sh identifier: `-` and
`.` in VM names become `_`; the real VM name is kept in the script's own variable.
A script is ours when it carries our marker line, or is one the shell toolkit wrote
(it refers to `${vm_dir}`).
"""

import re
from dataclasses import dataclass
from pathlib import Path

from . import __version__, host, paths
from .errors import PermissionDenied, StateError

MARKER = "# kvm-rc-script: "
DEFAULTS = {"require": "NETWORKING", "before": "", "keyword": "shutdown"}
STOP_TIMEOUT = 80  # fits rc.shutdown's 90 s rcshutdown_timeout with room for postRun


def rc_name(vm_name):
    """The rc.d service name for a VM: an sh identifier."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", vm_name)
    return "_" + name if name[0].isdigit() else name


@dataclass
class Script:
    """An rc.d script file and what it is for."""

    path: Path
    vm: str
    rcname: str
    require: str = ""
    before: str = ""
    keyword: str = ""
    shell_toolkit: bool = False

    @property
    def rcvar(self):
        return f"{self.rcname}_enable"


def render(vm_name, root_path, require=None, before=None, keyword=None, timeout=STOP_TIMEOUT):
    """The rc.d script text for a VM."""
    from .templating import render as render_template
    return render_template("rc.j2", root_path, vm=vm_name, rcname=rc_name(vm_name), root=str(root_path),
                           require=DEFAULTS["require"] if require is None else require,
                           before=DEFAULTS["before"] if before is None else before,
                           keyword=DEFAULTS["keyword"] if keyword is None else keyword,
                           timeout=timeout, version=__version__)


def _header(text, field):
    m = re.search(rf"^# {field}:[ \t]*(.*)$", text, re.M)
    return m.group(1).strip() if m else ""


def parse(path):
    """A Script when `path` is one of ours (or the shell toolkit's), else None."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    m = re.search(rf"^{re.escape(MARKER)}(\S+)\s*$", text, re.M)
    if m and m.group(1) != "(host-wide)":
        vm = m.group(1)
        shell = False
    elif "${vm_dir}" in text:
        nm = re.search(r'^name="?([^"\n]+)"?', text, re.M)
        vm, shell = (nm.group(1) if nm else Path(path).name), True
    else:
        return None
    return Script(Path(path), vm, Path(path).name, _header(text, "REQUIRE"), _header(text, "BEFORE"),
                  _header(text, "KEYWORD"), shell)


def script_path(vm_name):
    """Where the VM's rc.d script goes."""
    return paths.current().rcdir / rc_name(vm_name)


def check_writable_slot(vm_name):
    """Refuse when the rc.d path holds a script that is not ours, or one of another VM (collision)."""
    path = script_path(vm_name)
    if path.exists():
        found = parse(path)
        if found is None:
            raise StateError(f"{path} exists and is not a kvm script: not overwriting it", vm=vm_name)
        if found.vm != vm_name:
            raise StateError(f"rc name '{rc_name(vm_name)}' is already used by VM '{found.vm}' "
                             f"({path}); rename one of them", vm=vm_name)
    folder = paths.current().rcdir
    if not folder.is_dir():
        raise StateError(f"rc.d folder {folder} does not exist", vm=vm_name)
    import os
    if not os.access(folder, os.W_OK) and not host.dry_run():
        raise PermissionDenied(f"rc.d folder {folder} is not writable", vm=vm_name)
    return path


def our_script(vm_name):
    """The VM's rc.d script when there is one of ours, else None."""
    found = parse(script_path(vm_name))
    return found if found and found.vm == vm_name else None


def our_scripts(root):
    """Every rc.d script of ours that points into this root."""
    out = []
    folder = paths.current().rcdir
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        found = parse(path)
        if found and (str(root.path) in path.read_text(errors="replace") or found.shell_toolkit):
            out.append(found)
    return out


def sysrc(*args, check=True):
    """sysrc on the configured rc.conf."""
    return host.run(["sysrc", "-f", str(paths.current().rcconf), *args], check=check)


def enabled_value(rcvar):
    """The rc.conf value of rcvar, or None."""
    res = host.run(["sysrc", "-f", str(paths.current().rcconf), "-i", "-n", rcvar], mutating=False, check=False)
    value = res.stdout.strip()
    return value if res.status == 0 and value else None


def remove_script(script):
    """Remove an rc.d script of ours and its _enable variable."""
    host.remove_file(script.path)
    sysrc("-i", "-x", script.rcvar)
