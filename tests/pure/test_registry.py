"""test_registry.py's tests that need no etcd and no process (README "Tests"); what the module
covers as a whole: tests/integration/test_registry.py."""

from __future__ import annotations

import time

import pytest

from fleetpy.errors import RegistryError
from fleetpy.registry import (
    Registry,
    RegistryConfig,
)


def test_unreachable_etcd_names_the_endpoint() -> None:
    start = time.monotonic()
    with pytest.raises(RegistryError, match="127.0.0.1:1"):
        Registry(RegistryConfig(endpoints=("http://127.0.0.1:1",), timeout=1.0)).list_units()
    assert time.monotonic() - start < 5
