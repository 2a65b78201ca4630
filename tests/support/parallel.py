"""The suite in pytest-xdist workers (`scripts/test.sh`: `-n N --dist loadfile
--no-loadscope-reorder`), hooked in by tests/conftest.py.

- A module runs whole in one worker (loadfile): its module-scoped fixtures (a local cluster,
  a pip-installed venv, hosts booted once for the module) are set up once. Not loadgroup:
  with pytest 9.2, xdist 3.8 cannot tag a test's id with its group (it sets
  `item._nodeid`, which pytest no longer reads), so every test went anywhere and a module's
  fixture was set up again in each worker that got one of its tests.
- Modules go out to the workers in the order the workers collect them (no reordering by
  test count), and workers sort them longest first by what each module took in the last
  run here (pytest's cache, fleetpy/module-seconds, written when a run ends): a long module
  started last would finish last, alone. A module the cache does not know counts as long;
  without a cache (a fresh clone), the system tier comes first, where the long ones are.
  All workers read the same cache and sort alike, so they collect the same list, as
  xdist requires.

What workers share machine-wide is kept apart elsewhere: ports (free_port's slice per
worker), host names (hosts_fixtures.pool_name_prefix), local clusters (one name and
subnet per test, cluster_harness.TEST_CLUSTERS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pytest

FIRST = ("system", "integration", "pure")  # without times, tiers in this order
CACHE_KEY = "fleetpy/module-seconds"


def in_worker(config: pytest.Config) -> bool:
    """Whether CONFIG is an xdist worker's (not the main process', nor a pytester run's)."""
    return hasattr(config, "workerinput")


def module_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


def order(items: list[pytest.Item], tests: Path, seconds: Mapping[str, float]) -> None:
    """Sort ITEMS by module, longest first by SECONDS (a module not in it first of all);
    without SECONDS, by tier (the folders under TESTS) in FIRST's order. Stable: a module's
    tests keep their order, and so do modules of equal time."""
    rank = {tier: number for number, tier in enumerate(FIRST)}

    def key(item: pytest.Item) -> tuple[float, int]:
        tier = rank.get(item.path.relative_to(tests).parts[0], len(FIRST))
        if not seconds:
            return (0.0, tier)
        return (-seconds.get(module_of(item.nodeid), math.inf), tier)

    items.sort(key=key)


def in_worker_order(config: pytest.Config, items: list[pytest.Item], tests: Path) -> None:
    """In an xdist worker, sort ITEMS as `order` does, by the cached module times."""
    if in_worker(config):
        cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
        order(items, tests, cache.get(CACHE_KEY, {}) if cache is not None else {})


class ModuleTimes:
    """Adds up each module's setup, call and teardown times as the reports come in (in the
    main process, from every worker) and, when the run ends, stores them in the cache over
    the last ones: a run of a few modules keeps the others' times."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        module = module_of(report.nodeid)
        self.seconds[module] = self.seconds.get(module, 0.0) + report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        cache = getattr(session.config, "cache", None)
        if cache is None or in_worker(session.config) or not self.seconds:
            return
        stored = dict(cache.get(CACHE_KEY, {}))
        stored.update({module: round(total, 2) for module, total in self.seconds.items()})
        cache.set(CACHE_KEY, stored)
