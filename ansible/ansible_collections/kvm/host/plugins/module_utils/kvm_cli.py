# -*- coding: utf-8 -*-
# Copyright: the kvm project
# BSD-2-Clause (see the project's README)

"""Running the kvm commands from a module: argv, JSON out, the JSON error object, exit statuses."""

from __future__ import annotations

import json
import shlex

SCHEMA = 1          # the version of kvm's JSON contract these modules read
NOT_FOUND = 6
EXISTS = 7
REFUSED = 8
NOTHING_TO_DO = 9

COMMON_ARGS = dict(
    kvm_bin=dict(type="str", default="kvm"),
    root=dict(type="path"),
)


class KvmFailed(Exception):
    """A kvm command failed: its exit status, its error text and (with --json) its error object."""

    def __init__(self, argv, rc, message, error=None):
        super().__init__(message)
        self.argv = argv
        self.rc = rc
        self.message = message
        self.error = error or {}


class Kvm(object):
    """The kvm commands of one install root, run through the module (check mode is theirs: -n)."""

    def __init__(self, module, root=None):
        self.module = module
        self.base = shlex.split(module.params["kvm_bin"])
        self.root = root if root is not None else module.params.get("root")
        self.commands = []

    def argv(self, command, *args):
        """kvm [--root ROOT] COMMAND ARGS."""
        root = ["--root", self.root] if self.root else []
        return self.base + root + [command] + [str(a) for a in args]

    def run(self, command, *args, **kw):
        """(rc, stdout, stderr); KvmFailed unless rc is 0 or in ok=(...)."""
        ok = kw.get("ok", ())
        argv = self.argv(command, *args)
        self.commands.append(" ".join(shlex.quote(a) for a in argv))
        rc, out, err = self.module.run_command(argv)
        if rc != 0 and rc not in ok:
            raise failure(argv, rc, err)
        return rc, out, err

    def json(self, command, *args, **kw):
        """(rc, the JSON document on stdout, or None when the command failed with a status in ok)."""
        rc, out, err = self.run(command, *(list(args) + ["--json"]), **kw)
        if rc != 0 and not out.strip():
            return rc, None
        return rc, checked(json.loads(out))

    def vminfo(self, name):
        """vminfo NAME --json, or None when there is no such VM."""
        return self.json("vminfo", name, ok=(NOT_FOUND,))[1]


def checked(value):
    """value, after checking it speaks the contract's version (each object of a list too)."""
    for item in value if isinstance(value, list) else [value]:
        said = item.get("schema") if isinstance(item, dict) else None
        if said != SCHEMA:
            raise KvmFailed([], 1, "kvm printed JSON of schema %r; this collection reads schema %d: "
                            "upgrade the collection or kvm" % (said, SCHEMA))
    return value


def failure(argv, rc, err):
    """A KvmFailed from a command's stderr: its JSON error object when it printed one (--json),
    else its last line."""
    lines = [line for line in (err or "").splitlines() if line.strip()]
    if lines:
        try:
            error = json.loads(lines[-1])
        except ValueError:
            error = None
        if isinstance(error, dict) and "error" in error:
            who = "%s: %s" % (error.get("prog"), error["vm"]) if error.get("vm") else error.get("prog")
            return KvmFailed(argv, rc, "%s: %s" % (who, error["error"]), error)
    return KvmFailed(argv, rc, lines[-1] if lines else "exit status %d" % rc)


def fail(module, exc, **result):
    """module.fail_json for a KvmFailed: its message, exit status, error object and command."""
    module.fail_json(msg=exc.message, rc=exc.rc, error=exc.error, cmd=" ".join(shlex.quote(a) for a in exc.argv),
                     **result)


def dry(module):
    """['-n'] in check mode: the commands' own dry run."""
    return ["-n"] if module.check_mode else []
