"""The agent's plan_actions(desired, observed) as plain table tests."""

from __future__ import annotations

import pytest

from fleetpy.agent import DesiredUnit, plan_actions, select_globals
from fleetpy.registry import ScheduleEntry
from fleetpy.states import DesiredState
from fleetpy.unitmanager import (
    ObservedUnit,
    RemoveUnit,
    SimulatedUnitManager,
    StartUnit,
    StopUnit,
    WriteUnit,
)


def want(name: str, desired: str = "launched", digest: str = "h1") -> DesiredUnit:
    return DesiredUnit(name, digest, DesiredState(desired), f"text-{digest}")


def seen(
    name: str, active: str = "inactive", launched: bool = False, digest: str = "h1"
) -> ObservedUnit:
    sub = {"active": "running", "failed": "failed"}.get(active, "dead")
    return ObservedUnit(name, digest, "loaded", active, sub, launched)


CASES = [
    (
        "new launched unit is written then started",
        [want("a")],
        [],
        [WriteUnit("a", "h1", "text-h1"), StartUnit("a")],
    ),
    (
        "new loaded unit is only written",
        [want("a", "loaded")],
        [],
        [WriteUnit("a", "h1", "text-h1")],
    ),
    ("running unit that should run: nothing", [want("a")], [seen("a", "active", True)], []),
    ("adopted running unit: nothing", [want("a")], [seen("a", "active", True)], []),
    ("loaded unit to launch is started", [want("a")], [seen("a")], [StartUnit("a")]),
    (
        "launched unit to load is stopped",
        [want("a", "loaded")],
        [seen("a", "active", True)],
        [StopUnit("a")],
    ),
    ("failed unit is not restarted by the agent", [want("a")], [seen("a", "failed", True)], []),
    (
        "unit no longer placed is stopped then removed",
        [],
        [seen("a", "active", True)],
        [StopUnit("a"), RemoveUnit("a")],
    ),
    ("stopped unit no longer placed is just removed", [], [seen("a")], [RemoveUnit("a")]),
    (
        "changed content: stop, rewrite, start",
        [want("a", digest="h2")],
        [seen("a", "active", True)],
        [StopUnit("a"), WriteUnit("a", "h2", "text-h2"), StartUnit("a")],
    ),
    (
        "stops before removals before writes before starts",
        [want("b")],
        [seen("a", "active", True)],
        [StopUnit("a"), RemoveUnit("a"), WriteUnit("b", "h1", "text-h1"), StartUnit("b")],
    ),
]


@pytest.mark.parametrize(
    "desired, observed, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan(
    desired: list[DesiredUnit], observed: list[ObservedUnit], expected: list[object]
) -> None:
    assert plan_actions({d.name: d for d in desired}, {o.name: o for o in observed}) == expected


def test_plan_is_idempotent_after_execution() -> None:
    manager = SimulatedUnitManager()
    desired = {"a": want("a"), "b": want("b", "loaded")}
    manager.execute(plan_actions(desired, manager.observe()))
    assert plan_actions(desired, manager.observe()) == []


def test_globals_that_conflict_with_each_other_do_not_both_run() -> None:
    a = ScheduleEntry(
        "a.service",
        "h",
        "launched",
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\nConflicts=b.service\n",
    )
    b = ScheduleEntry(
        "b.service", "h", "launched", "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\n"
    )
    assert list(select_globals({"a.service": a, "b.service": b}, {}, {})) == ["a.service"]
