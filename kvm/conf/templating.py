"""Rendering jinja2 templates from the root's templates/ (if customised) or the project's."""

from pathlib import Path

from kvm.conf.config import sh_quote
from kvm.host import paths


def render(template, root_path=None, **values):
    """Render templates/TEMPLATE with the given values."""
    import jinja2  # only the commands that render pay for this import
    folders = []
    if root_path is not None and (Path(root_path) / "templates").is_dir():
        folders.append(str(Path(root_path) / "templates"))
    folders += [str(base / "templates") for base in paths.current().share_dirs()]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folders), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["shq"] = lambda value: sh_quote(str(value))
    return env.get_template(template).render(**values)
