"""Reading set.conf as /bin/sh does, without ever running it unless asked.

set.conf is sh. `parse_text` gives exactly what `/bin/sh` gives after `. ./set.conf` for
plain assignments (quotes, `$VAR`/`${VAR}`, comments, backslashes) and raises NeedsShell
for anything else. `read_text(..., tolerant=True)` never needs sh: a statement it cannot
evaluate leaves its variable *unevaluated* (with the line and the reason), for commands
that only read. Only the supervisor's launch evaluates a file with `/bin/sh`, and only
after the file and its folder were checked (see config.load): `evaluate_text`.

Deliberate differences from sh, each refused with one line naming the key and the line:
a variable used before it is set (sh gives ""), CR line ends (sh keeps the CR in the
value), a byte order mark (sh makes the first line a command), and `Mem = "4G"` or
`Mem= 4G` (sh runs a command and leaves Mem unset).
"""

import errno
import os
import re
import stat
import time

from kvm import host
from kvm.errors import ConfigError, PermissionDenied

CONF = "set.conf"
CONF_MAX = 256 << 10  # bytes: set.conf is a page of settings; anything larger is no set.conf
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENOENT_TRIES = 40   # zfs-fuse: an open racing a rename-over may see no file at all (see read_text)


class NeedsShell(Exception):
    """The file uses sh beyond plain assignments; args[0] says what."""

    @property
    def why(self):
        return self.args[0] if self.args else "needs sh"


class Assignment:
    """One `NAME=value` statement: its value and where it stands in the text."""

    __slots__ = ("name", "value", "start", "end", "line", "alone")

    def __init__(self, name, value, start, end, line, alone=False):
        self.name, self.value, self.start, self.end, self.line = name, value, start, end, line
        self.alone = alone  # the only statement on its line(s)


def _key_on_line(line):
    m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", line)
    return m.group(1) if m else "?"


def check_text(text):
    """Refuse what sh would read differently from what the file looks like (BOM, CR, NUL)."""
    if "\0" in text:
        raise ConfigError(f"{CONF} holds a NUL byte: not a text file")
    if text.startswith("\ufeff"):
        raise ConfigError(f"{CONF} line 1: {_key_on_line(text[1:])}: the file starts with a byte order "
                          f"mark, which sh reads as part of the first word: save it without the BOM")
    if "\r" in text:
        number = text.count("\n", 0, text.index("\r")) + 1
        line = text.split("\n")[number - 1]
        raise ConfigError(f"{CONF} line {number}: {_key_on_line(line)}: carriage return (DOS line end), "
                          f"which sh keeps in the value: convert the file with tr -d '\\r'")


class _Reader:
    def __init__(self, text, tolerant=False):
        check_text(text)
        self.text, self.pos, self.values, self.assignments = text, 0, {}, []
        self.tolerant = tolerant
        self.unevaluated = {}   # name -> "line N not evaluated: why"
        self.skipped = []       # notes for statements that assign no known name

    def line(self, pos=None):
        return self.text.count("\n", 0, self.pos if pos is None else pos) + 1

    def fail(self, message, pos=None):
        raise ConfigError(f"{CONF} line {self.line(pos)}: {message}")

    def peek(self, k=0):
        i = self.pos + k
        return self.text[i] if i < len(self.text) else ""

    def run(self):
        line_has = 0
        while self.pos < len(self.text):
            c = self.peek()
            if c in " \t;":
                self.pos += 1
            elif c == "\\" and self.peek(1) == "\n":
                self.pos += 2
            elif c == "\n":
                self._close_line(line_has)
                line_has = 0
                self.pos += 1
            elif c == "#":
                self._to_line_end()
            else:
                self.statement()
                line_has += 1
        self._close_line(line_has)
        return self.values

    def _to_line_end(self):
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def _close_line(self, count):
        if count == 1 and self.assignments:
            self.assignments[-1].alone = True

    def statement(self):
        start = self.pos
        try:
            self.assignment()
        except NeedsShell as exc:
            if not self.tolerant:
                raise
            self.skip(start, exc.why)

    def skip(self, start, why):
        """Tolerant mode: pass over the statement; its variable becomes unevaluated."""
        m = NAME_RE.match(self.text, start)
        name = m.group(0) if m and self.text[m.end():m.end() + 1] == "=" else None
        note = f"line {self.line(start)} not evaluated: {why}"
        self.pos = _statement_end(self.text, start)
        if name:
            self.values.pop(name, None)
            self.unevaluated[name] = note
        else:
            self.skipped.append(note)

    def assignment(self):
        start = self.pos
        m = NAME_RE.match(self.text, self.pos)
        if m and re.match(r"[ \t]+=", self.text[m.end():]):
            self.fail(f"{m.group(0)}: spaces around '=' make sh run {m.group(0)} as a command and leave it "
                      f"unset: write {m.group(0)}=\"value\"", start)
        if not m or self.text[m.end():m.end() + 1] != "=":
            raise NeedsShell("not a plain assignment")
        name = m.group(0)
        self.pos = m.end() + 1
        if self.peek() == "~":
            raise NeedsShell("uses ~")
        value = self.word()
        if self.peek() not in ("", " ", "\t", "\n", ";", "#"):
            raise NeedsShell("not a plain assignment")
        self._no_command_after(name, start)
        self.values[name] = value
        self.unevaluated.pop(name, None)
        self.assignments.append(Assignment(name, value, start, self.pos, self.line(start)))

    def _no_command_after(self, name, start):
        """`Mem= 4G` sets Mem only for a command `4G` in sh: refuse it rather than guess."""
        rest = re.match(r"[ \t]+([^ \t\n;&|#()<>\\]\S*)", self.text[self.pos:])
        if rest and not re.match(r"[A-Za-z_][A-Za-z0-9_]*=", rest.group(1)):
            self.fail(f"{name}: '{rest.group(1)}' follows on the same line, so sh runs it as a command "
                      f"and leaves {name} unset: quote the value or remove the space", start)

    def word(self):
        out = []
        while self.pos < len(self.text):
            c = self.peek()
            if c in " \t\n;":
                break
            if c in "&|<>()`":
                raise NeedsShell("uses `...`" if c == "`" else f"uses '{c}'")
            if c == "'":
                out.append(self.single())
            elif c == '"':
                out.append(self.double())
            elif c == "\\":
                nxt = self.peek(1)
                if nxt == "":
                    self.pos += 1
                    out.append("\\")
                elif nxt == "\n":
                    self.pos += 2
                else:
                    out.append(nxt)
                    self.pos += 2
            elif c == "$":
                out.append(self.dollar())
            else:
                out.append(c)
                self.pos += 1
        return "".join(out)

    def single(self):
        start = self.pos
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            self.fail("unterminated single quote", start)
        self.pos = end + 1
        return self.text[start + 1:end]

    def double(self):
        start = self.pos
        self.pos += 1
        out = []
        while True:
            c = self.peek()
            if c == "":
                self.fail("unterminated double quote", start)
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "`":
                raise NeedsShell("uses `...`")
            if c == "\\":
                nxt = self.peek(1)
                if nxt in ('"', "\\", "$", "`"):
                    out.append(nxt)
                    self.pos += 2
                elif nxt == "\n":
                    self.pos += 2
                else:
                    out.append("\\")
                    self.pos += 1
            elif c == "$":
                out.append(self.dollar())
            else:
                out.append(c)
                self.pos += 1

    def dollar(self):
        start = self.pos
        nxt = self.peek(1)
        if nxt == "{":
            m = NAME_RE.match(self.text, self.pos + 2)
            if not m or self.text[m.end():m.end() + 1] != "}":
                raise NeedsShell("uses ${...} beyond ${NAME}")
            self.pos = m.end() + 1
            return self.lookup(m.group(0), start)
        m = NAME_RE.match(self.text, self.pos + 1)
        if m:
            self.pos = m.end()
            return self.lookup(m.group(0), start)
        if nxt in ("", " ", "\t", "\n", '"', ";"):
            self.pos += 1
            return "$"  # a lone dollar is literal in sh
        raise NeedsShell("uses $(...)" if nxt == "(" else f"uses ${nxt}")

    def lookup(self, name, pos):
        if name in self.unevaluated:
            raise NeedsShell(f"uses ${name}, not evaluated")
        if name not in self.values:
            if self.skipped:
                raise NeedsShell(f"uses ${name}, which an unevaluated line may set")
            self.fail(f"${name} is used but not defined before", pos)
        return self.values[name]


def _statement_end(text, start):
    """Where a statement the reader cannot evaluate ends: the first newline outside quotes
    and parentheses (a rough sh lexer: good enough to go on reading, never to evaluate)."""
    i, depth, quote = start, 0, ""
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "'":
            i += 1
        elif quote:
            quote = "" if c == quote else quote
        elif c in "'\"`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif c == "\n" and depth == 0:
            return i
        i += 1
    return len(text)


def parse_text(text):
    """Values of a plain set.conf; raises NeedsShell when sh is needed, ConfigError when broken."""
    return _Reader(text).run()


def assignments(text):
    """The plain assignments of a text, with positions (for editing)."""
    reader = _Reader(text)
    reader.run()
    return reader.assignments


class Reading:
    """What the plain reader made of a text: values, and what it could not evaluate."""

    def __init__(self, values, unevaluated=None, skipped=()):
        self.values, self.unevaluated, self.skipped = values, dict(unevaluated or {}), list(skipped)

    @property
    def complete(self):
        return not (self.unevaluated or self.skipped)


def read_plain(text):
    """A Reading of the text that never runs anything."""
    reader = _Reader(text, tolerant=True)
    reader.run()
    return Reading(reader.values, reader.unevaluated, reader.skipped)


def evaluate_with_sh(path, sh="/bin/sh"):
    """Values after sourcing `path` with sh (`set -e -u`: a failing line or an unset variable is
    an error, not silently skipped); the file's own output is discarded."""
    script = 'set -a -e -u; . "$1" </dev/null >/dev/null; exec env -0'
    env = {"PATH": "/bin:/usr/bin:/sbin:/usr/sbin"}
    before = _sh_baseline(sh, env)
    res = host.run([sh, "-c", script, "sh", str(path)], mutating=False, check=False, env=env)
    if res.status != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"a line failed (sh exited {res.status})"
        raise ConfigError(f"{CONF}: {why.replace(str(path), CONF)}")
    values = {}
    for item in res.stdout.split("\0"):
        name, sep, value = item.partition("=")
        if sep and NAME_RE.fullmatch(name) and name not in before:
            values[name] = value
    return values


def evaluate_text(text):
    """Values of `text` through sh, from a private copy: sh reads exactly the text that was
    checked, not whatever the path names by the time sh opens it."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="kvm-conf.") as folder:  # 0700, ours
        copy = os.path.join(folder, CONF)
        with open(copy, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            fh.write(text)
        return evaluate_with_sh(copy)


_baseline = {}


def _sh_baseline(sh, env):
    """Names sh itself puts in the environment (PWD, SHLVL...), to leave out of the values."""
    if sh not in _baseline:
        res = host.run([sh, "-c", "exec env -0"], mutating=False, check=False, env=env)
        _baseline[sh] = {item.partition("=")[0] for item in res.stdout.split("\0") if item} | {"_", "OLDPWD"}
    return _baseline[sh] - {"PATH"} | {"PATH"}


def open_file(path):
    """A descriptor on `path`, opened without following a link (ELOOP when it is one).

    zfs-fuse answers ENOENT to an open that races a rename-over of the same name (an edit's
    atomic replace), though the name always exists: a vanished file is tried again for a
    moment while its folder is there. Real ZFS never needs the second try.
    """
    for attempt in range(ENOENT_TRIES):
        try:
            return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            if attempt == ENOENT_TRIES - 1 or not os.path.isdir(os.path.dirname(str(path)) or "."):
                raise
            time.sleep(0.005)


def read_text(path, trusted=False):
    """The text of set.conf, opened with open_file (a regular file, not a link).

    trusted: the opened file must be owned by root and not writable by group or others
    (checked on the descriptor read, so no swap between check and read).
    """
    try:
        fd = open_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{CONF} not found ({path})") from None
    except OSError as exc:
        why = "is a symbolic link: refusing it" if exc.errno == errno.ELOOP else exc.strerror
        raise ConfigError(f"{CONF} ({path}): {why}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{CONF} ({path}) is not a regular file")
        if trusted:
            check_owner(path, st)
        data = fh.read(CONF_MAX + 1) if st.st_size <= CONF_MAX else b""
        if st.st_size > CONF_MAX or len(data) > CONF_MAX:
            raise ConfigError(f"{CONF} ({path}) is larger than {CONF_MAX >> 10} KiB: not a settings file")
        return data.decode("utf-8", errors="surrogateescape")


def check_owner(path, st):
    """PermissionDenied unless `st` is root's and not writable by group or others."""
    if st.st_uid != 0:
        raise PermissionDenied(f"{path} is not owned by root (uid {st.st_uid}): it would run as root, "
                               f"refusing (chown root {path})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionDenied(f"{path} is writable by group or others: it would run as root, refusing "
                               f"(chmod go-w {path})")
