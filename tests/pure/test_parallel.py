"""How the suite is ordered for pytest-xdist workers (tests/support/parallel.py): modules
longest first by the last run's times, kept in pytest's cache; without them, the system
tier first. Host names (tests/support/hosts_fixtures.py) and local clusters
(tests/support/cluster_harness.py) stay unique on the machine."""

from __future__ import annotations

import ipaddress
import os
import re

import pytest

from fleetpy.cluster.network import DEFAULT_SUBNET

from support.cluster_harness import TEST_CLUSTERS, _test_cluster_link
from support.hosts_fixtures import pool_name_prefix
from support.parallel import CACHE_KEY, order
from support.paths import TESTS

MODULES = {
    "system/test_slow.py": "def test_one():\n    pass\n\ndef test_two():\n    pass\n",
    "integration/test_mid.py": "def test_a():\n    pass\n",
    "pure/test_quick.py": "def test_x():\n    pass\n\ndef test_y():\n    pass\n",
}


@pytest.fixture
def items(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> list[pytest.Item]:
    # Only pytest's own plugins: an installed one may start a process at load (ldconfig).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    for path, source in MODULES.items():
        pytester.mkpydir(path.split("/")[0])
        (pytester.path / path).write_text(source)
    collected, _ = pytester.inline_genitems()
    return collected


def test_without_times_the_system_tier_comes_first(
    items: list[pytest.Item], pytester: pytest.Pytester
) -> None:
    order(items, pytester.path, {})
    assert [item.nodeid for item in items] == [
        "system/test_slow.py::test_one",
        "system/test_slow.py::test_two",
        "integration/test_mid.py::test_a",
        "pure/test_quick.py::test_x",
        "pure/test_quick.py::test_y",
    ]


def test_with_times_the_longest_module_first_and_an_unknown_one_before_all(
    items: list[pytest.Item], pytester: pytest.Pytester
) -> None:
    seconds = {"system/test_slow.py": 3.0, "pure/test_quick.py": 40.0}
    order(items, pytester.path, seconds)
    assert [item.nodeid for item in items] == [
        "integration/test_mid.py::test_a",  # new: cost unknown, so first
        "pure/test_quick.py::test_x",
        "pure/test_quick.py::test_y",
        "system/test_slow.py::test_one",
        "system/test_slow.py::test_two",
    ]


def test_module_times_are_summed_and_kept_over_the_last_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(
        "from support.parallel import ModuleTimes\n"
        "def pytest_configure(config):\n"
        "    config.pluginmanager.register(ModuleTimes(), 'times')\n"
    )
    pytester.makepyfile(test_a="import time\ndef test_1():\n    time.sleep(0.2)\n")
    pytester.inline_run("-p", "cacheprovider")
    first = pytester.parseconfigure().cache.get(CACHE_KEY, {})
    assert set(first) == {"test_a.py"} and first["test_a.py"] >= 0.2
    pytester.makepyfile(test_b="def test_2():\n    pass\n")
    pytester.inline_run("test_b.py")
    assert set(pytester.parseconfigure().cache.get(CACHE_KEY, {})) == {"test_a.py", "test_b.py"}


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


def test_links_of_the_tests_clusters_are_left_out_of_the_machine_links() -> None:
    lines = [
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT",
        "156: fpb-t6x: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP",
        "157: fpvt6x1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 master fpb-t6x",
        "158: fpb-h1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP",
        "159: fpvh11@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 master fpb-h1",
    ]
    kept = [line for line in lines if not _test_cluster_link(line)]
    assert kept == [lines[0], lines[3], lines[4]]  # h1 is no test's cluster: its links count
