"""Compiled modules for the interpreter the commands run.

Every command is a new interpreter: without a `__pycache__` next to kvm's modules (a checkout or an
editable install run as is, a host with PYTHONDONTWRITEBYTECODE=1) each one compiles the modules it
imports again, some 10 to 40 ms per command and, measured, 0.7 s more downtime in a warm vmsend.
`pip install .` compiles them (its default); kvminst makes sure of it for the interpreter the
launchers name, whichever way kvm was installed.
"""

import os
import sys

# run by another interpreter (kvminst --python) as `python -c`: prints "COMPILED FAILED FOLDER"
SCRIPT = """
import os, sys
sys.dont_write_bytecode = False
import kvm
from kvm.host.bytecode import compile_folder
print(*compile_folder(os.path.dirname(kvm.__file__)), os.path.dirname(kvm.__file__))
"""


def compile_folder(folder):
    """Compile every module under folder whose cached bytecode is missing or older than its source;
    (how many were compiled, how many could not be written)."""
    import importlib.util
    import py_compile
    done = failed = 0
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".py"):
                continue
            source = os.path.join(top, name)
            cached = importlib.util.cache_from_source(source)
            try:
                if os.stat(cached).st_mtime >= os.stat(source).st_mtime:
                    continue
            except OSError:
                pass
            try:
                py_compile.compile(source, cfile=cached, doraise=True)
                done += 1
            except (OSError, py_compile.PyCompileError):
                failed += 1
    return done, failed


def ensure_compiled(python):
    """Compile kvm's modules for `python` (this interpreter, or another one's copy of kvm): returns
    (compiled, failed, folder); None when it could not be asked."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        import kvm
        folder = os.path.dirname(kvm.__file__)
        return (*compile_folder(folder), folder)
    from kvm import host
    res = host.run([python, "-c", SCRIPT], mutating=False, check=False)
    try:
        done, failed, folder = res.stdout.split(None, 2)
        return int(done), int(failed), folder.strip()
    except ValueError:
        return None
