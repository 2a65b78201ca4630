"""How the suite is split among pytest-xdist workers (tests/support/parallel.py): the tests
of a module that share a fixture run in one worker, and in a worker the system tier
comes first. Host names (tests/support/hosts_fixtures.py) and local clusters
(tests/support/cluster_harness.py) stay unique on the machine."""

from __future__ import annotations

import ipaddress
import os
import re

import pytest

from fleetpy.cluster.network import DEFAULT_SUBNET

from support.cluster_harness import TEST_CLUSTERS
from support.hosts_fixtures import pool_name_prefix
from support.parallel import group_and_order
from support.paths import TESTS

MODULES = {
    # a module fixture: its tests must not be split among workers
    "system/test_shared.py": """
import pytest

@pytest.fixture(scope="module")
def booted():
    return 1

def test_one(booted):
    pass

def test_two(booted):
    pass

def test_alone():
    pass
""",
    # a class fixture, used by one class only
    "integration/test_classy.py": """
import pytest

class TestShared:
    @pytest.fixture(scope="class")
    def kept(self):
        return 1

    def test_a(self, kept):
        pass
""",
    # function and session fixtures: free to go to any worker
    "pure/test_free.py": """
import pytest

@pytest.fixture(scope="session")
def everywhere():
    return 1

def test_x(everywhere, tmp_path):
    pass

def test_y():
    pass
""",
}


def groups(items: list[pytest.Item]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        found[item.nodeid] = str(mark.args[0]) if mark else None
    return found


@pytest.fixture
def items(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> list[pytest.Item]:
    # Only pytest's own plugins: an installed one may start a process at load (ldconfig).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    for path, source in MODULES.items():
        pytester.mkpydir(path.split("/")[0])
        (pytester.path / path).write_text(source)
    collected, _ = pytester.inline_genitems()
    return collected


def test_a_module_with_a_shared_fixture_is_one_group(
    items: list[pytest.Item], pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    order = [item.nodeid for item in items]
    group_and_order(items, pytester.path)
    assert groups(items) == {
        "integration/test_classy.py::TestShared::test_a": "integration/test_classy.py",
        "pure/test_free.py::test_x": None,
        "pure/test_free.py::test_y": None,
        "system/test_shared.py::test_one": "system/test_shared.py",
        "system/test_shared.py::test_two": "system/test_shared.py",
        "system/test_shared.py::test_alone": None,  # without the fixture: any worker
    }
    assert [item.nodeid for item in items] == order  # one process: collection order


def test_in_a_worker_the_system_tier_comes_first(
    items: list[pytest.Item], pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    group_and_order(items, pytester.path)
    assert [item.nodeid for item in items] == [
        "system/test_shared.py::test_one",
        "system/test_shared.py::test_two",
        "system/test_shared.py::test_alone",
        "integration/test_classy.py::TestShared::test_a",
        "pure/test_free.py::test_x",
        "pure/test_free.py::test_y",
    ]


def test_host_names_are_this_process_own_and_new_for_each_pool() -> None:
    first, second = pool_name_prefix(), pool_name_prefix()
    assert first != second
    for prefix in (first, second):
        assert prefix.startswith(f"fp{os.getpid():x}p")
        # a host name is PREFIX + its number: a valid hostname, short enough for nspawn
        assert f"{prefix}12".replace("-", "").isalnum() and len(f"{prefix}12") <= 32


def test_every_local_cluster_of_the_tests_has_its_own_name_and_subnet() -> None:
    names = sorted(TEST_CLUSTERS)
    for name in names:
        assert not [other for other in names if other != name and other.startswith(name)]
    networks = [ipaddress.IPv4Network(subnet) for subnet in TEST_CLUSTERS.values()]
    for number, network in enumerate(networks):
        assert not [other for other in networks[number + 1 :] if other.overlaps(network)]
    assert not [n for n in networks if n.overlaps(ipaddress.IPv4Network(DEFAULT_SUBNET))]


def test_no_test_brings_up_a_cluster_of_its_own_making() -> None:
    """A subnet written out in a system test would be one TEST_CLUSTERS does not know of
    (the hostile cases' refused ones aside, which make nothing)."""
    found = {
        str(path.relative_to(TESTS)): re.findall(r"\b10\.\d+\.\d+\.\d+/\d+", path.read_text())
        for path in (TESTS / "system").rglob("*.py")
        if path.parent.name != "hostile"
    }
    assert {path: subnets for path, subnets in found.items() if subnets} == {}
