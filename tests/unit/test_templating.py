"""Compiled templates are kept in RUN_DIR/host/templates (issue 25: parsing and compiling them cost
more than the rest of vmcreate --from's Python): keyed by the template's text, in a folder only root
writes, read but never written by a dry run."""

import os

import pytest

from kvm.conf import templating
from kvm.host import mode


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    path = tmp_path / "run"
    monkeypatch.setenv("KVM_RUN_DIR", str(path))
    monkeypatch.setattr(templating, "_envs", {})
    return path


def cache_files(run_dir):
    folder = run_dir / "host" / "templates"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_template_is_compiled_once_and_an_edit_compiles_it_afresh(run_dir, tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "templates").mkdir(parents=True)
    (root / "templates" / "run.j2").write_text("first {{ name }}\n")
    assert templating.render("run.j2", root, name="web") == "first web\n"
    first = cache_files(run_dir)
    assert len(first) == 1 and first[0].startswith("__jinja2_")
    monkeypatch.setattr(templating, "_envs", {})  # as the next command, in a new process
    assert templating.render("run.j2", root, name="db") == "first db\n"
    assert cache_files(run_dir) == first
    (root / "templates" / "run.j2").write_text("second {{ name }}\n")  # the admin edits it
    monkeypatch.setattr(templating, "_envs", {})
    assert templating.render("run.j2", root, name="web") == "second web\n"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root" / "templates").mkdir(parents=True)
    (tmp_path / "root" / "templates" / "run.j2").write_text("Cores={{ cores }}\n")
    return tmp_path / "root"


def test_a_folder_others_may_write_is_not_used(run_dir, root):
    folder = run_dir / "host" / "templates"
    folder.mkdir(parents=True)
    os.chmod(folder, 0o777)  # code root would run: never from a folder someone else can write
    assert templating.render("run.j2", root, cores=2) == "Cores=2\n"
    assert cache_files(run_dir) == []


def test_a_dry_run_reads_the_cache_but_writes_nothing(run_dir, root, monkeypatch):
    monkeypatch.setattr(mode, "_state", dict(mode._state, dry_run=True))
    assert templating.render("run.j2", root, cores=2) == "Cores=2\n"
    assert not run_dir.exists()
    monkeypatch.setattr(mode, "_state", dict(mode._state, dry_run=False))
    templating.render("run.j2", root, cores=2)   # a real run fills the cache
    made = {p: p.stat().st_mtime_ns for p in (run_dir / "host" / "templates").iterdir()}
    (root / "templates" / "run.j2").write_text("Cores={{ cores }} # edited\n")
    monkeypatch.setattr(templating, "_envs", {})
    monkeypatch.setattr(mode, "_state", dict(mode._state, dry_run=True))
    assert templating.render("run.j2", root, cores=3) == "Cores=3 # edited\n"
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "host" / "templates").iterdir()} == made
