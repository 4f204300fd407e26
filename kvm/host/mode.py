"""What this process is doing with the host: for real or as a dry run (mutating steps printed on
stdout and skipped), and whether every command is logged as a copy-pasteable line (--debug)."""

import os
import sys
import time

_state = {"dry_run": False, "out": None, "debug": False}
_T0 = time.perf_counter()
# KVM_DEBUG_TIMES=1: each --debug line ends with a sh comment saying when it came, in ms since kvm
# was loaded (its interpreter's start-up comes before): where a command's time goes, step by step
_TIMES = os.environ.get("KVM_DEBUG_TIMES", "") not in ("", "0")


def set_debug(enabled):
    """Log every command as a copy-pasteable line on stderr (--debug)."""
    _state["debug"] = bool(enabled)


def debug_line(text):
    """One line of --debug's log (a step that is no command line, e.g. a forked helper)."""
    _debug("%s", text)


def _debug(fmt, *args):
    if _state["debug"]:
        when = f"    # {(time.perf_counter() - _T0) * 1000:.1f} ms (pid {os.getpid()})" if _TIMES else ""
        print("+ " + (fmt % args) + when, file=sys.stderr, flush=True)


def set_dry_run(enabled, out=None):
    """Switch dry-run on or off for this process; planned actions go to `out` (stdout)."""
    _state["dry_run"] = bool(enabled)
    _state["out"] = out


def dry_run():
    """True when mutating calls are only printed."""
    return _state["dry_run"]


def plan(text):
    """Print one planned step of a dry run (for the steps that are no command)."""
    _plan(text)


def _plan(text):
    out = _state["out"] or sys.stdout
    print(text, file=out, flush=True)
