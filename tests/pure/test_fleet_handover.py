"""The hand-over's pure decisions (fleetpy/fleet_handover.py): which of fleet's unit files
the agent took over, which units it has not settled yet, what it runs here."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleetpy.fleet_handover import (
    desired_here,
    leftovers,
    not_running,
    pending,
    rejected,
    settled,
)
from fleetpy.model.records import ScheduleEntry, UnitState
from fleetpy.states import DesiredState

L, D = DesiredState.LAUNCHED, DesiredState.LOADED
FLEET = "/run/fleet/units/"
OURS = "/run/fleetpy/units/"


def entry(
    name: str, desired: DesiredState = L, text: str = "[Service]\nExecStart=/bin/true\n"
) -> ScheduleEntry:
    return ScheduleEntry(name, "h-" + name, desired, text)


def state(
    name: str, active: str, load: str = "loaded", digest: str | None = None, job: str = ""
) -> UnitState:
    digest = "h-" + name if digest is None else digest
    return UnitState(name, "m1", load, active, "x", digest, job=job)


@pytest.mark.parametrize(
    ("links", "handed", "kept"),
    [
        # the agent relinked it to its own file: fleet's copy goes
        ({"a.service": OURS + "a.service"}, ["a.service"], []),
        # still fleet's: a unit fleetpy does not run here stays under fleet
        ({"a.service": FLEET + "a.service"}, [], ["a.service"]),
        # fleet's link with a trailing-slash units dir (fleetd's default) is still fleet's
        ({"a.service": "/run/fleet/units//a.service"}, [], ["a.service"]),
        # no link at all: nothing runs from that file
        ({}, ["a.service"], []),
    ],
)
def test_leftovers(links: dict[str, str | None], handed: list[str], kept: list[str]) -> None:
    assert leftovers(["a.service"], links) == (handed, kept)


def test_leftovers_sorts_and_splits_several() -> None:
    links: dict[str, str | None] = {
        "b.service": FLEET + "b.service",
        "a.service": OURS + "a.service",
        "c@1.service": OURS + "c@1.service",
    }
    assert leftovers(["c@1.service", "b.service", "a.service"], links) == (
        ["a.service", "c@1.service"],
        ["b.service"],
    )


@pytest.mark.parametrize(
    ("desired", "reported", "done"),
    [
        (L, None, False),  # nothing reported yet
        (L, state("u", "active"), True),
        (L, state("u", "activating"), True),
        (L, state("u", "inactive"), False),
        (L, state("u", "failed"), False),  # fleet's failure: the agent has not started it
        (L, state("u", "failed", job="failed"), True),  # the agent's start failed: reported
        (L, state("u", "inactive", job="pending"), False),
        (L, state("u", "active", digest="h-old"), False),  # another version's state
        (D, state("u", "inactive"), True),
        (D, state("u", "inactive", load="not-found"), False),
        (L, state("u", "rejected", load="not-loaded"), True),  # refused, and says why
    ],
)
def test_settled(desired: DesiredState, reported: UnitState | None, done: bool) -> None:
    assert settled(entry("u", desired), reported) is done


def test_pending_lists_what_is_not_settled() -> None:
    desired = {"a.service": entry("a.service"), "b.service": entry("b.service", D)}
    assert pending(desired, {}) == ["a.service", "b.service"]
    assert pending(desired, {"a.service": state("a.service", "active")}) == ["b.service"]


def test_not_running_names_launched_units_that_do_not_run() -> None:
    desired = {n: entry(n) for n in ("a.service", "b.service", "c.service")}
    desired["d.service"] = entry("d.service", D)
    states = {
        "a.service": state("a.service", "active"),
        "b.service": state("b.service", "failed", job="failed"),
        "d.service": state("d.service", "inactive"),
    }
    assert not_running(desired, states) == ["b.service", "c.service"]
    states["c.service"] = replace(state("c.service", "rejected", "not-loaded"), message="unsigned")
    assert not_running(desired, states) == ["b.service"]
    assert rejected(states) == {"c.service": "unsigned"}


def test_desired_here_takes_placed_and_matching_globals() -> None:
    web = "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nMachineMetadata=role=web\n"
    placed = {
        "p.service": entry("p.service"),
        "off.service": ScheduleEntry("off.service", "h", DesiredState.INACTIVE, ""),
    }
    globals_ = {
        "web.service": entry("web.service", text=web),
        "any.service": entry("any.service", D, "[X-Fleet]\nGlobal=true\n"),
    }
    chosen = desired_here(placed, globals_, "m1", {"role": "web"})
    assert sorted(chosen) == ["any.service", "p.service", "web.service"]
    assert sorted(desired_here(placed, globals_, "m1", {"role": "db"})) == [
        "any.service",
        "p.service",
    ]
