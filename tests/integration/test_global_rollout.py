"""Rolling updates of global units against a real etcd, an engine and simulated hosts (in
this process): `apply` of a new version and `restart` go a few machines at a time, a
failing version stops the roll where it is, a killed apply is resumed by the next one,
and a machine that joins mid-roll runs the new version."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings
from fleetpy.deploy.rollout import ApplyEvent, ApplyOptions, apply_deployment, plan_deployment
from fleetpy.errors import DeploymentError
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitmanager import SimulatedUnitManager

from support.cli_run import Run
from support.global_rollout import (
    UNIT,
    Downtime,
    first_version,
    monitor,
    monitor_hash,
    running,
    started_everywhere,
)
from support.rollout import Cluster, apply, failing_apply_with_rollback, render
from support.waiting import until


@pytest.fixture
def cluster(registry_config: RegistryConfig) -> Iterator[Cluster]:
    c = Cluster(registry_config)
    yield c
    c.close()


def test_a_new_version_rolls_max_unavailable_machines_at_a_time(
    cluster: Cluster, tmp_path: Path
) -> None:
    registry, directory = first_version(cluster, tmp_path)
    for version, at_once, steps in (("2", 1, 3), ("3", 2, 2)):
        watch = Downtime(registry)
        events: list[ApplyEvent] = []
        directory = monitor(tmp_path, version)
        name, units = render(directory)
        plan = plan_deployment(registry, name, units, f"c{version}")
        try:
            result = apply_deployment(
                registry,
                plan,
                units,
                ApplyOptions(max_unavailable=at_once, min_ready=0.2, timeout=20),
                events.append,
            )
            watch.caught_up(directory)
        finally:
            watch.cancel()
        assert UNIT in result.replaced
        assert len([e for e in events if e.step == "roll"]) == steps
        assert 1 <= watch.worst <= at_once  # every machine at once before
        started_everywhere(cluster, directory)
        entry = registry.get_global(UNIT)
        assert entry is not None and entry[0].roll is None


def test_a_failing_version_stops_the_roll_on_its_first_machine(
    cluster: Cluster, tmp_path: Path
) -> None:
    registry, directory = first_version(cluster, tmp_path)
    old = monitor_hash(directory)
    directory = monitor(tmp_path, "bad")
    with pytest.raises(DeploymentError) as info:
        apply(registry, directory, options=ApplyOptions(min_ready=0, timeout=10), origin="bad")
    message = str(info.value)
    assert message.startswith(f"stopped at {UNIT}: failed on m0")
    assert "0 of 3 machines done; the others keep what they run" in message
    assert running(cluster)["m1"] == running(cluster)["m2"] == (old, "active")
    name, units = render(directory)
    plan = plan_deployment(registry, name, units, "bad")
    (change,) = [c for c in plan.changes if c.name == UNIT]
    assert change.resume and "2 machines still run the previous version" in change.diff

    # Rolled back: the failed machine runs the previous version again, nothing else moved.
    assert f"rolled back {UNIT} to the previous version" in failing_apply_with_rollback(
        registry, directory
    )
    until(lambda: sorted(running(cluster).values()) == [(old, "active")] * 3, what="old back")


def failed_on_m0(cluster: Cluster, tmp_path: Path) -> tuple[Registry, Path, str]:
    """The bad version failed on m0, the first machine of its roll; m1 and m2 still run
    the previous version (whose hash is returned)."""
    registry, directory = first_version(cluster, tmp_path)
    old = monitor_hash(directory)
    directory = monitor(tmp_path, "bad")
    with pytest.raises(DeploymentError):
        apply(registry, directory, options=ApplyOptions(min_ready=0, timeout=10), origin="bad")
    return registry, directory, old


def m0(cluster: Cluster) -> SimulatedUnitManager:
    manager = cluster.agents[0].manager
    assert isinstance(manager, SimulatedUnitManager)
    return manager


def test_a_rollback_waits_for_each_machine_it_moved_back(cluster: Cluster, tmp_path: Path) -> None:
    """The apply with --rollback goes on with the roll (the bad version fails on m1 too),
    then puts the previous version back: done only once m0 (whose start takes 2 s now)
    and m1 run it again, not as soon as one machine (m2, never moved) runs it."""
    registry, directory, old = failed_on_m0(cluster, tmp_path)
    m0(cluster).start_seconds = 2.0
    message = failing_apply_with_rollback(registry, directory)
    assert f"rolled back {UNIT} to the previous version" in message
    assert running(cluster) == dict.fromkeys(["m0", "m1", "m2"], (old, "active"))


def test_a_rollback_one_machine_refuses_is_not_reported_done(
    cluster: Cluster, tmp_path: Path
) -> None:
    registry, directory, old = failed_on_m0(cluster, tmp_path)
    m0(cluster).failing_hashes.add(old)  # the previous version fails on m0 now
    message = failing_apply_with_rollback(registry, directory)
    assert "rolled back, but the previous version is not active everywhere: failed on m0" in (
        message
    ), message
    assert running(cluster)["m1"] == running(cluster)["m2"] == (old, "active")


class Killed(Exception):
    pass


def killed_after_the_first_step(cluster: Cluster, tmp_path: Path) -> Path:
    """Version 2 applied by a client that dies after the roll's first step (m0); returns
    the deployment's directory."""
    old = monitor_hash(monitor(tmp_path, "1"))
    directory = monitor(tmp_path, "2")
    new = monitor_hash(directory)
    name, units = render(directory)
    plan = plan_deployment(cluster.registry, name, units, "c2")

    def die_at_second_step(event: ApplyEvent) -> None:
        if event.step == "roll" and event.done == 1:
            raise Killed()  # the client dies between two steps

    with pytest.raises(Killed):
        options = ApplyOptions(min_ready=0, timeout=20)
        apply_deployment(cluster.registry, plan, units, options, die_at_second_step)
    until(lambda: running(cluster).get("m0") == (new, "active"), what="m0 moved")
    assert running(cluster)["m1"] == running(cluster)["m2"] == (old, "active")
    return directory


def test_a_killed_apply_is_resumed_and_a_joining_machine_gets_the_new_version(
    cluster: Cluster, tmp_path: Path, registry_config: RegistryConfig
) -> None:
    registry, directory = first_version(cluster, tmp_path)
    old = monitor_hash(directory)
    directory = killed_after_the_first_step(cluster, tmp_path)
    new = monitor_hash(directory)
    name, units = render(directory)

    joined = Agent(
        Registry(registry_config),
        SimulatedUnitManager(),
        AgentSettings(machine_id="m3", metadata={"rack": "r3"}, ttl=3),
    ).start()
    try:
        until(lambda: running(cluster).get("m3") == (new, "active"), what="m3 runs the new one")
        assert running(cluster)["m1"] == running(cluster)["m2"] == (old, "active")
        plan = plan_deployment(registry, name, units, "c2")
        assert [c.name for c in plan.changes if c.resume] == [UNIT]
        events: list[ApplyEvent] = []
        apply_deployment(
            registry, plan, units, ApplyOptions(min_ready=0, timeout=20), events.append
        )
        assert [e.detail for e in events if e.step == "roll"] == ["machine m1", "machine m2"]
        started_everywhere(cluster, directory, machines=4)
        assert not plan_deployment(registry, name, units, "c2").changes
    finally:
        joined.stop()


def test_restart_of_a_global_unit_goes_machine_by_machine(
    cluster: Cluster, run: Run, tmp_path: Path
) -> None:
    registry, directory = first_version(cluster, tmp_path)
    watch = Downtime(registry)
    try:
        result = run("restart", UNIT, "--max-unavailable", "2")
        assert result.exit_code == 0, result.output
        watch.caught_up(directory)
    finally:
        watch.cancel()
    assert result.stdout.splitlines() == [f"Restarted {UNIT}"]
    steps = [line for line in result.stderr.splitlines() if line.startswith("restart")]
    assert len(steps) == 2, result.stderr
    assert 1 <= watch.worst <= 2
    started_everywhere(cluster, directory)
    entry = registry.get_global(UNIT)
    assert entry is not None and entry[0].roll is None


def test_a_killed_restart_leaves_its_machines_stopped_until_the_next_restart(
    cluster: Cluster, run: Run, tmp_path: Path
) -> None:
    registry, directory = first_version(cluster, tmp_path)
    registry.step_global_roll(UNIT, stop=frozenset({"m1"}))  # a restart killed mid-step
    until(lambda: running(cluster)["m1"][1] == "inactive", what="m1 stopped")
    time.sleep(0.5)
    assert running(cluster)["m1"][1] == "inactive"  # nothing starts it but a restart
    result = run("restart", UNIT)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.endswith(")")]
    assert [line for line in lines if not line.startswith("ts=")] == [
        f"start [0/1]: {UNIT} (machine m1)",
        f"restart [0/3]: {UNIT} (machine m0)",
        f"restart [1/3]: {UNIT} (machine m1)",
        f"restart [2/3]: {UNIT} (machine m2)",
    ]
    started_everywhere(cluster, directory)


def test_restart_refuses_a_max_unavailable_below_one(run: Run) -> None:
    result = run("restart", UNIT, "--max-unavailable", "0")
    assert result.exit_code == 64
    assert result.stderr.splitlines() == [
        "fleetpy: error: Invalid value for '--max-unavailable': Input should be greater than "
        "or equal to 1 (see 'fleetpy restart --help')"
    ]


def test_a_step_costs_the_machines_it_does_not_move_no_round(
    cluster: Cluster, tmp_path: Path
) -> None:
    registry, directory = first_version(cluster, tmp_path)
    old = monitor_hash(directory)
    new = monitor(tmp_path, "2")
    (unit,) = [u for u in render(new)[1] if u.name == UNIT]
    rounds = {a.machine_id: a.stats.reconciles for a in cluster.agents}
    woken = {a.machine_id: a.stats.wakeups for a in cluster.agents}
    change = UnitChange(UNIT, None, unit.text, unit.hash, True, replace=True)
    registry.change_units([replace(change, rolling=frozenset({"m0", "m1", "m2"}))])
    registry.step_global_roll(UNIT, move=frozenset({"m0"}))
    until(lambda: running(cluster)["m0"] == (unit.hash, "active"), what="m0 moved")
    until(
        lambda: all(a.stats.wakeups >= woken[a.machine_id] + 2 for a in cluster.agents),
        what="every agent told of both writes",
    )
    assert running(cluster)["m1"] == running(cluster)["m2"] == (old, "active")
    # m1 and m2 read both writes (the global prefix is every agent's) but their version
    # did not change: no round of planning, no report.
    assert [a.stats.reconciles - rounds[a.machine_id] for a in cluster.agents][1:] == [0, 0]


def test_an_apply_starts_what_a_killed_restart_left_stopped(
    cluster: Cluster, tmp_path: Path
) -> None:
    registry, _ = first_version(cluster, tmp_path)
    registry.step_global_roll(UNIT, stop=frozenset({"m1"}))  # a restart killed mid-step
    until(lambda: running(cluster)["m1"][1] == "inactive", what="m1 stopped")
    directory = monitor(tmp_path, "2")
    apply(registry, directory, origin="c2")
    started_everywhere(cluster, directory)
    entry = registry.get_global(UNIT)
    assert entry is not None and entry[0].roll is None


def test_a_machine_gone_mid_roll_is_moved_without_a_wait(cluster: Cluster, tmp_path: Path) -> None:
    registry, _ = first_version(cluster, tmp_path)
    directory = killed_after_the_first_step(cluster, tmp_path)
    cluster.agents[1].stop()  # m1 leaves: its lease revoked, its record and states gone
    until(lambda: "m1" not in registry.list_machines(), what="m1 gone")
    name, units = render(directory)
    events: list[ApplyEvent] = []
    plan = plan_deployment(registry, name, units, "c2")
    apply_deployment(registry, plan, units, ApplyOptions(min_ready=0, timeout=20), events.append)
    assert [e.detail for e in events if e.step == "roll"] == ["machine m2"]
    new = monitor_hash(directory)
    assert running(cluster) == {"m0": (new, "active"), "m2": (new, "active")}
    entry = registry.get_global(UNIT)
    assert entry is not None and entry[0].roll is None  # m1 runs the new one if it returns
