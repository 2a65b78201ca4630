"""plan(): table tests (Snapshot in -> exact changes out), no etcd."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Any

import pytest

from fleetpy.scheduler import (
    Change,
    InvalidUnit,
    Machine,
    Move,
    PlacementPlan,
    Retarget,
    Schedule,
    Scheduled,
    SetReason,
    Snapshot,
    UnitSpec,
    Unschedule,
)
from fleetpy.scheduler import plan_placements as plan
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import FleetOptions, is_template, template_of


def unit(
    name: str, desired: str = "launched", hash: str = "h", since: int = 0, **options: Any
) -> UnitSpec:
    """options: FleetOptions' fields."""
    return UnitSpec(name, hash, DesiredState(desired), FleetOptions(**options), since=since)


def duel(a_since: int, b_since: int, **b_options: Any) -> list[UnitSpec]:
    """a.service and b.service replacing each other, started (written) at these revisions."""
    return [
        unit("a.service", since=a_since, replaces=("b.service",)),
        unit("b.service", since=b_since, replaces=("a.service",), **b_options),
    ]


def meta(*pairs: tuple[str, str | tuple[str, ...]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """MachineMetadata requirement: meta(("region", "north"), ("disk", ("ssd", "nvme")))."""
    return tuple((key, values if isinstance(values, tuple) else (values,)) for key, values in pairs)


def cluster(*ids: str, **metadata: Mapping[str, str]) -> dict[str, Machine]:
    """Machines by id; metadata by id via keyword, e.g. cluster("m1", m1={"region": "north"})."""
    return {machine: Machine(machine, dict(metadata.get(machine, {}))) for machine in ids}


def at(machine: str, desired: str = "launched", hash: str = "h") -> Scheduled:
    return Scheduled(machine, DesiredState(desired), hash)


def snap(
    units: list[UnitSpec],
    machines: dict[str, Machine],
    schedule: dict[str, Scheduled] | None = None,
    reasons: dict[str, str] | None = None,
) -> Snapshot:
    return Snapshot({u.name: u for u in units}, machines, schedule or {}, reasons or {})


def S(name: str, machine: str, desired: str = "launched", hash: str = "h") -> Schedule:
    return Schedule(name, machine, DesiredState(desired), hash)


def MV(name: str, old: str, new: str, desired: str = "launched", hash: str = "h") -> Move:
    return Move(name, old, new, DesiredState(desired), hash)


ZONED = cluster(
    "a1",
    "a2",
    "a3",
    "a4",
    "b1",
    "c1",
    a1={"zone": "a"},
    a2={"zone": "a"},
    a3={"zone": "a"},
    a4={"zone": "a"},
    b1={"zone": "b"},
    c1={"zone": "c"},
)

CASES: list[tuple[str, Snapshot, list[Change]]] = [
    # ---- least loaded, tie-break, stability --------------------------------
    (
        "least loaded wins",
        snap(
            [unit("old.service"), unit("new.service")],
            cluster("m1", "m2"),
            {"old.service": at("m1")},
        ),
        [S("new.service", "m2")],
    ),
    (
        "ties broken by machine id",
        snap([unit("x.service")], cluster("m3", "m1", "m2")),
        [S("x.service", "m1")],
    ),
    (
        "placements earlier in the same plan count as load",
        snap(
            [unit("a.service"), unit("b.service"), unit("c.service"), unit("d.service")],
            cluster("m2", "m1"),
        ),
        [S("a.service", "m1"), S("b.service", "m2"), S("c.service", "m1"), S("d.service", "m2")],
    ),
    (
        "valid placements stay even when unbalanced",
        snap(
            [unit("a.service"), unit("b.service"), unit("c.service")],
            cluster("m1", "m2"),
            {"a.service": at("m1"), "b.service": at("m1"), "c.service": at("m1")},
        ),
        [],
    ),
    # ---- machine loss -------------------------------------------------------
    (
        "unit on a lost machine moves to the least loaded live one",
        snap(
            [unit("a.service"), unit("b.service"), unit("c.service")],
            cluster("m2", "m3"),
            {"a.service": at("m1"), "b.service": at("m2")},
        ),
        [MV("a.service", "m1", "m3"), S("c.service", "m2")],
    ),
    (
        "unit on a lost machine with nowhere to go is unscheduled with a reason",
        snap([unit("a.service", machine_id="m1")], cluster("m2"), {"a.service": at("m1")}),
        [Unschedule("a.service", "m1"), SetReason("a.service", "no machine with id m1 is alive")],
    ),
    (
        "no machines alive: nothing is unscheduled, the reason says why",
        snap(
            [unit("a.service"), unit("b.service"), unit("new.service")],
            {},
            {"a.service": at("m1"), "b.service": at("m2")},
        ),
        [
            SetReason(
                "a.service", "left on machine m1, which is not reporting: no machines are alive"
            ),
            SetReason(
                "b.service", "left on machine m2, which is not reporting: no machines are alive"
            ),
            SetReason("new.service", "no machines are alive"),
        ],
    ),
    (
        "no machines alive: a unit the user stopped is still unscheduled",
        snap([unit("a.service", "inactive")], {}, {"a.service": at("m1")}),
        [Unschedule("a.service", "m1")],
    ),
    (
        "held machine keeps its units; new units go to live machines",
        snap(
            [unit("a.service"), unit("b.service", conflicts=("a.service",)), unit("c.service")],
            {"m1": Machine("m1", {}, held="grace"), "m2": Machine("m2")},
            {"a.service": at("m1")},
        ),
        [
            S("b.service", "m2"),
            S("c.service", "m2"),
            SetReason("a.service", "left on machine m1, which is not reporting: grace"),
        ],
    ),
    (
        "held machine: constraints are not re-checked, MachineID units stay",
        snap(
            [unit("a.service", machine_id="m1", machine_metadata=meta(("role", "db")))],
            {"m1": Machine("m1", {}, held="grace"), "m2": Machine("m2", {"role": "db"})},
            {"a.service": at("m1")},
        ),
        [SetReason("a.service", "left on machine m1, which is not reporting: grace")],
    ),
    (
        "held machine takes no new MachineID or MachineOf units",
        snap(
            [
                unit("db.service"),
                unit("x.service", machine_id="m1"),
                unit("side.service", machine_of=("db.service",)),
            ],
            {"m1": Machine("m1", {}, held="grace"), "m2": Machine("m2")},
            {"db.service": at("m1")},
        ),
        [
            SetReason("db.service", "left on machine m1, which is not reporting: grace"),
            SetReason("side.service", "waiting for db.service, whose machine m1 is not reporting"),
            SetReason("x.service", "no machine with id m1 is alive"),
        ],
    ),
    (
        "every machine held: new units wait, placed ones stay",
        snap(
            [unit("a.service"), unit("b.service")],
            {"m1": Machine("m1", {}, held="mass loss")},
            {"a.service": at("m1")},
        ),
        [
            SetReason("a.service", "left on machine m1, which is not reporting: mass loss"),
            SetReason("b.service", "no machines are alive"),
        ],
    ),
    (
        "invalid units: the reason says what is wrong while they should run",
        replace(
            snap(
                [],
                cluster("m1"),
                {"bad.service": at("m1")},
                {"off.service": "invalid unit: old", "gone.service": "no machines are alive"},
            ),
            invalid={
                "bad.service": InvalidUnit("bad.service", DesiredState.LAUNCHED, "no [Service]"),
                "off.service": InvalidUnit("off.service", DesiredState.INACTIVE, "no [Service]"),
            },
        ),
        [
            Unschedule("bad.service", "m1"),
            SetReason("bad.service", "invalid unit: no [Service]"),
            SetReason("gone.service", None),
            SetReason("off.service", None),
        ],
    ),
    (
        "machine back: its note is cleared",
        snap(
            [unit("a.service")],
            cluster("m1"),
            {"a.service": at("m1")},
            {"a.service": "left on machine m1, which is not reporting: grace"},
        ),
        [SetReason("a.service", None)],
    ),
    # ---- MachineID ----------------------------------------------------------
    (
        "MachineID pins to that machine even if busier",
        snap(
            [unit("busy.service"), unit("x.service", machine_id="m1")],
            cluster("m1", "m2"),
            {"busy.service": at("m1")},
        ),
        [S("x.service", "m1")],
    ),
    (
        "MachineID of a dead machine",
        snap([unit("x.service", machine_id="1234abcd")], cluster("m1")),
        [SetReason("x.service", "no machine with id 1234abcd is alive")],
    ),
    (
        "MachineID machine that lacks the metadata",
        snap(
            [unit("x.service", machine_id="m1", machine_metadata=meta(("region", "north")))],
            cluster("m1", m1={"region": "south"}),
        ),
        [SetReason("x.service", "machine m1 cannot take it: it lacks region=north")],
    ),
    # ---- MachineMetadata ----------------------------------------------------
    (
        "MachineMetadata picks a matching machine",
        snap(
            [unit("x.service", machine_metadata=meta(("region", "north")))],
            cluster("m1", "m2", m1={"region": "south"}, m2={"region": "north"}),
        ),
        [S("x.service", "m2")],
    ),
    (
        "MachineMetadata: OR within a key",
        snap(
            [unit("x.service", machine_metadata=meta(("region", ("east", "north"))))],
            cluster(
                "m1",
                "m2",
                "m3",
                m1={"region": "south"},
                m2={"region": "north"},
                m3={"region": "east"},
            ),
        ),
        [S("x.service", "m2")],
    ),
    (
        "MachineMetadata: AND across keys",
        snap(
            [unit("x.service", machine_metadata=meta(("region", "north"), ("disk", "ssd")))],
            cluster(
                "m1",
                "m2",
                m1={"region": "north", "disk": "hdd"},
                m2={"region": "north", "disk": "ssd"},
            ),
        ),
        [S("x.service", "m2")],
    ),
    (
        "MachineMetadata nobody has",
        snap(
            [unit("x.service", machine_metadata=meta(("region", "north")))],
            cluster("m1", m1={"region": "south"}),
        ),
        [SetReason("x.service", "no machine has region=north")],
    ),
    (
        "MachineMetadata nobody has, several keys and values",
        snap(
            [
                unit(
                    "x.service",
                    machine_metadata=meta(("region", ("east", "north")), ("disk", "ssd")),
                )
            ],
            cluster("m1"),
        ),
        [SetReason("x.service", "no machine has (region=east or region=north) and disk=ssd")],
    ),
    (
        "placed unit whose machine no longer matches moves",
        snap(
            [unit("x.service", machine_metadata=meta(("region", "north")))],
            cluster("m1", "m2", m1={"region": "south"}, m2={"region": "north"}),
            {"x.service": at("m1")},
        ),
        [MV("x.service", "m1", "m2")],
    ),
    # ---- Conflicts ----------------------------------------------------------
    (
        "Conflicts: avoids a machine hosting a matching unit",
        snap(
            [unit("db.service"), unit("x.service", conflicts=("db.service",)), unit("y.service")],
            cluster("m1", "m2"),
            {"db.service": at("m1"), "y.service": at("m2")},
        ),
        [S("x.service", "m2")],
    ),
    (
        "Conflicts: reverse direction, the placed unit's glob matches the newcomer",
        snap(
            [
                unit("lock.service", conflicts=("x*.service",)),
                unit("xy.service"),
                unit("other.service"),
            ],
            cluster("m1", "m2"),
            {"lock.service": at("m1"), "other.service": at("m2")},
        ),
        [S("xy.service", "m2")],
    ),
    (
        "Conflicts: non-matching glob does not exclude",
        snap(
            [
                unit("db.service"),
                unit("x.service", conflicts=("web@*.service",)),
                unit("y.service"),
            ],
            cluster("m1", "m2"),
            {"db.service": at("m1"), "y.service": at("m2")},
        ),
        [S("x.service", "m1")],
    ),
    (
        "Conflicts among template instances: one per machine, the rest get a reason",
        snap(
            [unit(f"web@{i}.service", conflicts=("web@*.service",)) for i in (1, 2, 3)],
            cluster("m1", "m2"),
        ),
        [
            S("web@1.service", "m1"),
            S("web@2.service", "m2"),
            SetReason(
                "web@3.service",
                "conflicts with web@1.service and web@2.service on every eligible machine",
            ),
        ],
    ),
    (
        "Conflicts on the only machine",
        snap(
            [unit("web@2.service"), unit("x.service", conflicts=("web@*",))],
            cluster("m1"),
            {"web@2.service": at("m1")},
        ),
        [SetReason("x.service", "conflicts with web@2.service on every eligible machine")],
    ),
    (
        "two placed units that conflict: the first by name keeps its machine",
        snap(
            [unit("a.service", conflicts=("b.service",)), unit("b.service")],
            cluster("m1", "m2"),
            {"a.service": at("m1"), "b.service": at("m1")},
        ),
        [MV("b.service", "m1", "m2")],
    ),
    # ---- MachineOf ----------------------------------------------------------
    (
        "MachineOf joins its target even on a busier machine",
        snap(
            [
                unit("app.service"),
                unit("log.service", machine_of=("app.service",)),
                unit("z.service"),
            ],
            cluster("m1", "m2"),
            {"app.service": at("m1")},
        ),
        [S("log.service", "m1"), S("z.service", "m2")],
    ),
    (
        "MachineOf chain placed in one plan, targets first",
        snap(
            [
                unit("a.service", machine_of=("b.service",)),
                unit("b.service", machine_of=("c.service",)),
                unit("c.service"),
                unit("busy.service"),
            ],
            cluster("m1", "m2"),
            {"busy.service": at("m1")},
        ),
        [S("c.service", "m2"), S("b.service", "m2"), S("a.service", "m2")],
    ),
    (
        "MachineOf waits for an unplaced target",
        snap(
            [
                unit("log.service", machine_of=("app.service",)),
                unit("app.service", desired="inactive"),
            ],
            cluster("m1"),
        ),
        [SetReason("log.service", "waiting for app.service to be placed; app.service is inactive")],
    ),
    (
        "MachineOf waits for a target that cannot be placed",
        snap(
            [
                unit("app.service", machine_id="gone"),
                unit("log.service", machine_of=("app.service",)),
            ],
            cluster("m1"),
        ),
        [
            SetReason("app.service", "no machine with id gone is alive"),
            SetReason("log.service", "waiting for app.service to be placed"),
        ],
    ),
    (
        "MachineOf cycle",
        snap(
            [
                unit("a.service", machine_of=("b.service",)),
                unit("b.service", machine_of=("a.service",)),
                unit("c.service", machine_of=("a.service",)),
            ],
            cluster("m1"),
        ),
        [
            SetReason("a.service", "MachineOf cycle: a.service -> b.service -> a.service"),
            SetReason("b.service", "MachineOf cycle: a.service -> b.service -> a.service"),
            SetReason("c.service", "waiting for a.service to be placed"),
        ],
    ),
    (
        "MachineOf dependent follows its target off a lost machine",
        snap(
            [
                unit("app.service"),
                unit("log.service", machine_of=("app.service",)),
                unit("x.service"),
            ],
            cluster("m2", "m3"),
            {"app.service": at("m1"), "log.service": at("m1"), "x.service": at("m2")},
        ),
        [MV("app.service", "m1", "m3"), MV("log.service", "m1", "m3")],
    ),
    (
        "MachineOf target on a machine the dependent may not use",
        snap(
            [
                unit("app.service"),
                unit(
                    "log.service",
                    machine_of=("app.service",),
                    machine_metadata=meta(("disk", "ssd")),
                ),
            ],
            cluster("m1"),
            {"app.service": at("m1")},
        ),
        [SetReason("log.service", "cannot join app.service on machine m1: it lacks disk=ssd")],
    ),
    (
        "several MachineOf: the machine all the targets share",
        snap(
            [
                unit("app.service"),
                unit("db.service", machine_of=("app.service",)),
                unit("log.service", machine_of=("app.service", "db.service")),
                unit("z.service"),
            ],
            cluster("m1", "m2"),
            {"app.service": at("m2"), "db.service": at("m2")},
        ),
        [S("log.service", "m2"), S("z.service", "m1")],
    ),
    (
        "several MachineOf on different machines: nowhere to go",
        snap(
            [
                unit("app.service"),
                unit("db.service"),
                unit("log.service", machine_of=("app.service", "db.service")),
            ],
            cluster("m1", "m2"),
            {"app.service": at("m1"), "db.service": at("m2")},
        ),
        [
            SetReason(
                "log.service", "cannot join app.service on machine m1: db.service is on machine m2"
            )
        ],
    ),
    (
        "several MachineOf: waits for each target",
        snap(
            [
                unit("app.service"),
                unit("db.service", desired="inactive"),
                unit("log.service", machine_of=("app.service", "db.service")),
            ],
            cluster("m1"),
            {"app.service": at("m1")},
        ),
        [SetReason("log.service", "waiting for db.service to be placed; db.service is inactive")],
    ),
    (
        "several MachineOf: a dependent rides along when a target moves",
        snap(
            [
                unit("app.service", machine_id="m2"),
                unit("db.service", machine_of=("app.service",)),
                unit("log.service", machine_of=("db.service", "app.service")),
            ],
            cluster("m1", "m2"),
            {"app.service": at("m1"), "db.service": at("m1"), "log.service": at("m1")},
        ),
        [
            MV("app.service", "m1", "m2"),
            MV("db.service", "m1", "m2"),
            MV("log.service", "m1", "m2"),
        ],
    ),
    (
        "MachineOf cycle through a second target",
        snap(
            [
                unit("a.service", machine_of=("x.service", "b.service")),
                unit("b.service", machine_of=("a.service",)),
                unit("x.service"),
            ],
            cluster("m1"),
        ),
        [
            S("x.service", "m1"),
            SetReason("a.service", "MachineOf cycle: a.service -> b.service -> a.service"),
            SetReason("b.service", "MachineOf cycle: a.service -> b.service -> a.service"),
        ],
    ),
    # ---- Replaces -----------------------------------------------------------
    (
        "Replaces moves the replaced unit off the replacer's machine",
        snap(
            [unit("new.service", machine_id="m1", replaces=("old.service",)), unit("old.service")],
            cluster("m1", "m2"),
            {"old.service": at("m1")},
        ),
        [MV("old.service", "m1", "m2"), S("new.service", "m1")],
    ),
    (
        "Replaces: both already together, the replaced unit moves",
        snap(
            [unit("new.service", replaces=("old.service",)), unit("old.service")],
            cluster("m1", "m2"),
            {"new.service": at("m1"), "old.service": at("m1")},
        ),
        [MV("old.service", "m1", "m2")],
    ),
    (
        "Replaces: replaced unit with nowhere else to go is unscheduled",
        snap(
            [unit("new.service", replaces=("old.service",)), unit("old.service")],
            cluster("m1"),
            {"old.service": at("m1")},
        ),
        [
            Unschedule("old.service", "m1"),
            S("new.service", "m1"),
            SetReason("old.service", "replaced by new.service on every eligible machine"),
        ],
    ),
    (
        "Replaces: replaced unit elsewhere stays put",
        snap(
            [unit("new.service", replaces=("old.service",)), unit("old.service")],
            cluster("m1", "m2"),
            {"old.service": at("m2")},
        ),
        [S("new.service", "m1")],
    ),
    (
        "Replaces: a new replaced unit avoids the replacer's machine",
        snap(
            [unit("new.service", replaces=("old.service",)), unit("old.service")],
            cluster("m1", "m2"),
            {"new.service": at("m1")},
        ),
        [S("old.service", "m2")],
    ),
    (
        "Replaces each other: the one started last takes the machine",
        snap(
            duel(10, 20),
            cluster("m1"),
            {"a.service": at("m1")},
        ),
        [
            Unschedule("a.service", "m1"),
            S("b.service", "m1"),
            SetReason("a.service", "replaced by b.service on every eligible machine"),
        ],
    ),
    (
        "Replaces each other, started the other way round",
        snap(
            duel(20, 10),
            cluster("m1"),
            {"b.service": at("m1")},
        ),
        [
            Unschedule("b.service", "m1"),
            S("a.service", "m1"),
            SetReason("b.service", "replaced by a.service on every eligible machine"),
        ],
    ),
    (
        "Replaces each other, settled: the loser stays unplaced, nothing flaps",
        snap(
            duel(10, 20),
            cluster("m1"),
            {"b.service": at("m1")},
            {"a.service": "replaced by b.service on every eligible machine"},
        ),
        [],
    ),
    (
        "Replaces each other, both placed together: the later wins, then the later name",
        snap(
            duel(7, 7),
            cluster("m1"),
            {"a.service": at("m1"), "b.service": at("m1")},
        ),
        [
            Unschedule("a.service", "m1"),
            SetReason("a.service", "replaced by b.service on every eligible machine"),
        ],
    ),
    (
        "Replaces each other with room elsewhere: the earlier one moves, both run",
        snap(
            duel(10, 20, machine_id="m1"),
            cluster("m1", "m2"),
            {"a.service": at("m1")},
        ),
        [MV("a.service", "m1", "m2"), S("b.service", "m1")],
    ),
    (
        "Replaces around a cycle of three on one machine: only the last started runs",
        snap(
            [
                unit("a.service", since=3, replaces=("b.service",)),
                unit("b.service", since=1, replaces=("c.service",)),
                unit("c.service", since=2, replaces=("a.service",)),
            ],
            cluster("m1"),
            {"b.service": at("m1"), "c.service": at("m1")},
        ),
        [
            Unschedule("b.service", "m1"),
            Unschedule("c.service", "m1"),
            S("a.service", "m1"),
            SetReason("b.service", "replaced by a.service on every eligible machine"),
            SetReason("c.service", "replaced by a.service on every eligible machine"),
        ],
    ),
    # ---- Spread / MaxPerMachine -------------------------------------------
    (
        "Spread: 9 instances over 3 uneven zones go 3/3/3, least loaded within a zone",
        snap([unit(f"web@{i}.service", spread="zone") for i in range(1, 10)], ZONED),
        [
            S("web@1.service", "a1"),
            S("web@2.service", "b1"),
            S("web@3.service", "c1"),
            S("web@4.service", "a2"),
            S("web@5.service", "b1"),
            S("web@6.service", "c1"),
            S("web@7.service", "a3"),
            S("web@8.service", "b1"),
            S("web@9.service", "c1"),
        ],
    ),
    (
        "Spread counts instances already placed, not other templates",
        snap(
            [
                unit("web@1.service", spread="zone"),
                unit("web@2.service", spread="zone"),
                unit("db@1.service"),
                unit("db@2.service"),
            ],
            cluster("a1", "b1", a1={"zone": "a"}, b1={"zone": "b"}),
            {"web@1.service": at("a1"), "db@1.service": at("b1"), "db@2.service": at("b1")},
        ),
        [S("web@2.service", "b1")],
    ),
    (
        "MaxPerMachine caps instances of one template per machine",
        snap(
            [unit(f"web@{i}.service", max_per_machine=2) for i in range(1, 6)]
            + [unit("db@1.service")],
            cluster("m1", "m2"),
        ),
        [
            S("db@1.service", "m1"),
            S("web@1.service", "m2"),
            S("web@2.service", "m1"),
            S("web@3.service", "m2"),
            S("web@4.service", "m1"),
            SetReason(
                "web@5.service",
                "MaxPerMachine=2 reached for web@.service on every eligible machine",
            ),
        ],
    ),
    (
        "MaxPerMachine below the limit does not exclude",
        snap(
            [unit("web@1.service", max_per_machine=2), unit("web@2.service", max_per_machine=2)],
            cluster("m1"),
            {"web@1.service": at("m1")},
        ),
        [S("web@2.service", "m1")],
    ),
    (
        "mixed causes are summarized per cause",
        snap(
            [
                unit("web@1.service", max_per_machine=1),
                unit("db.service"),
                unit("web@2.service", max_per_machine=1, conflicts=("db.service",)),
            ],
            cluster("m1", "m2"),
            {"web@1.service": at("m1"), "db.service": at("m2")},
        ),
        [
            SetReason(
                "web@2.service",
                "every eligible machine is excluded: MaxPerMachine=1 reached for web@.service "
                "(1 machine); conflicts with db.service (1 machine)",
            )
        ],
    ),
    # ---- never placed ------------------------------------------------------
    (
        "global units are never placed; a stray schedule entry is removed",
        snap(
            [unit("g.service", is_global=True), unit("h.service", is_global=True)],
            cluster("m1"),
            {"g.service": at("m1")},
        ),
        [Unschedule("g.service", "m1")],
    ),
    (
        "template units are never placed",
        snap([unit("web@.service")], cluster("m1"), {"web@.service": at("m1")}),
        [Unschedule("web@.service", "m1")],
    ),
    (
        "inactive units are not placed and get unscheduled",
        snap(
            [unit("a.service", desired="inactive"), unit("b.service", desired="inactive")],
            cluster("m1"),
            {"a.service": at("m1")},
        ),
        [Unschedule("a.service", "m1")],
    ),
    (
        "destroyed units are unscheduled",
        snap([], cluster("m1"), {"gone.service": at("m1"), "gone-too.service": at("m9")}),
        [Unschedule("gone-too.service", "m9"), Unschedule("gone.service", "m1")],
    ),
    # ---- Retarget ------------------------------------------------------------
    (
        "desired state change is a Retarget",
        snap(
            [unit("a.service", desired="loaded")],
            cluster("m1"),
            {"a.service": at("m1", "launched")},
        ),
        [Retarget("a.service", "m1", DesiredState.LOADED, "h")],
    ),
    (
        "hash change is a Retarget",
        snap([unit("a.service", hash="h2")], cluster("m1"), {"a.service": at("m1")}),
        [Retarget("a.service", "m1", DesiredState.LAUNCHED, "h2")],
    ),
    (
        "signature change alone is a Retarget that carries it (a re-signed unit)",
        snap(
            [replace(unit("a.service"), signature="sig2")],
            cluster("m1"),
            {"a.service": Scheduled("m1", DesiredState.LAUNCHED, "h", "sig1")},
        ),
        [Retarget("a.service", "m1", DesiredState.LAUNCHED, "h", "sig2")],
    ),
    (
        "a new placement carries the signature",
        snap([replace(unit("a.service"), signature="sig")], cluster("m1")),
        [Schedule("a.service", "m1", DesiredState.LAUNCHED, "h", "sig")],
    ),
    (
        "moved unit carries its new desired state",
        snap(
            [unit("a.service", desired="loaded")],
            cluster("m2"),
            {"a.service": at("m1", "launched")},
        ),
        [MV("a.service", "m1", "m2", "loaded")],
    ),
    # ---- reasons ------------------------------------------------------------
    (
        "unchanged reason is not emitted again",
        snap(
            [unit("x.service", machine_id="gone")],
            cluster("m1"),
            reasons={"x.service": "no machine with id gone is alive"},
        ),
        [],
    ),
    (
        "changed reason is emitted",
        snap(
            [unit("x.service", machine_id="gone")],
            cluster("m1"),
            reasons={"x.service": "no machines are alive"},
        ),
        [SetReason("x.service", "no machine with id gone is alive")],
    ),
    (
        "placing a unit clears its reason",
        snap([unit("x.service")], cluster("m1"), reasons={"x.service": "no machines are alive"}),
        [S("x.service", "m1"), SetReason("x.service", None)],
    ),
    (
        "reasons of inactive units are cleared, and of units no longer submitted (plan owns them all)",
        snap(
            [unit("x.service", desired="inactive")],
            cluster("m1"),
            reasons={
                "x.service": "no machines are alive",
                "bad.service": "invalid unit: no [Service]",
            },
        ),
        [SetReason("bad.service", None), SetReason("x.service", None)],
    ),
    # ---- adoption: units found running without a schedule entry (a restore) ----
    (
        "a unit found running is placed where it runs, though another machine is less loaded",
        replace(
            snap([unit("a.service"), unit("b.service")], cluster("m1", "m2")),
            running={"a.service": "m2", "b.service": "m2"},
        ),
        [S("a.service", "m2"), S("b.service", "m2")],
    ),
    (
        "a running unit whose machine no longer fits its metadata is placed by the rules",
        replace(
            snap(
                [unit("a.service", machine_metadata=meta(("zone", "b")))],
                cluster("m1", "m2", m1={"zone": "a"}, m2={"zone": "b"}),
            ),
            running={"a.service": "m1"},
        ),
        [S("a.service", "m2")],
    ),
    (
        "a running unit is not adopted where a conflicting unit was placed first",
        replace(
            snap(
                [unit("a.service"), unit("b.service", conflicts=("a.service",))],
                cluster("m1", "m2"),
                {"a.service": at("m1")},
            ),
            running={"b.service": "m1"},
        ),
        [S("b.service", "m2")],
    ),
    (
        "a running unit on a machine that is gone, or held, is placed by the rules",
        replace(
            snap(
                [unit("a.service"), unit("b.service")],
                {**cluster("m1", "m2"), "m3": Machine("m3", {}, held="")},
            ),
            running={"a.service": "m9", "b.service": "m3"},
        ),
        [S("a.service", "m1"), S("b.service", "m2")],
    ),
    (
        "adoption counts as load for the units placed after it",
        replace(
            snap([unit("a.service"), unit("b.service"), unit("c.service")], cluster("m1", "m2")),
            running={"a.service": "m1"},
        ),
        [S("a.service", "m1"), S("b.service", "m2"), S("c.service", "m1")],
    ),
    # ---- ordering -------------------------------------------------------------
    (
        "unschedules and moves come before schedules, though b was decided first",
        snap(
            [unit("b.service"), unit("c.service")],
            cluster("m1", "m2"),
            {"a.service": at("m1"), "c.service": at("m9")},
        ),
        [Unschedule("a.service", "m1"), MV("c.service", "m9", "m2"), S("b.service", "m1")],
    ),
]


@pytest.mark.parametrize("snapshot, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(snapshot: Snapshot, expected: list[Change]) -> None:
    assert list(plan(snapshot)) == expected


# ---- properties ------------------------------------------------------------


def _mixed_snapshot(seed: int, unit_count: int = 300, machine_count: int = 40) -> Snapshot:
    rng = random.Random(seed)
    machines = {
        f"m{i:03d}": Machine(
            f"m{i:03d}", {"zone": rng.choice("abc"), "disk": rng.choice(("ssd", "hdd"))}
        )
        for i in range(machine_count)
    }
    units: list[UnitSpec] = []
    for i in range(unit_count):
        kind = rng.randrange(10)
        if kind == 0:
            units.append(unit(f"ssd@{i}.service", machine_metadata=meta(("disk", "ssd"))))
        elif kind == 1:
            units.append(unit(f"spread@{i}.service", spread="zone", max_per_machine=2))
        elif kind == 2:
            units.append(unit(f"lonely@{i}.service", conflicts=("lonely@*.service",)))
        elif kind == 3:
            units.append(
                unit(f"side-{i}.service", machine_of=(f"app-{rng.randrange(unit_count)}.service",))
            )
        elif kind == 4:
            units.append(
                unit(f"new-{i}.service", replaces=(f"app-{rng.randrange(unit_count)}.service",))
            )
        elif kind == 5:
            units.append(
                unit(f"pinned-{i}.service", machine_id=f"m{rng.randrange(machine_count + 5):03d}")
            )
        elif kind == 6:  # replacing each other, in pairs and longer cycles
            rival = f"duel-{rng.choice([i - 1, i + 1, rng.randrange(unit_count)])}.service"
            units.append(unit(f"duel-{i}.service", since=rng.randrange(4), replaces=(rival,)))
        else:
            units.append(
                unit(f"app-{i}.service", desired=rng.choice(("launched", "loaded", "inactive")))
            )
    return snap(units, machines)


def _apply(snapshot: Snapshot, result: PlacementPlan) -> Snapshot:
    schedule = dict(snapshot.schedule)
    reasons = dict(snapshot.reasons)
    for change in result:
        if isinstance(change, Unschedule):
            del schedule[change.unit]
        elif isinstance(change, Move):
            assert schedule[change.unit].machine == change.from_machine
            schedule[change.unit] = Scheduled(change.to_machine, change.desired, change.hash)
        elif isinstance(change, (Schedule, Retarget)):
            schedule[change.unit] = Scheduled(change.machine, change.desired, change.hash)
        elif change.reason is None:
            del reasons[change.unit]
        else:
            reasons[change.unit] = change.reason
    return replace(snapshot, schedule=schedule, reasons=reasons)


def _assert_valid(snapshot: Snapshot) -> None:
    """Every placement satisfies every constraint."""
    by_machine: dict[str, list[str]] = {}
    for name, entry in snapshot.schedule.items():
        by_machine.setdefault(entry.machine, []).append(name)
    for name, entry in snapshot.schedule.items():
        options = snapshot.units[name].options
        assert entry.machine in snapshot.machines
        assert options.matches_metadata(snapshot.machines[entry.machine].metadata)
        assert options.machine_id in (None, entry.machine)
        for target in options.machine_of:
            assert snapshot.schedule[target].machine == entry.machine
        neighbours = [other for other in by_machine[entry.machine] if other != name]
        for other in neighbours:
            assert not any(fnmatchcase(other, glob) for glob in options.conflicts), (name, other)
            assert other not in options.replaces, (name, other)
        if options.max_per_machine is not None:
            same = [o for o in by_machine[entry.machine] if template_of(o) == template_of(name)]
            assert len(same) <= options.max_per_machine


@pytest.mark.parametrize("machine_count", [40, 6])
@pytest.mark.parametrize("seed", range(5))
def test_applied_plan_is_valid_and_replanning_is_a_noop(seed: int, machine_count: int) -> None:
    snapshot = _mixed_snapshot(seed, machine_count=machine_count)
    settled = _apply(snapshot, plan(snapshot))
    _assert_valid(settled)
    assert list(plan(settled)) == []
    # Losing machines: everything still valid afterwards, and again stable.
    survivors = dict(list(settled.machines.items())[::2])
    shrunk = _apply(
        replace(settled, machines=survivors), plan(replace(settled, machines=survivors))
    )
    _assert_valid(shrunk)
    assert list(plan(shrunk)) == []


def test_plan_does_not_depend_on_input_order() -> None:
    snapshot = _mixed_snapshot(7)
    shuffled_units = list(snapshot.units.items())
    shuffled_machines = list(snapshot.machines.items())
    random.Random(1).shuffle(shuffled_units)
    random.Random(2).shuffle(shuffled_machines)
    shuffled = Snapshot(dict(shuffled_units), dict(shuffled_machines), {}, {})
    assert plan(shuffled) == plan(snapshot)


def test_name_dependent_failure_is_not_shared_between_identical_units() -> None:
    # web@1 is excluded only because the holder's glob names it; web@2, with
    # identical options, must still be placed.
    snapshot = snap(
        [
            unit("holder.service", conflicts=("web@1.service",)),
            unit("web@1.service"),
            unit("web@2.service"),
        ],
        cluster("m1"),
        {"holder.service": at("m1")},
    )
    assert list(plan(snapshot)) == [
        S("web@2.service", "m1"),
        SetReason("web@1.service", "conflicts with holder.service on every eligible machine"),
    ]


def test_plan_is_iterable_and_sized() -> None:
    result = plan(snap([unit("a.service")], cluster("m1")))
    assert (
        len(result) == 1
        and list(result) == [S("a.service", "m1")]
        and result.changes == tuple(result)
    )
    assert not plan(snap([], {}))


@pytest.mark.parametrize(
    "name, template, templated",
    [
        ("web@3.service", "web@.service", False),
        ("web@.service", None, True),
        ("web@a.b.service", "web@.service", False),
        ("plain.service", None, False),
    ],
)
def test_template_names(name: str, template: str | None, templated: bool) -> None:
    assert template_of(name) == template
    assert is_template(name) is templated
