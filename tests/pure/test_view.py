"""test_view.py's tests that need no etcd and no process (README "Tests"); what the module
covers as a whole: tests/integration/test_view.py."""

from __future__ import annotations

import threading

from fleetpy.live_view import run_coalesced


def test_an_unexpected_error_in_a_step_is_a_failure_and_retried() -> None:
    wake, stop = threading.Event(), threading.Event()
    calls: list[int] = []
    failures: list[str] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("a bug")
        stop.set()

    wake.set()
    thread = threading.Thread(
        target=run_coalesced, args=(wake, stop, step, lambda e: failures.append(str(e)))
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(calls) == 2
    assert failures == ["unexpected TypeError: a bug"]
