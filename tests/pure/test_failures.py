"""RescheduleOnFailure=: the engine's judgement of failure records (its memory of them)
and the planner's moves off machines a unit failed on, as tables."""

from __future__ import annotations

import pytest

from fleetpy.failures import Avoidance, FailureBook, Seen, judge
from fleetpy.model.failures import FailureEvent, FailureRecord
from fleetpy.scheduler import (
    Machine,
    Move,
    ReasonKind,
    Scheduled,
    SetReason,
    Snapshot,
    UnitSpec,
    plan_placements,
    reason_kind,
)
from fleetpy.states import DesiredState
from fleetpy.unitfile.reschedule import ReschedulePolicy
from fleetpy.unitfile.unit import FleetOptions

LAUNCHED = DesiredState.LAUNCHED

# ----------------------------------------------------------------------------- the judgement

POLICY = ReschedulePolicy(3, window=60, backoff=3600, limit=2)


def seen(machine: str, at: float, cause: str = "") -> Seen:
    return Seen(FailureRecord("a.service", machine, 3, 60.0, cause), at)


@pytest.mark.parametrize(
    ("failed", "now", "expected"),
    [
        ({}, 0, None),
        ({"m1": seen("m1", 0)}, 3600, None),  # the backoff ended
        (
            {"m1": seen("m1", 0, "exit code 1")},
            10,
            Avoidance(
                frozenset({"m1"}),
                "failed 3 times in 1min on m1 (exit code 1); avoided there for 1h (move 1 of 2)",
            ),
        ),
        (
            {"m1": seen("m1", 0), "m2": seen("m2", 5)},
            10,
            Avoidance(
                frozenset({"m1", "m2"}),
                "failed 3 times in 1min on m2; avoided there for 1h (move 2 of 2)",
            ),
        ),
        (
            {"m1": seen("m1", 0), "m2": seen("m2", 5), "m3": seen("m3", 6)},
            10,
            Avoidance(
                frozenset({"m1", "m2", "m3"}),
                "failed on 3 machines within 1h (m1, m2, m3): RescheduleLimit=2 reached, it "
                "stays where it is until `fleetpy force-reschedule a.service` (or the backoff "
                "ends)",
                stays=True,
            ),
        ),
    ],
)
def test_judge(failed: dict[str, Seen], now: float, expected: Avoidance | None) -> None:
    assert judge("a.service", POLICY, failed, now) == expected


def test_the_book_keeps_when_it_first_saw_a_record_and_expires_it() -> None:
    book = FailureBook()
    record = FailureRecord("a.service", "m1", 3, 60.0, hash="h1")
    book.apply(FailureEvent("m1", "a.service", record), now=100)
    book.load([record], now=500)  # a full read: the same record keeps its time
    policies = {"a.service": ("h1", POLICY)}
    assert set(book.avoidances(policies, now=3699)) == {"a.service"}
    assert book.next_expiry(policies) == 3700
    assert book.expired(policies, now=3699) == []
    assert book.expired(policies, now=3700) == [("m1", "a.service")]
    # New contents (a fix), a unit gone or no longer opting in: forgotten at once.
    assert book.expired({"a.service": ("h2", POLICY)}, now=200) == [("m1", "a.service")]
    assert book.expired({}, now=200) == [("m1", "a.service")]
    assert book.expired({"a.service": ("h1", None)}, now=200) == [("m1", "a.service")]
    book.apply(FailureEvent("m1", "a.service", None), now=300)
    assert book.avoidances(policies, now=301) == {}


# ----------------------------------------------------------------------------- the planner


def spec(name: str, **options: object) -> UnitSpec:
    return UnitSpec(name, "h", LAUNCHED, FleetOptions(**options))  # type: ignore[arg-type]


def machines(*ids: str) -> dict[str, Machine]:
    return {m: Machine(m) for m in ids}


def avoid(*ids: str, stays: bool = False) -> Avoidance:
    return Avoidance(frozenset(ids), "failed 3 times in 1min on m1", stays)


def test_a_unit_moves_off_the_machine_it_failed_on_with_its_sidekick() -> None:
    snapshot = Snapshot(
        units={
            "a.service": spec("a.service"),
            "b.service": spec("b.service", machine_of=("a.service",)),
        },
        machines=machines("m1", "m2"),
        schedule={
            "a.service": Scheduled("m1", LAUNCHED, "h"),
            "b.service": Scheduled("m1", LAUNCHED, "h"),
        },
        avoid={"a.service": avoid("m1")},
    )
    changes = list(plan_placements(snapshot))
    assert Move("a.service", "m1", "m2", LAUNCHED, "h") in changes
    assert Move("b.service", "m1", "m2", LAUNCHED, "h") in changes
    assert SetReason("a.service", "failed 3 times in 1min on m1") in changes


def test_a_unit_that_reached_its_limit_stays_and_says_so() -> None:
    snapshot = Snapshot(
        units={"a.service": spec("a.service")},
        machines=machines("m1", "m2"),
        schedule={"a.service": Scheduled("m1", LAUNCHED, "h")},
        avoid={"a.service": avoid("m1", "m2", stays=True)},
    )
    assert list(plan_placements(snapshot)) == [
        SetReason("a.service", "failed 3 times in 1min on m1")
    ]


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({}, "it failed there repeatedly on every eligible machine"),
        ({"machine_id": "m1"}, "machine m1 cannot take it: it failed there repeatedly"),
        ({"machine_metadata": (("disk", ("ssd",)),)}, "it failed there repeatedly on every"),
    ],
)
def test_a_unit_no_other_machine_can_take_stays_where_it_failed(
    options: dict[str, object], why: str
) -> None:
    snapshot = Snapshot(
        units={"a.service": spec("a.service", **options)},
        machines={
            "m1": Machine("m1", {"disk": "ssd"}),
            **({"m2": Machine("m2")} if options else {}),
        },
        schedule={"a.service": Scheduled("m1", LAUNCHED, "h")},
        avoid={"a.service": avoid("m1")},
    )
    (change,) = plan_placements(snapshot)
    assert isinstance(change, SetReason) and change.reason is not None
    assert change.reason.startswith("failed 3 times in 1min on m1; no other machine can take it")
    assert why in change.reason and change.reason.endswith("it stays on m1")
    assert reason_kind(change.reason) is ReasonKind.FAILURES


def test_an_unplaced_unit_avoids_where_it_failed() -> None:
    snapshot = Snapshot(
        units={"a.service": spec("a.service")},
        machines=machines("m1", "m2"),
        avoid={"a.service": avoid("m1")},
    )
    changes = list(plan_placements(snapshot))
    assert changes[0].machine == "m2"  # type: ignore[union-attr]
