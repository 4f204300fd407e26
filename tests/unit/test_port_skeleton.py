"""The FreeBSD port skeleton stays in step with the project: version, dependencies, options."""

import configparser
import re

from kvm import __version__
from tests.conftest import REPO

PORT = REPO / "packaging" / "freebsd" / "sysutils" / "py-kvm"


def variables():
    """{VAR: value} of the port's Makefile (continuation lines joined, comments dropped)."""
    text = (PORT / "Makefile").read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Z0-9_]+)=\t+(.*?)\s*(#.*)?$", line)
        if m:
            out[m.group(1)] = " ".join(m.group(2).split())
    return out


def test_makefile_follows_the_python_port_conventions():
    v = variables()
    assert v["PORTNAME"] == "kvm" and v["PKGNAMEPREFIX"] == "${PYTHON_PKGNAMEPREFIX}"
    assert v["CATEGORIES"].split()[0] == "sysutils" and "python" in v["CATEGORIES"].split()
    assert v["USES"].startswith("python")
    assert set(v["USE_PYTHON"].split()) == {"distutils", "autoplist"}
    assert v["DISTVERSION"] == __version__  # the distfile is the sdist of this version
    assert (PORT / "Makefile").read_text().rstrip().endswith(".include <bsd.port.mk>")
    # the Handbook's layout: a tab after '=', never spaces
    assert not re.search(r"^[A-Z_]+= ", (PORT / "Makefile").read_text(), re.M)


def test_every_install_requirement_is_a_run_dependency():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    needed = {re.split(r"[<>=!~ ]", r.strip())[0].lower()
              for r in cfg["options"]["install_requires"].splitlines() if r.strip()}
    deps = variables()["RUN_DEPENDS"].lower()
    for name in needed:
        assert "${python_pkgnameprefix}" + name in deps, name


def test_options_pyzfs_edk2_grub_each_described_and_pulling_their_package():
    v = variables()
    assert set(v["OPTIONS_DEFINE"].split()) == {"PYZFS", "EDK2", "GRUB"}
    for opt in v["OPTIONS_DEFINE"].split():
        assert v[f"{opt}_DESC"] and v[f"{opt}_RUN_DEPENDS"]
    assert v["EDK2_RUN_DEPENDS"].startswith("edk2-bhyve>")  # the packages kvminst names
    assert v["GRUB_RUN_DEPENDS"].startswith("grub2-bhyve>")
    assert "pyzfs" in v["PYZFS_RUN_DEPENDS"]


def test_pkg_descr_and_message():
    descr = (PORT / "pkg-descr").read_text()
    assert descr.strip() and all(len(line) <= 80 for line in descr.splitlines())
    assert "pkg-message" in variables()["SUB_FILES"]
    assert "kvminst" in (PORT / "files" / "pkg-message.in").read_text()
