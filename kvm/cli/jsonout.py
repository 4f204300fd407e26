"""The --json contract (kvm(8) JSON OUTPUT): every object printed carries "schema": SCHEMA, and
with --json an error is one JSON object on stderr. The JSON Schema of each output is shipped in
kvm/schema/ (schema_dir()). Only json is imported: vmlist and status start fast."""

import json
import os
import sys

from kvm.errors import one_line

# the contract's version: raised when a key is removed or changes meaning (adding keys does not)
SCHEMA = 1


def stamped(value):
    """value with "schema" in it: a dict, or each dict of a list (vmlist, snap list, image list)."""
    if isinstance(value, dict):
        return {"schema": SCHEMA, **value}
    return [stamped(v) for v in value]


def emit(value, indent=1, sort_keys=False):
    """Print value, stamped, as JSON on stdout."""
    print(json.dumps(stamped(value), indent=indent, sort_keys=sort_keys), flush=True)


def error_object(prog, message, status, kind, vm=None, hint=None):
    """The one error object: what failed, the exit status and its word, the VM, a hint or null."""
    return {"schema": SCHEMA, "prog": prog, "error": one_line(message), "exit": status, "kind": kind,
            "vm": vm, "hint": hint}


def print_error(prog, message, status, kind, vm=None, hint=None):
    """The error object as one line on stderr."""
    print(json.dumps(error_object(prog, message, status, kind, vm, hint)), file=sys.stderr, flush=True)


def wanted(argv):
    """True when a command line asks for --json (known before it is parsed: a usage error of a
    --json command line is a JSON object too)."""
    return "--json" in argv


def schema_dir():
    """The folder of the shipped JSON Schema files (package data)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schema")
