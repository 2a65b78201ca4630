"""Cordons, drains and maintenance windows: the pure parts (fleetpy.drain, the
scheduler's cordoned machines and evictions, the cordon record's codec), as tables."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fleetpy.drain import (
    EVERY_MACHINE_CORDONED,
    DrainPlan,
    Drains,
    arrived,
    cannot_leave,
    maintenance_holds,
    moved_off,
    moving,
    plan_drain,
)
from fleetpy.model.codecs import MalformedRecord
from fleetpy.model.cordons import CordonEvent, CordonMode, CordonRecord
from fleetpy.model.records import UnitState
from fleetpy.scheduler import (
    Change,
    Machine,
    Move,
    ReasonKind,
    Schedule,
    Scheduled,
    SetReason,
    Snapshot,
    UnitSpec,
    plan_placements,
    reason_kind,
)
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import FleetOptions

L = DesiredState.LAUNCHED


def unit(name: str, **options: Any) -> UnitSpec:
    return UnitSpec(name, "h", L, FleetOptions(**options))


def at(machine: str) -> Scheduled:
    return Scheduled(machine, L, "h")


def MV(name: str, old: str, new: str) -> Move:
    return Move(name, old, new, L, "h")


def machines(*ids: str, cordoned: tuple[str, ...] = ()) -> dict[str, Machine]:
    return {m: Machine(m, {}, cordoned=m in cordoned) for m in ids}


def draining(machine: str, limit: int = 1) -> CordonRecord:
    return CordonRecord(machine, CordonMode.DRAINING, limit)


# -- the scheduler: cordoned machines take nothing new, evicted units leave

SCHEDULER_CASES: list[tuple[str, Snapshot, list[Change]]] = [
    (
        "a cordoned machine keeps its units and takes no new one",
        Snapshot(
            {u.name: u for u in [unit("a.service"), unit("b.service")]},
            machines("m1", "m2", cordoned=("m1",)),
            {"a.service": at("m1")},
        ),
        [Schedule("b.service", "m2", L, "h")],
    ),
    (
        "every machine cordoned: a new unit waits, saying so",
        Snapshot({"b.service": unit("b.service")}, machines("m1", cordoned=("m1",))),
        [SetReason("b.service", EVERY_MACHINE_CORDONED)],
    ),
    (
        "MachineID= of a cordoned machine: refused, saying so",
        Snapshot(
            {"b.service": unit("b.service", machine_id="m1")},
            machines("m1", "m2", cordoned=("m1",)),
        ),
        [SetReason("b.service", "machine m1 cannot take it: it is cordoned")],
    ),
    (
        "an evicted unit moves, its MachineOf= sidekick with it, both say why",
        Snapshot(
            {u.name: u for u in [unit("a.service"), unit("s.service", machine_of=("a.service",))]},
            machines("m1", "m2", cordoned=("m1",)),
            {"a.service": at("m1"), "s.service": at("m1")},
            evict={"a.service": "m1"},
        ),
        [
            MV("a.service", "m1", "m2"),
            MV("s.service", "m1", "m2"),
            SetReason("a.service", moved_off("m1", "m2")),
            SetReason("s.service", moved_off("m1", "m2")),
        ],
    ),
    (
        "an evicted unit that can go nowhere stays (with its sidekick), saying why",
        Snapshot(
            {
                u.name: u
                for u in [
                    unit("a.service", machine_metadata=(("disk", ("ssd",)),)),
                    unit("s.service", machine_of=("a.service",)),
                ]
            },
            {"m1": Machine("m1", {"disk": "ssd"}, cordoned=True), "m2": Machine("m2", {})},
            {"a.service": at("m1"), "s.service": at("m1")},
            evict={"a.service": "m1"},
        ),
        [
            SetReason("a.service", cannot_leave("m1", "no machine has disk=ssd")),
            SetReason("s.service", cannot_leave("m1", "it follows a.service (MachineOf=)")),
        ],
    ),
    (
        "an evicted unit with MachineID= of its machine stays, saying so",
        Snapshot(
            {"a.service": unit("a.service", machine_id="m1")},
            machines("m1", "m2", cordoned=("m1",)),
            {"a.service": at("m1")},
            evict={"a.service": "m1"},
        ),
        [SetReason("a.service", cannot_leave("m1", "MachineID=m1 pins it to that machine"))],
    ),
    (
        "the one machine left is the draining one: the unit stays",
        Snapshot(
            {"a.service": unit("a.service")},
            machines("m1", cordoned=("m1",)),
            {"a.service": at("m1")},
            evict={"a.service": "m1"},
        ),
        [SetReason("a.service", cannot_leave("m1", EVERY_MACHINE_CORDONED))],
    ),
    (
        "a moved unit's note is kept while it is on its way",
        Snapshot(
            {"a.service": unit("a.service")},
            machines("m1", "m2", cordoned=("m1",)),
            {"a.service": at("m2")},
            {"a.service": moved_off("m1", "m2")},
            notes={"a.service": moved_off("m1", "m2")},
        ),
        [],
    ),
    (
        "and cleared once it arrived",
        Snapshot(
            {"a.service": unit("a.service")},
            machines("m1", "m2", cordoned=("m1",)),
            {"a.service": at("m2")},
            {"a.service": moved_off("m1", "m2")},
        ),
        [SetReason("a.service", None)],
    ),
]


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [pytest.param(s, e, id=i) for i, s, e in SCHEDULER_CASES],
)
def test_scheduler_with_cordons(snapshot: Snapshot, expected: list[Change]) -> None:
    assert list(plan_placements(snapshot)) == expected


def test_drain_reasons_have_their_kinds() -> None:
    assert reason_kind(moved_off("m1", "m2")) is ReasonKind.DRAINING
    assert reason_kind(cannot_leave("m1", "x")) is ReasonKind.DRAINING
    assert reason_kind(EVERY_MACHINE_CORDONED) is ReasonKind.CORDONED


# -- plan_drain: which units leave next

ON_M1 = {"a.service": "m1", "b.service": "m1", "c.service": "m1", "x.service": "m2"}
DRAIN_CASES: list[tuple[str, dict[str, Any], DrainPlan]] = [
    (
        "one at a time, by name",
        {},
        DrainPlan({"a.service": "m1"}, {}),
    ),
    (
        "two at a time",
        {"cordons": {"m1": draining("m1", 2)}},
        DrainPlan({"a.service": "m1", "b.service": "m1"}, {}),
    ),
    (
        "one on its way: nothing more leaves, its note stays",
        {"placed": {**ON_M1, "a.service": "m2"}, "reasons": {"a.service": moved_off("m1", "m2")}},
        DrainPlan({}, {"a.service": moved_off("m1", "m2")}),
    ),
    (
        "it arrived: the next leaves, its note goes",
        {
            "placed": {**ON_M1, "a.service": "m2"},
            "reasons": {"a.service": moved_off("m1", "m2")},
            "arrived_units": {"a.service"},
        },
        DrainPlan({"b.service": "m1"}, {}),
    ),
    (
        "a unit that could not leave is tried after the others, and keeps its note",
        {"reasons": {"a.service": cannot_leave("m1", "why")}},
        DrainPlan({"b.service": "m1"}, {"a.service": cannot_leave("m1", "why")}),
    ),
    (
        "a sidekick of a unit that could not leave keeps its note too while not tried",
        {
            "machine_of": {"b.service": ("a.service",)},
            "reasons": {
                "a.service": cannot_leave("m1", "why"),
                "b.service": cannot_leave("m1", "it follows a.service (MachineOf=)"),
            },
        },
        DrainPlan(
            {"c.service": "m1"},
            {
                "a.service": cannot_leave("m1", "why"),
                "b.service": cannot_leave("m1", "it follows a.service (MachineOf=)"),
            },
        ),
    ),
    (
        "only units that cannot leave: they are tried again",
        {"placed": {"a.service": "m1"}, "reasons": {"a.service": cannot_leave("m1", "why")}},
        DrainPlan({"a.service": "m1"}, {}),
    ),
    (
        "a sidekick is never evicted alone: it follows its unit, and counts",
        {
            "cordons": {"m1": draining("m1", 2)},
            "machine_of": {"a.service": ("b.service",)},
        },
        DrainPlan({"b.service": "m1"}, {}),
    ),
    (
        "a machine not reporting is not drained",
        {"alive": {"m2"}},
        DrainPlan({}, {}),
    ),
    (
        "a cordon alone moves nothing",
        {"cordons": {"m1": CordonRecord("m1")}},
        DrainPlan({}, {}),
    ),
]


@pytest.mark.parametrize(
    ("given", "expected"), [pytest.param(g, e, id=i) for i, g, e in DRAIN_CASES]
)
def test_plan_drain(given: dict[str, Any], expected: DrainPlan) -> None:
    arguments: dict[str, Any] = {
        "cordons": {"m1": draining("m1")},
        "placed": ON_M1,
        "machine_of": {},
        "reasons": {},
        "alive": {"m1", "m2"},
        "arrived_units": set(),
        **given,
    }
    assert plan_drain(**arguments) == expected


def test_moving_reads_its_own_note_only() -> None:
    assert moving(moved_off("m1", "m2")) == ("m1", "m2")
    assert moving(cannot_leave("m1", "x")) is None
    assert moving(None) is None


@pytest.mark.parametrize(
    ("desired", "load", "active", "expected"),
    [
        (L, "loaded", "active", True),
        (L, "loaded", "activating", False),
        (L, "loaded", "failed", False),
        (DesiredState.LOADED, "loaded", "inactive", True),
    ],
)
def test_arrived(desired: DesiredState, load: str, active: str, expected: bool) -> None:
    assert arrived(desired, UnitState("a.service", "m2", load, active, "")) is expected
    assert not arrived(desired, None)


def test_maintenance_holds_machines_in_their_window_only() -> None:
    cordons = {"m1": CordonRecord("m1", maintenance_until=100.0), "m2": CordonRecord("m2")}
    held = maintenance_holds(cordons, ["m1", "m2", "m3"])
    assert held == {"m1": "in a maintenance window (until 1970-01-01 00:01:40 UTC)"}


def test_drains_follow_events_and_wake_the_engine_while_units_move() -> None:
    drains = Drains()
    drains.reset({"m1": draining("m1")})
    drains.event(CordonEvent("m2", CordonRecord("m2", maintenance_until=50.0)))
    drains.event(CordonEvent("m1", None))
    assert list(drains.records) == ["m2"]
    assert drains.next_wake({}) is None
    assert drains.next_wake({"a.service": moved_off("m1", "m2")}) == 1.0
    assert drains.next_wake({}, DrainPlan({"a.service": "m1"})) == 1.0  # leaving now


def test_drains_read_only_the_states_of_units_on_their_way() -> None:
    drains = Drains()
    asked: list[list[tuple[str, str]]] = []

    def read(pairs: Any) -> dict[tuple[str, str], UnitState]:
        asked.append(list(pairs))
        return {("m2", "a.service"): UnitState("a.service", "m2", "loaded", "active", "running")}

    placed = {"a.service": "m2", "b.service": "m1"}
    reasons = {"a.service": moved_off("m1", "m2")}
    assert drains.plan(placed, {"a.service": L}, {}, reasons, {"m1", "m2"}, read) == DrainPlan()
    assert asked == [[("m2", "a.service")]]
    drains.reset({"m1": draining("m1")})
    plan = drains.plan(placed, {"a.service": L}, {}, reasons, {"m1", "m2"}, read)
    assert plan == DrainPlan({"b.service": "m1"}, {})


@pytest.mark.parametrize(
    "raw",
    [
        b'{"mode": "gone"}',
        b'{"max_unavailable": 0}',
        b'{"max_unavailable": true}',
        b'{"maintenance_until": "soon"}',
    ],
)
def test_malformed_cordons_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedRecord):
        CordonRecord.from_json("m1", raw)


def test_cordon_record_round_trip() -> None:
    record = CordonRecord("m1", CordonMode.DRAINING, 3, True, 12.5, "ops@host", 10.0)
    assert CordonRecord.from_json("m1", record.to_json().encode()) == record
    assert CordonRecord.from_json("m1", b"{}") == CordonRecord("m1")


@pytest.mark.parametrize(("active", "pass_now"), [("activating", False), ("active", True)])
def test_a_look_asks_for_a_pass_only_once_a_unit_on_its_way_arrived(
    active: str, pass_now: bool
) -> None:
    drains = Drains()
    assert drains.wait(10.0) == math.inf and not drains.changed({}, lambda pairs: {})
    drains.pass_plan({}, {"a.service": unit("a.service")}, {}, set(), lambda pairs: {})
    drains.poll_at = 0.0  # a look is due
    reasons = {"a.service": moved_off("m1", "m2"), "b.service": "no machine has disk=ssd"}

    def read(pairs: Any) -> dict[tuple[str, str], UnitState]:
        assert list(pairs) == [("m2", "a.service")]  # only the units on their way
        return {("m2", "a.service"): UnitState("a.service", "m2", "loaded", active, "")}

    assert drains.changed(reasons, read) is pass_now
    # Arrived: the pass sets the next look. Not: looked at again in a second, no pass.
    assert (drains.poll_at == 0.0) is pass_now
    drains.poll_at = 0.0
    assert not drains.changed({}, read) and drains.poll_at is None  # none on its way
