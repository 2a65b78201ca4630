"""Class 10 (typos that drop constraints: misspelled sections, MachineOf= cycles)
and class 11 (a command of many transactions that fails half-way says what it wrote).

Here: the tests that need fleetpy or etcd processes of its own, TLS etcd, hosts or tools of the machine (README "Tests"); the others are in
tests/integration/hostile/test_hostile_units.py."""

from __future__ import annotations

import pytest

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
