"""Class 10 (typos that drop constraints: misspelled sections, MachineOf= cycles)
and class 11 (a command of many transactions that fails half-way says what it wrote).

fleetpy in process against the session's etcd (README "Tests")."""

from __future__ import annotations

import pytest

from fleetpy.errors import PartialWriteError
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import parse_unit

from support.hostile_harness import Hostile

BODY = "[Service]\nExecStart=/bin/true\n"


@pytest.mark.parametrize(
    "section, suggestion",
    [
        ("X-Flet", "X-Fleet"),
        ("x-fleet", "X-Fleet"),
        ("X-FLEET", "X-Fleet"),
        ("X-fleet", "X-Fleet"),
        ("X_Fleet", "X-Fleet"),
        ("XFleet", "X-Fleet"),
        ("X-Fleets", "X-Fleet"),
        ("X-Flee", "X-Fleet"),
        ("Fleet", "X-Fleet"),
        ("Servce", "Service"),
        ("service", "Service"),
        ("Instal", "Install"),
        ("Untis", "Unit"),
        ("Timr", "Timer"),
        ("SERVICE", "Service"),
    ],
)
def test_misspelled_sections_get_did_you_mean(
    seeded: Hostile, section: str, suggestion: str
) -> None:
    path = seeded.write("typo.service", f"{BODY}\n[{section}]\nConflicts=other.service\n")
    for verb in (("submit",), ("start", "--no-block"), ("load", "--no-block")):
        seeded.rejects(
            *verb,
            path,
            match=rf"unknown section \[{section}\] in typo.service; "
            rf"did you mean \[{suggestion}\]\?",
        )


@pytest.mark.parametrize("section", ["Bogus", "Network", "Match"])
def test_unknown_sections_are_refused(seeded: Hostile, section: str) -> None:
    path = seeded.write("odd.service", f"{BODY}\n[{section}]\nA=1\n")
    seeded.rejects("submit", path, match=rf"unknown section \[{section}\]")


def test_extension_sections_are_accepted(hostile: Hostile) -> None:
    path = hostile.write(
        "ext.service", f"{BODY}\n[X-Custom]\nAnything=1\n\n[X-Fleet]\nConflicts=x.service\n"
    )
    hostile.ok("submit", path)


CYCLES = [
    (
        {"a.service": "MachineOf=b.service", "b.service": "MachineOf=a.service"},
        r"MachineOf= cycle: a.service -> b.service -> a.service",
    ),
    (
        {
            "a.service": "MachineOf=b.service",
            "b.service": "MachineOf=c.service",
            "c.service": "MachineOf=a.service",
        },
        r"MachineOf= cycle: a.service -> b.service -> "
        r"c.service -> a.service",
    ),
    (
        {
            "a.service": "MachineOf=x.service\nMachineOf=b.service",
            "b.service": "X-ConditionMachineOf=a.service",
        },
        r"MachineOf= cycle: a.service -> b.service -> a.service",
    ),
]


@pytest.mark.parametrize("units, message", CYCLES)
def test_cycles_in_one_command(seeded: Hostile, units: dict[str, str], message: str) -> None:
    paths = [
        seeded.write(f"cyc/{name}", f"{BODY}\n[X-Fleet]\n{line}\n") for name, line in units.items()
    ]
    seeded.rejects("submit", *paths, match=message)
    seeded.rejects("start", "--no-block", *paths, match=message)


@pytest.mark.parametrize(
    "units",
    [
        {"a.service": "Replaces=b.service", "b.service": "Replaces=a.service"},
        {
            "a.service": "Replaces=x.service b.service",
            "b.service": "Replaces=c.service",
            "c.service": "Replaces=a.service",
        },
    ],
)
def test_replaces_cycles_are_legal(hostile: Hostile, units: dict[str, str]) -> None:
    # As in fleet: of units that replace each other, the one started last runs.
    paths = [
        hostile.write(f"cyc/{name}", f"{BODY}\n[X-Fleet]\n{line}\n") for name, line in units.items()
    ]
    hostile.ok("submit", *paths)
    hostile.ok("start", "--no-block", *paths)


def test_cycle_closed_against_submitted_units(hostile: Hostile) -> None:
    hostile.ok(
        "submit",
        hostile.write("a.service", f"{BODY}\n[X-Fleet]\nMachineOf=b.service\n"),
        hostile.write("b.service", f"{BODY}\n[X-Fleet]\nMachineOf=c.service\n"),
    )
    closing = hostile.write("c.service", f"{BODY}\n[X-Fleet]\nMachineOf=a.service\n")
    hostile.rejects(
        "start",
        "--no-block",
        closing,
        match=r"MachineOf= cycle: c.service -> a.service -> b.service -> c.service",
    )
    fine = hostile.write("other/c.service", f"{BODY}\n[X-Fleet]\nMachineOf=d.service\n")
    hostile.ok("submit", fine)


def test_cycle_between_template_instances(hostile: Hostile) -> None:
    hostile.ok(
        "submit",
        hostile.write("web@.service", f"{BODY}\n[X-Fleet]\nMachineOf=db@%i.service\n"),
        hostile.write("db@.service", f"{BODY}\n[X-Fleet]\nMachineOf=web@%i.service\n"),
    )
    hostile.rejects(
        "start",
        "--no-block",
        "web@1.service",
        "db@1.service",
        match=r"MachineOf= cycle: db@1.service -> web@1.service -> db@1.service",
    )
    hostile.ok("start", "--no-block", "web@1.service")  # alone: no cycle yet
    hostile.rejects(
        "start",
        "--no-block",
        "db@1.service",
        match=r"MachineOf= cycle: db@1.service -> web@1.service -> db@1.service",
    )


def test_partial_write_says_what_was_written(hostile: Hostile) -> None:
    """A lost race on a later transaction: the message names what was and wasn't written."""
    registry = Registry(RegistryConfig(endpoints=(hostile.etcd.endpoint,), prefix=hostile.prefix))
    try:
        units = {f"u{i:03d}.service": parse_unit(f"{BODY}X-Id={i}\n") for i in range(100)}
        changes = [
            UnitChange(name, DesiredState.LAUNCHED, unit.serialize(), unit.hash)
            for name, unit in units.items()
        ]
        known = registry.get_units(list(units))
        # Another client submits different contents for a unit of the third transaction
        # after our read: our guarded write of that chunk fails and the re-read refuses it.
        rival = parse_unit(f"{BODY}X-Rival=1\n")
        registry.change_units([UnitChange("u090.service", None, rival.serialize(), rival.hash)])
        with pytest.raises(PartialWriteError) as info:
            registry.change_units(changes, known)
        message = str(info.value)
        assert message.startswith(
            "wrote 80 of 100 units (u000.service, u001.service, "
            "u002.service and 77 more) before an error; not written: "
            "u080.service, u081.service, u082.service and 17 more: "
            "u090.service is already submitted with different contents"
        )
        assert "\n" not in message
        assert len(registry.list_units()) == 81
    finally:
        registry.close()
