"""The collection's one door to kvm (module_utils/kvm_cli.py): a JSON error object is read as such,
a text error by its last line, and JSON of another contract version is refused, not misread."""

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "ansible"))
kvm_cli = pytest.importorskip("ansible_collections.kvm.host.plugins.module_utils.kvm_cli")


def test_a_json_error_object_gives_message_status_and_kind():
    err = ('{"schema": 1, "prog": "snap", "error": "no such VM (x)", "exit": 6, "kind": "not-found", '
           '"vm": "web", "hint": null}\n')
    exc = kvm_cli.failure(["kvm", "snap", "list", "web", "--json"], 6, "progress line\n" + err)
    assert (exc.message, exc.rc, exc.error["kind"]) == ("snap: web: no such VM (x)", 6, "not-found")


def test_a_text_error_is_its_last_line():
    exc = kvm_cli.failure(["kvm", "stop", "web"], 9, "stop: web: is not running\n")
    assert (exc.message, exc.rc, exc.error) == ("stop: web: is not running", 9, {})
    assert kvm_cli.failure(["kvm", "x"], 1, "").message == "exit status 1"


@pytest.mark.parametrize("value", [{"name": "web"}, {"schema": 2, "name": "web"}, [{"schema": 1}, {"schema": 2}]])
def test_json_of_another_contract_version_is_refused(value):
    with pytest.raises(kvm_cli.KvmFailed, match="this collection reads schema 1"):
        kvm_cli.checked(value)
    assert kvm_cli.checked([{"schema": 1}]) == [{"schema": 1}]
