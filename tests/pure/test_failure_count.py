"""An agent's count of its units' failures (RescheduleOnFailure=): what systemd reports
as one, the window, the record written once at the threshold."""

from __future__ import annotations

import pytest

from fleetpy.failure_count import FailureCounter
from fleetpy.model.failures import FailureRecord
from fleetpy.model.records import ScheduleEntry
from fleetpy.states import DesiredState

LAUNCHED = DesiredState.LAUNCHED


TEXT = "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nRescheduleOnFailure=3\nRescheduleWindow=60\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counter(text: str = TEXT) -> tuple[FailureCounter, Clock, list[int]]:
    clock, notified = Clock(), [0]
    entries = {"a.service": ScheduleEntry("a.service", "h1", LAUNCHED, text)}

    def notify() -> None:
        notified[0] += 1

    return FailureCounter("m1", entries.get, notify, WRITTEN.append, clock), clock, notified


WRITTEN: list[FailureRecord] = []


def written(count: FailureCounter) -> list[FailureRecord]:
    WRITTEN.clear()
    count.flush()
    return list(WRITTEN)


def test_three_failures_within_the_window_make_one_record() -> None:
    count, clock, notified = counter()
    assert not count.count_failure("a.service", "exit 1")
    clock.now += 30
    assert not count.count_failure("a.service", "exit 1")
    clock.now += 29
    assert count.count_failure("a.service", "exit 2")
    assert notified == [1]
    assert written(count) == [FailureRecord("a.service", "m1", 3, 60.0, "exit 2", "h1")]
    assert written(count) == []  # written once; the count starts again
    assert not count.count_failure("a.service", "exit 1")


def test_failures_older_than_the_window_do_not_count() -> None:
    count, clock, _ = counter()
    for _ in range(5):
        assert not count.count_failure("a.service", "exit 1")
        clock.now += 31  # two within any 60 s, never three
    assert written(count) == []


def test_units_that_do_not_opt_in_or_are_not_placed_here_are_not_counted() -> None:
    count, _, _ = counter("[Service]\nExecStart=/bin/true\n")
    assert not any(count.count_failure("a.service", "x") for _ in range(5))
    assert not any(count.count_failure("global.service", "x") for _ in range(5))
    assert written(count) == []


RUNNING = ("active", "running", "done")
# (active, sub, job) seen one after the other -> failures counted
SEQUENCES = [
    # Restart= brings it back each time: auto-restart is one failure each.
    (
        [("active", "running", "done")]
        + [("activating", "auto-restart", "done"), ("active", "running", "done")] * 3,
        3,
    ),
    # systemd 252 signals failed on the way to auto-restart; 254 failed-before-auto-restart;
    # a clean exit under Restart=always, dead-before-auto-restart: one failure each.
    (
        [RUNNING]
        + [("failed", "failed", "done"), ("activating", "auto-restart", "done"), RUNNING] * 2
        + [("failed", "failed-before-auto-restart", "done"), ("activating", "auto-restart", "done")]
        + [RUNNING, ("inactive", "dead-before-auto-restart", "done")]
        + [("activating", "auto-restart", "done"), RUNNING],
        4,
    ),
    # It runs out of restarts: auto-restart then failed is one failure, not two.
    (
        [
            ("active", "running", "done"),
            ("activating", "auto-restart", "done"),
            ("failed", "failed", "done"),
        ],
        1,
    ),
    # A start that fails at once, without Restart=: failed once, then stays so.
    ([("failed", "failed", "failed"), ("failed", "failed", "failed")], 1),
    # Adopted failed after an agent restart (no start of its own): not a new failure.
    ([("failed", "failed", "")], 0),
    # Stopped by the agent: not a failure.
    (
        [
            ("active", "running", "done"),
            ("deactivating", "stop", "done"),
            ("inactive", "dead", "done"),
        ],
        0,
    ),
]


@pytest.mark.parametrize(("states", "failures"), SEQUENCES)
def test_what_systemd_reports_as_a_failure(
    states: list[tuple[str, str, str]], failures: int
) -> None:
    text = TEXT.replace("RescheduleOnFailure=3", "RescheduleOnFailure=1")
    count, _, notified = counter(text)
    for active, sub, job in states:
        count.observe("a.service", active, sub, job)
    assert notified == [failures]


def test_a_unit_gone_from_the_machine_is_forgotten() -> None:
    count, _, _ = counter()
    count.count_failure("a.service", "x")
    count.count_failure("a.service", "x")
    count.keep(set())
    assert not count.count_failure("a.service", "x")
