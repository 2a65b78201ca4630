"""The suite in pytest-xdist workers (`scripts/test.sh`: `-n N --dist loadgroup`), called from
tests/conftest.py at collection.

- The tests of a module that share a fixture of module (or class, or package) scope, such
  as a local cluster, a pip-installed venv or hosts booted once for the module, run in one
  worker (an `xdist_group` named after the module): split across workers, each would set
  the fixture up again. Every other test, also one of that module without the fixture, goes
  to whichever worker is free.
- In a worker, the system tier comes first: its tests wait (hosts booting, TTLs, outages)
  and are the long ones; the many short pure and integration tests then fill the workers
  up to the end. All workers sort alike, so they collect the same list, as xdist requires.

What workers share machine-wide is kept apart elsewhere: ports (free_port's slice per
worker), host names (hosts_fixtures.pool_name_prefix), local clusters (one name and
subnet per test, cluster_harness.TEST_CLUSTERS).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_SCOPES = frozenset({"class", "module", "package"})
FIRST = ("system", "integration", "pure")  # in a worker, tiers in this order


def worker() -> str:
    """This process's xdist worker ("gw0", "gw1", ...), or "" outside xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "")


def shares_fixtures(item: pytest.Item) -> bool:
    """Whether the test uses a fixture set up once for several tests of its module."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        definitions and definitions[-1].scope in SHARED_SCOPES
        for definitions in info.name2fixturedefs.values()
    )


def group_and_order(items: list[pytest.Item], tests: Path) -> None:
    """Mark the tests that share fixtures as one xdist group per module and, in a worker,
    put the tiers (the folders under TESTS) in FIRST's order, stable within each."""
    for item in items:
        if shares_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    if worker():
        rank = {tier: number for number, tier in enumerate(FIRST)}
        items.sort(key=lambda item: rank.get(item.path.relative_to(tests).parts[0], len(FIRST)))
