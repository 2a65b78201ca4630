"""The integration tier: the session's etcd, fleetpy in process, short-lived helper processes
only (README "Tests"; tests/support/tiers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.tiers import collect, guard_processes

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    collect(items, HERE, "integration")


@pytest.fixture(autouse=True)
def tier_processes() -> Iterator[None]:
    # Its own MonkeyPatch: a test's monkeypatch.undo() must not lift the guard.
    with pytest.MonkeyPatch.context() as patch:
        guard_processes(patch, "integration")
        yield
