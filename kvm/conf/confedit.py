"""Line-preserving edits of set.conf text: set or remove one variable, keep every other line."""

import re

from kvm.conf.shconf import CONF, Assignment, NeedsShell, assignments
from kvm.errors import ConfigError

SECRETS = ("VNCpassword",)   # settings whose value is a secret
SECRET_MODE = 0o640          # a set.conf holding one: no reading by others
SECRET_RE = re.compile(rf"^[ \t]*(?:export[ \t]+)?(?:{'|'.join(SECRETS)})=", re.M)


def holds_secret(text):
    """The text assigns a secret (VNCpassword), plainly or in a way only sh evaluates."""
    return bool(SECRET_RE.search(text))


def mode_for(text, current=0o644):
    """The mode for a set.conf text, whoever wrote it: as it was, but never readable by others when
    it holds a secret."""
    return current & SECRET_MODE if holds_secret(text) else current


def sh_quote(value):
    """A double-quoted sh word for value."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", value) + '"'


def _plain(text, name):
    try:
        found = [a for a in assignments(text) if a.name == name]
    except NeedsShell:
        found = None
    if found is None or any(not a.alone for a in found):
        # Fall back to whole lines `NAME=...` that are plain on their own.
        found = []
        offset = 0
        for number, line in enumerate(text.splitlines(keepends=True), 1):
            if re.match(rf"^\s*{name}=", line):
                try:
                    got = assignments(line)
                except NeedsShell:
                    raise ConfigError(f"{CONF} line {number}: cannot edit {name}: not a plain assignment")
                if len(got) != 1:
                    raise ConfigError(f"{CONF} line {number}: cannot edit {name}: not alone on its line")
                found.append(Assignment(name, got[0].value, offset + got[0].start, offset + got[0].end,
                                        number, True))
            offset += len(line)
    return found


def set_value(text, name, value):
    """Text with NAME set to value: the last plain assignment rewritten, or one appended."""
    found = _plain(text, name)
    new = f"{name}={sh_quote(value)}"
    if found:
        last = found[-1]
        return text[:last.start] + new + text[last.end:]
    if text and not text.endswith("\n"):
        text += "\n"
    return text + new + "\n"


def remove_value(text, name):
    """Text without any plain assignment of NAME (whole lines removed)."""
    found = _plain(text, name)
    for a in reversed(found):
        line_start = text.rfind("\n", 0, a.start) + 1
        line_end = text.find("\n", a.end)
        line_end = len(text) if line_end < 0 else line_end + 1
        rest = (text[line_start:a.start] + text[a.end:line_end]).strip()
        if rest and not rest.startswith("#"):
            text = text[:a.start] + text[a.end:]
        else:
            text = text[:line_start] + text[line_end:]
    return text


# ------------------------------------------------------------------ Devices items (vmdisk)

_WORD_RE = re.compile(r"""[^\s'"$`\\]*\Z""")


def add_item(text, name, item):
    """Text with `item` appended to the space-separated list NAME (Devices), in the last plain
    assignment's own quoting, so that `$LAN` and the like stay as written."""
    found = _plain(text, name)
    if not found:
        return set_value(text, name, item)
    last = found[-1]
    raw = text[last.start:last.end]
    head, value = raw[:len(name) + 1], raw[len(name) + 1:]
    sep = " " if last.value.strip() else ""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        new = head + value[:-1].rstrip() + sep + item + value[-1]
    elif _WORD_RE.match(value):
        new = f"{head}\"{value}{sep}{item}\""
    else:
        raise ConfigError(f"{CONF} line {last.line}: cannot add to {name}: not a plain quoted value")
    return text[:last.start] + new + text[last.end:]


def remove_item(text, name, item):
    """Text without the word `item` in the list NAME (the assignment that holds it literally)."""
    pattern = re.compile(r"(^|(?<=[\s\"'=]))" + re.escape(item) + r"(?=$|[\s\"'])")
    for a in reversed(_plain(text, name)):
        raw = text[a.start:a.end]
        body = raw[len(name) + 1:]
        m = pattern.search(body)
        if not m:
            continue
        before, after = body[:m.start()], body[m.end():]
        if before.endswith(" ") or before.endswith("\t"):
            before = before.rstrip(" \t")
        elif after[:1] in (" ", "\t"):
            after = after.lstrip(" \t")
        return text[:a.start] + raw[:len(name) + 1] + before + after + text[a.end:]
    raise ConfigError(f"{CONF}: {name} item '{item}' is not written as such in any plain {name}= line "
                      f"(it comes from a variable?): edit it with vmedit")
