"""The system tier: fleetpy and daemons as processes, etcd clusters, TLS etcd, real hosts, docker,
Chromium, installs (README "Tests"; tests/support/tiers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.tiers import collect

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    collect(items, HERE, "system")
