"""Polling helper for tests that wait on a real cluster to converge."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(
    predicate: Callable[[], object],
    timeout: float = 30,
    what: str = "condition",
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
