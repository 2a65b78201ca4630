"""Dependencies across machines (`[X-Fleet] Requires=`/`BindsTo=`): the options, the pure
plan (fleetpy.dependencies) and the scheduler's changes for held units, as tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from fleetpy.dependencies import Dependencies, plan_dependencies, targets, waiting, with_holds
from fleetpy.errors import FleetOptionError
from fleetpy.model.records import UnitState
from fleetpy.scheduler import (
    Change,
    Machine,
    ReasonKind,
    Retarget,
    Schedule,
    Scheduled,
    SetReason,
    Snapshot,
    UnitSpec,
    plan_placements,
    reason_kind,
)
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import FleetOptions, fleet_options, parse_unit

L = DesiredState.LAUNCHED
LD = DesiredState.LOADED


def spec(name: str, desired: DesiredState = L, **options: Any) -> UnitSpec:
    return UnitSpec(name, "h", desired, FleetOptions(**options))


def web(*, binds: bool = False) -> UnitSpec:
    if binds:
        return spec("web.service", requires=("db.service",), binds_to=("db.service",))
    return spec("web.service", requires=("db.service",))


def state(unit: str, machine: str, active: str, sub: str = "running") -> UnitState:
    return UnitState(unit, machine, "loaded", active, sub)


def options_of(fleet_section: str, name: str = "web.service") -> FleetOptions:
    text = f"[Service]\nExecStart=/bin/true\n\n[X-Fleet]\n{fleet_section}\n"
    return fleet_options(parse_unit(text, name), name)


# -- the options


def test_requires_and_binds_to_are_read_binds_to_counting_as_requires() -> None:
    options = options_of("Requires=db.service cache.service\nBindsTo=queue.service db.service")
    assert options.requires == ("db.service", "cache.service", "queue.service")
    assert options.binds_to == ("queue.service", "db.service")


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ("Requires=web.service", "Requires=web.service in web.service names the unit itself"),
        ("BindsTo=%n", "BindsTo=web.service in web.service names the unit itself"),
        ("Requires=db@.service", "names a template, which never runs"),
        ("Requires=db", r"\[X-Fleet\] Requires= in web.service"),
        ("Global=true\nRequires=db.service", "cannot be combined with Requires="),
    ],
)
def test_bad_dependencies_are_refused(section: str, error: str) -> None:
    with pytest.raises(FleetOptionError, match=error):
        options_of(section)


# -- the plan: unit -> reason it is held loaded


DB_AT_M2 = {"db.service": Scheduled("m2", L, "h")}
ALIVE = {"m1": Machine("m1"), "m2": Machine("m2")}
M2_HELD = {"m1": Machine("m1"), "m2": Machine("m2", held="the engine had lost sight of it")}


@pytest.mark.parametrize(
    ("units", "schedule", "machines", "states", "held"),
    [
        # db active on another machine: web starts.
        (
            [web(), spec("db.service")],
            DB_AT_M2,
            ALIVE,
            {"db.service": state("db.service", "m2", "active")},
            {},
        ),
        # db placed, not active yet: web waits, saying where db is.
        (
            [web(), spec("db.service")],
            DB_AT_M2,
            ALIVE,
            {"db.service": state("db.service", "m2", "activating", "start")},
            {"web.service": "waiting for db.service to be active: it is activating (start) on m2"},
        ),
        (
            [web(), spec("db.service")],
            DB_AT_M2,
            ALIVE,
            {},
            {
                "web.service": "waiting for db.service to be active: it is placed on m2, not "
                "reported there yet"
            },
        ),
        # db failed: web waits, saying so.
        (
            [web(), spec("db.service")],
            DB_AT_M2,
            ALIVE,
            {"db.service": state("db.service", "m2", "failed", "failed")},
            {"web.service": "waiting for db.service to be active: it is failed (failed) on m2"},
        ),
        # db not submitted (destroyed, or not yet), not started, not placed.
        (
            [web()],
            {},
            ALIVE,
            {},
            {
                "web.service": "waiting for db.service to be active: no such unit is submitted "
                "(destroyed, or not submitted yet)"
            },
        ),
        (
            [web(), spec("db.service", LD)],
            {"db.service": Scheduled("m2", LD, "h")},
            ALIVE,
            {"db.service": state("db.service", "m2", "inactive", "dead")},
            {
                "web.service": "waiting for db.service to be active: it is not started (desired "
                "state loaded)"
            },
        ),
        (
            [web(), spec("db.service")],
            {},
            ALIVE,
            {},
            {"web.service": "waiting for db.service to be active: it is not placed on any machine"},
        ),
        # db's machine lost (its last state may linger in a stale read): web waits.
        (
            [web(), spec("db.service")],
            DB_AT_M2,
            {"m1": Machine("m1")},
            {"db.service": state("db.service", "m2", "active")},
            {"web.service": "waiting for db.service to be active: its machine m2 is not reporting"},
        ),
        # ... and a started web bound to it is stopped (db will move).
        (
            [web(binds=True), spec("db.service")],
            DB_AT_M2 | {"web.service": Scheduled("m1", L, "h")},
            {"m1": Machine("m1")},
            {},
            {"web.service": "waiting for db.service to be active: its machine m2 is not reporting"},
        ),
        # db's machine held (out of touch, not judged lost): web waits to start, but a
        # started web bound to db is not stopped for what the engine cannot see.
        (
            [web(), spec("db.service")],
            DB_AT_M2,
            M2_HELD,
            {},
            {"web.service": "waiting for db.service to be active: its machine m2 is not reporting"},
        ),
        (
            [web(binds=True), spec("db.service")],
            DB_AT_M2 | {"web.service": Scheduled("m1", L, "h")},
            M2_HELD,
            {},
            {},
        ),
        # db's state not reported (again) yet, its machine back: likewise.
        (
            [web(binds=True), spec("db.service")],
            DB_AT_M2 | {"web.service": Scheduled("m1", L, "h")},
            ALIVE,
            {},
            {},
        ),
        # Reloading is active.
        (
            [web(binds=True), spec("db.service")],
            DB_AT_M2 | {"web.service": Scheduled("m1", L, "h")},
            ALIVE,
            {"db.service": state("db.service", "m2", "reloading", "reload")},
            {},
        ),
        # Started (its entry says launched): Requires= no longer holds it, BindsTo= does.
        (
            [web(), spec("db.service")],
            DB_AT_M2 | {"web.service": Scheduled("m1", L, "h")},
            ALIVE,
            {"db.service": state("db.service", "m2", "failed", "failed")},
            {},
        ),
        (
            [web(binds=True), spec("db.service")],
            DB_AT_M2 | {"web.service": Scheduled("m1", L, "h")},
            ALIVE,
            {"db.service": state("db.service", "m2", "inactive", "dead")},
            {"web.service": "waiting for db.service to be active: it is inactive (dead) on m2"},
        ),
        # Held (its entry says loaded): Requires= holds it again until db is active.
        (
            [web(), spec("db.service")],
            DB_AT_M2 | {"web.service": Scheduled("m1", LD, "h")},
            ALIVE,
            {"db.service": state("db.service", "m2", "inactive", "dead")},
            {"web.service": "waiting for db.service to be active: it is inactive (dead) on m2"},
        ),
        # A global unit cannot be required (which machine's would count?).
        (
            [web(), spec("db.service", is_global=True)],
            {},
            ALIVE,
            {},
            {
                "web.service": "waiting for db.service to be active: it is a global unit; "
                "only a unit the engine places can be required"
            },
        ),
        # Only launched units are held: a loaded one is loaded anyway.
        ([spec("web.service", LD, requires=("db.service",))], {}, ALIVE, {}, {}),
        # The first dependency not active is named.
        (
            [
                spec("web.service", requires=("db.service", "cache.service")),
                spec("db.service"),
                spec("cache.service"),
            ],
            DB_AT_M2 | {"cache.service": Scheduled("m1", L, "h")},
            ALIVE,
            {"db.service": state("db.service", "m2", "active")},
            {
                "web.service": "waiting for cache.service to be active: it is placed on m1, not "
                "reported there yet"
            },
        ),
    ],
)
def test_plan_dependencies(
    units: list[UnitSpec],
    schedule: Mapping[str, Scheduled],
    machines: Mapping[str, Machine],
    states: Mapping[str, UnitState],
    held: dict[str, str],
) -> None:
    assert plan_dependencies({u.name: u for u in units}, schedule, machines, states) == held


def test_targets_are_only_launched_units_dependencies() -> None:
    units = [web(), spec("api.service", LD, requires=("auth.service",)), spec("db.service")]
    assert targets({u.name: u for u in units}) == {"db.service"}


# -- the scheduler, given the held units


def plan(
    units: list[UnitSpec], schedule: Mapping[str, Scheduled], notes: dict[str, str]
) -> list[Change]:
    specs = with_holds({u.name: u for u in units}, notes)
    machines = {m: Machine(m) for m in ("m1", "m2")}
    return list(plan_placements(Snapshot(specs, machines, schedule, notes=notes)))


def test_a_waiting_unit_is_placed_loaded_saying_why() -> None:
    why = waiting("db.service", "it is not placed on any machine")
    changes = plan([web()], {}, {"web.service": why})
    assert changes == [
        Schedule("web.service", "m1", LD, "h"),
        SetReason("web.service", why),
    ]
    assert reason_kind(why) is ReasonKind.DEPENDENCY


def test_a_unit_whose_dependency_became_active_is_started_where_it_is() -> None:
    changes = plan([web()], {"web.service": Scheduled("m2", LD, "h")}, {})
    assert changes == [Retarget("web.service", "m2", L, "h")]


def test_a_bound_unit_whose_dependency_stopped_is_stopped_where_it_is() -> None:
    why = waiting("db.service", "it is inactive (dead) on m1")
    changes = plan(
        [web(binds=True)], {"web.service": Scheduled("m2", L, "h")}, {"web.service": why}
    )
    assert changes == [Retarget("web.service", "m2", LD, "h"), SetReason("web.service", why)]


def test_machine_of_waiting_is_still_its_own_kind() -> None:
    assert reason_kind("waiting for db.service to be placed") is ReasonKind.MACHINE_OF


# -- what the engine reads


class Reads:
    def __init__(self, states: dict[tuple[str, str], UnitState]) -> None:
        self.states = states
        self.asked: list[list[tuple[str, str]]] = []

    def __call__(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], UnitState]:
        asked = list(pairs)
        self.asked.append(asked)
        return {pair: self.states[pair] for pair in asked if pair in self.states}


def test_the_engine_reads_only_the_dependencies_states_and_nothing_without_any() -> None:
    deps = Dependencies()
    reads = Reads({("m2", "db.service"): state("db.service", "m2", "active")})
    schedule = DB_AT_M2 | {"other.service": Scheduled("m1", L, "h")}
    specs = {"other.service": spec("other.service"), "db.service": spec("db.service")}
    assert deps.pass_plan(specs, schedule, ALIVE, reads) == (specs, {})
    assert reads.asked == [] and deps.wait(0.0) == float("inf")
    specs["web.service"] = web()
    placed, held = deps.pass_plan(specs, schedule, ALIVE, reads)
    assert held == {} and placed is specs
    assert reads.asked == [[("m2", "db.service")]]


def test_a_poll_says_changed_only_when_a_dependency_state_changed() -> None:
    deps = Dependencies()
    reads = Reads({("m2", "db.service"): state("db.service", "m2", "active")})
    specs = {"web.service": web(), "db.service": spec("db.service")}
    deps.pass_plan(specs, DB_AT_M2, ALIVE, reads)
    deps._next = 0.0  # due now
    assert not deps.changed(DB_AT_M2, reads)
    reads.states[("m2", "db.service")] = state("db.service", "m2", "failed", "failed")
    deps._next = 0.0
    assert deps.changed(DB_AT_M2, reads)
    deps._next = 0.0
    assert deps.changed({"db.service": Scheduled("m1", L, "h")}, reads)  # moved


def test_a_dependency_submitted_but_invalid_is_named_so() -> None:
    """Not "no such unit is submitted": it is, and the engine says why it cannot use it."""
    why = "invalid [X-Fleet] MachineOf=: not a unit name"
    held = plan_dependencies({"web.service": web()}, {}, ALIVE, {}, {"db.service": why})
    assert held == {
        "web.service": f"waiting for db.service to be active: it is submitted but invalid ({why})"
    }
