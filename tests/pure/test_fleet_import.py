"""The migration's plan, pure: fleet's snapshot and fleetpy's keys in, what to write out
(fleetpy.fleet_import.plan)."""

from __future__ import annotations

import pytest

from fleetpy.fleet_import import FleetpySide, ImportedUnit, Left, MigrationPlan, converted, plan
from fleetpy.fleet_keyspace import FleetMachine, FleetSnapshot, FleetUnit
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import parse_unit

M1, M2, GONE = "1" * 32, "2" * 32, "9" * 32
SLEEP = "[Service]\nExecStart=/bin/sleep infinity\n"
GLOBAL = "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\n"
SIDEKICK = "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineOf=web.service\n"


def fleet_unit(
    name: str, text: str = SLEEP, state: str = "launched", target: str | None = None
) -> FleetUnit:
    return FleetUnit(name, text, "0" * 40, state, target)


def snapshot(*units: FleetUnit, machines: dict[str, dict[str, str]] | None = None) -> FleetSnapshot:
    found = machines if machines is not None else {M1: {}, M2: {}}
    return FleetSnapshot(
        {u.name: u for u in units}, {m: FleetMachine(m, "", md) for m, md in found.items()}
    )


def names(plan_: MigrationPlan) -> dict[str, str | None]:
    return {u.name: u.machine for u in plan_.units}


SLEEP_HASH = parse_unit(SLEEP).hash


def test_each_unit_placed_by_fleet_goes_to_its_machine_and_that_machine_is_held() -> None:
    fleet = snapshot(
        fleet_unit("web.service", target=M1),
        fleet_unit("side.service", SIDEKICK, "loaded", M1),
        fleet_unit("db@1.service", state="launched", target=M2),
        fleet_unit("db@.service", state="inactive"),
        fleet_unit("g.service", GLOBAL),
    )
    result = plan(fleet, FleetpySide(registered={M2}))
    assert names(result) == {
        "db@.service": None,
        "db@1.service": M2,
        "g.service": None,
        "side.service": M1,
        "web.service": M1,
    }
    web = next(u for u in result.units if u.name == "web.service")
    assert web == ImportedUnit("web.service", SLEEP, SLEEP_HASH, DesiredState.LAUNCHED, False, M1)
    assert next(u for u in result.units if u.name == "g.service").is_global
    assert result.holds == (M1,)  # M2's fleetpy agent reports already: no hold
    assert result.refused == () and result.has_changes


@pytest.mark.parametrize(
    ("unit", "machine", "note"),
    [
        (fleet_unit("a.service", target=None), None, "fleet had not placed it"),
        (fleet_unit("a.service", target=GONE), None, "which fleet no longer lists"),
        (fleet_unit("a.service", state="inactive", target=M1), None, ""),
        (fleet_unit("a.service", GLOBAL, target=M1), None, ""),
        (fleet_unit("t@.service", state="launched", target=M1), None, ""),
        (fleet_unit("a.service", state="loaded", target=M1), M1, ""),
    ],
)
def test_where_a_unit_goes(unit: FleetUnit, machine: str | None, note: str) -> None:
    result = plan(snapshot(unit), FleetpySide())
    (imported,) = result.units
    assert imported.machine == machine
    assert note in imported.note and bool(note) == bool(imported.note)
    assert result.holds == ((machine,) if machine else ())


@pytest.mark.parametrize(
    ("unit", "reason"),
    [
        (fleet_unit("a.service", SLEEP + "\n[X-Fleet]\nMachineMetdata=a=b\n"), "unknown [X-Fleet]"),
        (fleet_unit("a.service", "ExecStart=/bin/true\n"), "a.service:1"),
        (fleet_unit("a.service", "[Container]\nImage=busybox\n"), "[Container]"),
        (fleet_unit("a.service", GLOBAL + "MachineOf=b.service\n"), "Global"),
        (fleet_unit("no-suffix"), "no-suffix"),
    ],
)
def test_units_fleetpy_refuses_are_named_with_the_reason_and_not_written(
    unit: FleetUnit, reason: str
) -> None:
    result = plan(snapshot(unit, fleet_unit("ok.service", target=M1)), FleetpySide())
    assert names(result) == {"ok.service": M1}
    (left,) = result.refused
    assert left.name == unit.name and reason in left.why


def test_a_machine_id_fleetpy_does_not_take_is_refused_where_it_would_be_written() -> None:
    odd = "a machine"
    fleet = snapshot(fleet_unit("a.service", target=odd), machines={odd: {"rack": "r1"}})
    result = plan(fleet, FleetpySide())
    assert result.units == () and result.holds == () and result.metadata == {}
    assert result.refused == (
        Left("a.service", "fleet placed it on 'a machine', a machine id fleetpy does not take"),
    )
    assert result.kept == (
        Left("machine a machine", "metadata not migrated: a machine id fleetpy does not take"),
    )


def test_a_unit_whose_contents_fleet_lost_is_refused() -> None:
    fleet = FleetSnapshot({}, {}, {"a.service": "ab" * 20})
    assert plan(fleet, FleetpySide()).refused == (
        Left("a.service", "its contents (abababa) are missing from fleet's keyspace"),
    )


def test_what_fleetpy_has_already_is_left_as_it_is() -> None:
    fleet = snapshot(
        fleet_unit("same.service", target=M1),
        fleet_unit("other.service", "[Service]\nExecStart=/bin/other\n", target=M1),
        fleet_unit("newer.service", target=M1),
    )
    side = FleetpySide(
        units={"same.service": SLEEP_HASH, "other.service": SLEEP_HASH},
        newer_units={"newer.service"},
        registered={M1},
    )
    result = plan(fleet, side)
    assert result.units == () and not result.has_changes
    assert result.unchanged == ("same.service",)
    assert [r.name for r in result.refused] == ["other.service"]
    assert "other contents" in result.refused[0].why
    assert [k.name for k in result.kept] == ["newer.service"]


def test_migrating_again_after_the_first_wrote_everything_plans_nothing() -> None:
    fleet = snapshot(
        fleet_unit("web.service", target=M1),
        fleet_unit("g.service", GLOBAL),
        machines={M1: {"rack": "r1"}, M2: {}},
    )
    first = plan(fleet, FleetpySide())
    assert first.has_changes and first.holds == (M1,) and first.metadata == {M1: {"rack": "r1"}}
    side = FleetpySide(
        units={u.name: u.hash for u in first.units},
        overlays={M1: {"rack": "r1"}},
        cordoned=set(first.holds),
    )
    again = plan(fleet, side)
    assert not again.has_changes
    assert sorted(again.unchanged) == ["g.service", "web.service"]


@pytest.mark.parametrize(
    ("overlay", "metadata", "kept"),
    [
        (None, {M1: {"rack": "r1"}}, ""),
        ({"rack": "r1"}, {}, ""),
        ({"rack": "r2"}, {}, "operators set its metadata in fleetpy already"),
    ],
)
def test_machine_metadata_goes_into_the_operators_overlay_unless_they_set_one(
    overlay: dict[str, str | None] | None, metadata: dict[str, dict[str, str]], kept: str
) -> None:
    side = FleetpySide(overlays={M1: overlay} if overlay is not None else {})
    result = plan(snapshot(machines={M1: {"rack": "r1"}}), side)
    assert result.metadata == metadata
    assert [k.why.split(";")[0] for k in result.kept] == ([kept] if kept else [])


def test_metadata_fleetpy_does_not_take_is_left_with_the_reason() -> None:
    result = plan(snapshot(machines={M1: {"bad key": "x"}, M2: {"a": "1,2"}}), FleetpySide())
    assert result.metadata == {}
    assert [k.name for k in result.kept] == [f"machine {M1}", f"machine {M2}"]
    assert "invalid metadata key" in result.kept[0].why
    assert "invalid metadata value" in result.kept[1].why


def test_a_cordoned_machine_is_not_held_again() -> None:
    result = plan(snapshot(fleet_unit("a.service", target=M1)), FleetpySide(cordoned={M1}))
    assert result.holds == ()


def test_fleet_units_keep_their_meaning_in_fleetpys_text() -> None:
    text = "[Unit]\nDescription=a b\n\n[Service]\nExecStart=/bin/sh -c \\\n  'sleep 1'\n"
    found = converted(fleet_unit("a.service", text))
    assert isinstance(found, ImportedUnit)
    assert parse_unit(found.text).values("Service", "ExecStart") == parse_unit(text).values(
        "Service", "ExecStart"
    )
