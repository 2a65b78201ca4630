"""Container health over time (fleetpy.health): which units are followed and under which
container name, docker's events read, the health reported, and which units are restarted
in place (once per turn to unhealthy, only running ones, not with HealthOnFailure=none)."""

from __future__ import annotations

import json

import pytest

from fleetpy.health import (
    Check,
    Health,
    HealthMonitor,
    Seen,
    SimulatedHealth,
    check_of,
    due_restarts,
    parse_event,
    unit_health,
)
from fleetpy.model.records import UnitState
from fleetpy.states import ActiveState, SubState
from fleetpy.unitfile.container import HealthOnFailure, expand_unit
from fleetpy.unitfile.unit import content_hash, parse_unit
from fleetpy.unitmanager import ObservedUnit, SimulatedUnitManager, StartUnit, WriteUnit

MACHINE = "0123456789abcdef0123456789abcdef"


def stored(source: str, name: str = "box.service") -> str:
    """A unit's text as stored: its [Container] expanded."""
    return expand_unit(parse_unit(source, name), name).serialize()


BOX = "[Container]\nImage=local/busybox\nHealthCmd=test -e /tmp/ok\n"


@pytest.mark.parametrize(
    ("source", "name", "container", "on_failure"),
    [
        (BOX, "box.service", f"fleetpy-box-{MACHINE}", HealthOnFailure.RESTART),
        (BOX, "web@2.service", f"fleetpy-web-2-{MACHINE}", HealthOnFailure.RESTART),
        (BOX + "ContainerName=db-%i\n", "db@x.service", "db-x", HealthOnFailure.RESTART),
        (BOX + "HealthOnFailure=none\n", "box.service", f"fleetpy-box-{MACHINE}", "none"),
        (BOX + "HealthOnFailure=restart\n", "box.service", f"fleetpy-box-{MACHINE}", "restart"),
    ],
)
def test_check_of_a_container_unit_with_a_health_check(
    source: str, name: str, container: str, on_failure: str
) -> None:
    text = stored(source, name)
    assert check_of(name, text, "h1", MACHINE) == Check(
        name, "h1", container, HealthOnFailure(on_failure)
    )


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("[Service]\nExecStart=/bin/sleep 1\n", "plain.service"),
        # Named like the key but no container: not followed.
        ("[Service]\nExecStart=/bin/echo HealthCmd=x\n", "echo.service"),
        (stored("[Container]\nImage=local/busybox\n"), "box.service"),
        ("[Service\nHealthCmd=", "broken.service"),
    ],
)
def test_units_without_a_container_health_check_are_not_followed(text: str, name: str) -> None:
    assert check_of(name, text, "h", MACHINE) is None


def event(action: str, name: object = "c1") -> str:
    return json.dumps(
        {"Type": "container", "Action": action, "Actor": {"Attributes": {"name": name}}}
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (event("health_status: unhealthy"), ("c1", Health.UNHEALTHY)),
        (event("health_status: healthy"), ("c1", Health.HEALTHY)),
        (event("start"), ("c1", Health.STARTING)),
        (event("die"), ("c1", Health.NONE)),
        (event("exec_start: sh -c x"), None),
        (event("health_status: unhealthy", name=3), None),
        ('{"Action": "die"}', None),
        ("not json", None),
        ("[]", None),
    ],
)
def test_docker_events_read(line: str, expected: tuple[str, Health] | None) -> None:
    assert parse_event(line) == expected


def observed(
    active: str = ActiveState.ACTIVE, launched: bool = True, content: str = "h"
) -> ObservedUnit:
    sub = SubState.RUNNING if active == ActiveState.ACTIVE else SubState.DEAD
    return ObservedUnit("box.service", content, "loaded", active, sub, launched)


@pytest.mark.parametrize(
    ("unit", "seen", "health"),
    [
        (None, Seen(Health.HEALTHY, 1), Health.NONE),
        (observed(ActiveState.INACTIVE), Seen(Health.UNHEALTHY, 1), Health.NONE),
        (observed(ActiveState.FAILED), Seen(Health.UNHEALTHY, 1), Health.NONE),
        (observed(ActiveState.ACTIVATING), Seen(Health.UNHEALTHY, 1), Health.STARTING),
        (observed(), Seen(Health.UNHEALTHY, 1), Health.UNHEALTHY),
        (observed(), Seen(Health.HEALTHY, 2), Health.HEALTHY),
        (observed(), None, Health.NONE),
    ],
)
def test_health_reported(unit: ObservedUnit | None, seen: Seen | None, health: Health) -> None:
    assert unit_health(unit, seen) == health


RESTART = Check("box.service", "h", "c1", HealthOnFailure.RESTART)
UNHEALTHY = {"c1": Seen(Health.UNHEALTHY, 3)}


@pytest.mark.parametrize(
    ("check", "unit", "seen", "acted", "due"),
    [
        (RESTART, observed(), UNHEALTHY, {}, ["box.service"]),
        (RESTART, observed(), UNHEALTHY, {"box.service": 1}, ["box.service"]),  # a new turn
        (RESTART, observed(), UNHEALTHY, {"box.service": 3}, []),  # this turn acted on
        (RESTART, observed(), {"c1": Seen(Health.HEALTHY, 4)}, {}, []),
        (RESTART, observed(), {}, {}, []),
        (RESTART, observed(ActiveState.ACTIVATING), UNHEALTHY, {}, []),  # its health wait's
        (RESTART, observed(ActiveState.FAILED), UNHEALTHY, {}, []),  # systemd's Restart='s
        (RESTART, observed(launched=False), UNHEALTHY, {}, []),  # stopped by the agent
        (RESTART, observed(content="other"), UNHEALTHY, {}, []),  # being replaced
        (Check("box.service", "h", "c1", HealthOnFailure.NONE), observed(), UNHEALTHY, {}, []),
    ],
)
def test_due_restarts(
    check: Check,
    unit: ObservedUnit,
    seen: dict[str, Seen],
    acted: dict[str, int],
    due: list[str],
) -> None:
    assert due_restarts({check.unit: check}, {unit.name: unit}, seen, acted) == due


def running_box(source: str) -> tuple[SimulatedUnitManager, str, str]:
    text = stored(source)
    digest = content_hash(text)
    manager = SimulatedUnitManager()
    manager.execute([WriteUnit("box.service", digest, text), StartUnit("box.service")])
    return manager, text, digest


def test_monitor_restarts_once_per_unhealthy_turn_and_reports_health() -> None:
    manager, text, digest = running_box(BOX)
    docker, changes, restarted = SimulatedHealth(), list[int](), list[str]()
    monitor = HealthMonitor(MACHINE, docker, lambda: changes.append(1))
    monitor.follow([("box.service", digest, text)])
    container = f"fleetpy-box-{MACHINE}"
    assert docker.followed == {container}

    def state() -> str:
        unit = manager.observe()["box.service"]
        return monitor.state(unit.state(MACHINE), unit).health

    docker.set(container, Health.HEALTHY)
    assert state() == "healthy" and changes == [1]
    assert monitor.restart_unhealthy(manager, restarted.append) == []
    docker.set(container, Health.UNHEALTHY)
    assert state() == "unhealthy"
    assert monitor.restart_unhealthy(manager, restarted.append) == ["box.service"]
    assert monitor.restart_unhealthy(manager, restarted.append) == []  # acted on once
    assert restarted == ["box.service"]
    docker.set(container, Health.HEALTHY)
    docker.set(container, Health.UNHEALTHY)  # unhealthy again: a new turn
    assert monitor.restart_unhealthy(manager, restarted.append) == ["box.service"]
    # Followed again with the same units: nothing asked of docker anew.
    monitor.follow([("box.service", digest, text)])
    assert monitor.restart_unhealthy(manager, restarted.append) == []
    monitor.follow([])
    assert docker.followed == frozenset()
    unit = manager.observe()["box.service"]
    assert monitor.state(unit.state(MACHINE), unit).health == ""


def test_monitor_reports_but_does_not_restart_with_health_on_failure_none() -> None:
    manager, text, digest = running_box(BOX + "HealthOnFailure=none\n")
    docker = SimulatedHealth()
    monitor = HealthMonitor(MACHINE, docker, lambda: None)
    monitor.follow([("box.service", digest, text)])
    docker.set(f"fleetpy-box-{MACHINE}", Health.UNHEALTHY)
    unit = manager.observe()["box.service"]
    assert monitor.state(unit.state(MACHINE), unit).health == "unhealthy"
    assert monitor.restart_unhealthy(manager, lambda name: None) == []


def test_state_records_health_and_reads_old_records() -> None:
    state = UnitState(
        "box.service", MACHINE, "loaded", "active", "running", "h", health="unhealthy"
    )
    raw = state.to_json().encode()
    assert UnitState.from_json("box.service", MACHINE, raw) == state
    plain = UnitState("box.service", MACHINE, "loaded", "active", "running", "h")
    assert "health" not in json.loads(plain.to_json())  # unchanged for units without
    old = b'{"load": "loaded", "active": "active", "sub": "running", "hash": "h", "message": ""}'
    assert UnitState.from_json("box.service", MACHINE, old) == plain
