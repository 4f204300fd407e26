"""VM names and recognising a VM's bhyve by its arguments (never by a substring)."""

import pytest

from kvm import vm
from kvm.hypervisor.bhyve.backend import is_bhyve_of
from kvm.errors import UsageError


@pytest.mark.parametrize("args, name, expected", [
    (["bhyve:", "web"], "web", True),
    (["bhyve:", "web", "(bhyve)"], "web", True),
    (["bhyve:", "web2"], "web", False),
    (["bhyve:", "web2", "(bhyve)"], "web", False),
    (["bhyve: web"], "web", True),   # the title as procfs gives it: one string
    (["bhyve: web2"], "web", False),
    (["python3", "/x/tests/sim/bin/bhyve", "-c", "1", "web"], "web", False),  # no test-only special case
    (["/usr/sbin/bhyve", "-c", "1", "web"], "web", True),
    (["grep", "bhyve", "web"], "web", False),
    (["bhyvectl", "--vm=web"], "web", False),
    ([], "web", False),
])
def test_is_bhyve_of(args, name, expected):
    assert is_bhyve_of(args, name) is expected


@pytest.mark.parametrize("name", ["a", "web-1", "web.1", "Web_2", "9lives", "x" * 31])
def test_good_names(name):
    vm.check_name(name)


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "a b", "a/b", "a;b", "x" * 32, "é", "a\nb", "web\n"])
def test_bad_names(name):
    with pytest.raises(UsageError):
        vm.check_name(name)
