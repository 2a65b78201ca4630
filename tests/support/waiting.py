"""Polling helpers for tests that wait on a real cluster to converge, or watch it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


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


@contextmanager
def polling(step: Callable[[], None], interval: float = 0.2) -> Iterator[None]:
    """Run STEP once before the block starts (so what was there before it is seen however
    slow the machine), then every INTERVAL seconds in a thread of its own while the block
    runs (and not after: the thread is joined on the way out)."""
    done = threading.Event()
    step()

    def loop() -> None:
        while not done.wait(interval):
            step()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
