"""Rendering jinja2 templates from the root's templates/ (if customised) or the project's.

Parsing and compiling a template costs more than rendering it (some 40 ms, and 30 ms more for the
lexer's regular expressions, against 1 ms): the compiled code is kept in RUN_DIR/host/templates, a
folder of root's that nobody else may write (it is code root runs), keyed by the template's path and
its text, so an edited template is compiled afresh. Without a safe folder nothing is cached.
"""

import os
from pathlib import Path

from kvm.conf.config import sh_quote
from kvm.errors import KvmError
from kvm.host import lock, mode, paths

CACHE_DIR = "templates"   # in RUN_DIR/host
_envs = {}


def render(template, root_path=None, **values):
    """Render templates/TEMPLATE with the given values."""
    folders = []
    if root_path is not None and (Path(root_path) / "templates").is_dir():
        folders.append(str(Path(root_path) / "templates"))
    folders += [str(base / "templates") for base in paths.current().share_dirs()]
    return _environment(folders).get_template(template).render(**values)


def _environment(folders):
    """One jinja2 Environment per list of folders, run dir and mode, for the life of the process."""
    key = (tuple(folders), str(paths.current().run_dir), mode.dry_run())
    env = _envs.get(key)
    if env is None:
        import jinja2  # only the commands that render pay for this import
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(folders), keep_trailing_newline=True,
                                 undefined=jinja2.StrictUndefined, autoescape=False,
                                 bytecode_cache=_bytecode_cache(jinja2))
        env.filters["shq"] = lambda value: sh_quote(str(value))
        _envs[key] = env
    return env


def _bytecode_cache(jinja2):
    """The compiled templates' cache in RUN_DIR/host/templates, or None: a dry run only reads it
    (it makes no folder and writes no file), and a folder that is a link, or writable by another
    user than us, is not used."""
    folder = paths.current().run_dir / lock.HOST_DIR / CACHE_DIR
    try:
        if mode.dry_run():
            if not folder.is_dir():
                return None
        else:
            lock.make_safe_dirs(lock.run_dir(), lock.host_dir(), folder)
        lock.check_safe_dir(folder)
        st = os.lstat(folder)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
    except (KvmError, OSError):
        return None
    if mode.dry_run():
        class ReadOnly(jinja2.FileSystemBytecodeCache):
            def dump_bytecode(self, bucket):
                pass
        return ReadOnly(str(folder))
    return jinja2.FileSystemBytecodeCache(str(folder))
