"""When the engine leader compacts etcd's history (fleetpy/compaction.py)."""

from __future__ import annotations

import pytest

from fleetpy.compaction import RETRY_AFTER, CompactionSchedule, Sample, compaction_target

S = (Sample(0.0, 10), Sample(100.0, 50), Sample(250.0, 90), Sample(400.0, 120))


@pytest.mark.parametrize(
    ("now", "interval", "compacted", "expected"),
    [
        (299.0, 300.0, 0, None),  # no sample is an interval old yet
        (300.0, 300.0, 0, 10),  # the first one just is
        (399.0, 300.0, 0, 10),
        (400.0, 300.0, 0, 50),  # the newest of those old enough
        (560.0, 300.0, 0, 90),
        (560.0, 300.0, 90, None),  # already compacted there
        (560.0, 300.0, 95, None),  # and past it
        (800.0, 300.0, 90, 120),
        (10_000.0, 0.0, 0, None),  # interval 0: compaction off
    ],
)
def test_compaction_target(
    now: float, interval: float, compacted: int, expected: int | None
) -> None:
    assert compaction_target(S, now, interval, compacted) == expected


def test_schedule_keeps_one_interval_of_history_and_forgets_what_it_compacted() -> None:
    schedule = CompactionSchedule(60.0)
    schedule.observe(0.0, 5)
    schedule.observe(10.0, 5)  # nothing written since: no new sample
    schedule.observe(30.0, 8)
    assert schedule.due(59.0) is None
    assert schedule.due(60.0) == 5
    schedule.done(5)
    assert schedule.due(60.0) is None
    assert schedule.due(90.0) == 8
    schedule.done(8)
    schedule.observe(100.0, 8)  # the revision did not move: nothing to compact later
    assert schedule.due(1000.0) is None


def test_a_failed_compaction_waits_before_the_next_try() -> None:
    schedule = CompactionSchedule(60.0)
    schedule.observe(0.0, 5)
    schedule.failed(60.0)
    assert schedule.due(60.0 + RETRY_AFTER - 0.1) is None
    assert schedule.due(60.0 + RETRY_AFTER) == 5


def test_a_rewound_history_starts_the_schedule_afresh() -> None:
    """etcd restored from a snapshot answers with an older revision: samples and the last
    compaction name revisions it has not reached, and would hold compaction off."""
    schedule = CompactionSchedule(interval=60.0)
    schedule.observe(0.0, 500)
    schedule.observe(70.0, 900)
    assert schedule.due(70.0) == 500
    schedule.done(500)
    schedule.observe(80.0, 120)  # restored: back at revision 120
    assert schedule.compacted == 0
    assert schedule.due(100.0) is None  # nothing sampled an interval ago on this history
    schedule.observe(150.0, 130)
    assert schedule.due(150.0) == 120
