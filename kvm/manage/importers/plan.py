"""The Plan an importer makes of a source folder (importers/__init__.py creates the VM from it)."""

from kvm.host.record import field, record


@record()
class Plan:
    """What an import will create."""

    name: str
    origin: str                       # what was imported, for the report and set.conf's header
    settings: dict = None             # set.conf values to write; None: set.conf is among `files`
    pre: list = field(default_factory=list)     # preRun lines
    post: list = field(default_factory=list)    # postRun lines
    files: list = field(default_factory=list)   # (source Path, name in the VM folder, remove after?)
    texts: dict = field(default_factory=dict)   # name in the VM folder -> (bytes, mode): files written
    disks: list = field(default_factory=list)   # names among `files` that are disks: copied 0600
    allow_paths: list = field(default_factory=list)  # AllowPath entries: what stays outside the VM folder
    report: list = field(default_factory=list)  # "key=value: why" for what was not mapped
    fresh_vars: bool = False          # a UEFI guest without vars of its own gets the template's
    switches: dict = field(default_factory=dict)  # kvm switches to write (name -> SwitchConfig) when missing
    rename_from: str = ""             # shell kvm: the folder's own name, when NAME differs
