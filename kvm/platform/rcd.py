"""Per-VM rc.d scripts: pure rendering, telling ours from others', and the rc.conf variable.

rc.subr evaluates `${name}_enable`, so the rc name must be an sh identifier: `-` and
`.` in VM names become `_`; the real VM name is kept in the script's own variable.
A script is ours when it carries our marker line, or is one the shell toolkit wrote
(it refers to `${vm_dir}`).
"""

import re
from pathlib import Path

from kvm import __version__, host
from kvm.host import paths
from kvm.host.record import record
from kvm.platform import systemd

MARKER = "# kvm-rc-script: "
DEFAULTS = {"require": "NETWORKING", "before": "", "keyword": "shutdown"}
HOST_WIDE = "kvm"  # the host-wide service's rc name (rc.d/kvm, kvm_enable): never a VM's
STOP_TIMEOUT = 80  # fits rc.shutdown's 90 s rcshutdown_timeout with room for postRun


def rc_name(vm_name):
    """The rc.d service name for a VM: an sh identifier."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", vm_name)
    return "_" + name if name[0].isdigit() else name


@record()
class Script:
    """An rc.d script file and what it is for."""

    path: Path
    vm: str
    rcname: str
    require: str = ""
    before: str = ""
    keyword: str = ""
    shell_toolkit: bool = False
    timeout: int = STOP_TIMEOUT  # the `dorc --timeout` default written into the script
    unit: bool = False  # a systemd unit (kvm/platform/systemd.py), enabled by a symlink, not by rc.conf

    @property
    def rcvar(self):
        return f"{self.rcname}_enable"

    @property
    def variables(self):
        """The rc.conf variables the script reads: ours to move or remove with it (a unit: none)."""
        return () if self.unit else (self.rcvar, f"{self.rcname}_timeout")


def render(vm_name, root_path, require=None, before=None, keyword=None, timeout=STOP_TIMEOUT, rcdir=None,
           unit=False, switches=False):
    """The rc.d script text for a VM (unit: the systemd unit); rcdir: the folder it goes in (its
    fellows are pressed at shutdown together)."""
    require = DEFAULTS["require"] if require is None else require
    before = DEFAULTS["before"] if before is None else before
    keyword = DEFAULTS["keyword"] if keyword is None else keyword
    if unit:
        return systemd.render(vm_name, rc_name(vm_name), root_path, require, before, keyword, timeout,
                              __version__, switches)
    from kvm.conf.templating import render as render_template
    rcdir = paths.current().rcdir if rcdir is None else rcdir
    return render_template("rc.j2", root_path, vm=vm_name, rcname=rc_name(vm_name), root=str(root_path),
                           rcdir=str(rcdir), require=require, before=before, keyword=keyword,
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
    unit = re.search(rf"^{re.escape(systemd.MARKER)}(\S+)\s*$", text, re.M)
    if unit:
        tm = re.search(r"^# TIMEOUT:[ \t]*(\d+)\s*$", text, re.M)
        return Script(Path(path), unit.group(1), Path(path).name.removesuffix(".service"),
                      _header(text, "REQUIRE"), _header(text, "BEFORE"), _header(text, "KEYWORD"), False,
                      int(tm.group(1)) if tm else STOP_TIMEOUT, unit=True)
    m = re.search(rf"^{re.escape(MARKER)}(\S+)\s*$", text, re.M)
    if m and m.group(1) != "(host-wide)":
        vm = m.group(1)
        shell = False
    elif "${vm_dir}" in text:
        nm = re.search(r'^name="?([^"\n]+)"?', text, re.M)
        vm, shell = (nm.group(1) if nm else Path(path).name), True
    else:
        return None
    tm = re.search(r'^: \$\{\w+_timeout:="(\d+)"\}', text, re.M)
    return Script(Path(path), vm, Path(path).name, _header(text, "REQUIRE"), _header(text, "BEFORE"),
                  _header(text, "KEYWORD"), shell, int(tm.group(1)) if tm else STOP_TIMEOUT)


def where(rcdir=None):
    """The system paths in force, with `dorc --rcdir` (when given) as the rc.d folder: passed down,
    never written into os.environ (where sysrc, hooks and every child would inherit it)."""
    found = paths.current()
    if rcdir:
        found.rcdir = found.unitdir = Path(rcdir)  # the folder of whichever dorc writes
    return found


def folder(at=None):
    """The folder our scripts go in: the rc.d folder, or the systemd unit folder."""
    at = at or paths.current()
    return at.unitdir if systemd.in_use() else at.rcdir


def script_path(vm_name, at=None):
    """Where the VM's rc.d script (or systemd unit) goes."""
    if systemd.in_use():
        return folder(at) / systemd.unit_name(rc_name(vm_name))
    return folder(at) / rc_name(vm_name)


def base_script(rcname, at=None):
    """The base system's rc.d script (or the host's unit) of that name (/etc/rc.d/sshd), or None."""
    if systemd.in_use():
        return systemd.base_unit(rcname, at)
    path = (at or paths.current()).base_rcdir / rcname
    return path if path.exists() else None


def our_script(vm_name, at=None):
    """The VM's rc.d script when there is one of ours, else None."""
    found = parse(script_path(vm_name, at))
    return found if found and found.vm == vm_name else None


def our_scripts(root, at=None):
    """Every rc.d script of ours that points into this root."""
    out = []
    where_ = folder(at)
    if not where_.is_dir():
        return out
    for path in sorted(p for p in where_.iterdir() if p.is_file()):
        found = parse(path)
        if found and (str(root.path) in path.read_text(errors="replace") or found.shell_toolkit):
            out.append(found)
    return out


def sysrc(*args, at=None):
    """sysrc on the configured rc.conf."""
    return host.run(["sysrc", "-f", str((at or paths.current()).rcconf), *args])


def rcconf_value(var, at=None):
    """The rc.conf value of var, or None when unset (or empty)."""
    res = host.run(["sysrc", "-f", str((at or paths.current()).rcconf), "-i", "-n", var],
                   mutating=False, check=False)
    value = res.stdout.strip()
    return value if res.status == 0 and value else None


def vars_are_ours(script, at=None):
    """True when the script's rc.conf variables belong to it alone: a base-system service of the
    same rc name (a VM called sshd or zfs, from before kvm refused such names) reads them too,
    and then kvm leaves them to the admin."""
    return base_script(script.rcname, at) is None


def remove_script(script, at=None):
    """Remove an rc.d script of ours: its rc.conf variables first, then the file, so a kill in
    between leaves the script, which names what is left to remove."""
    if script.unit:
        systemd.disable(script.path)
    elif vars_are_ours(script, at):
        for var in script.variables:
            if rcconf_value(var, at) is not None:
                sysrc("-i", "-x", var, at=at)
    host.remove_file(script.path)
    if script.unit:
        systemd.reload(script.path.parent)
