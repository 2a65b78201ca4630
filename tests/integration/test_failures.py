"""RescheduleOnFailure=: simulated agents count failures, the engine moves the unit off
where it failed, bounded; `force-reschedule UNIT` resets it (real etcd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpy.model.failures import FailureRecord
from fleetpy.registry import Registry
from fleetpy.unitmanager import SimulatedUnitManager

from support.cli_helpers import SERVICE, one_error_line, snapshot, write
from support.cli_run import Run
from support.sim_cluster import Cluster, unit
from support.waiting import until

pytestmark = pytest.mark.usefixtures("clean_env")

POLICY = "RescheduleOnFailure=2\nRescheduleWindow=60s\nRescheduleBackoff=1h\nRescheduleLimit=1"


def crash(cluster: Cluster, name: str, machine: str, times: int) -> None:
    """NAME dies on MACHINE TIMES times, restarted by systemd's Restart= each time."""
    manager = cluster.agents[machine].manager
    assert isinstance(manager, SimulatedUnitManager)
    for _ in range(times):
        manager.restarted(name)


def reason(cluster: Cluster, name: str) -> str:
    return cluster.registry.read_view().reasons.get(name, "")


def failed_on(cluster: Cluster, name: str) -> list[str]:
    return sorted(r.machine for r in cluster.registry.read_failures()[1] if r.unit == name)


def test_an_agent_reports_a_unit_that_failed_its_threshold(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.engine()
    a, plain = unit("a.service", POLICY), unit("plain.service")
    cluster.registry.change_units([a, plain])
    until(lambda: len(cluster.running()) == 2, what="both active")
    crash(cluster, "plain.service", "m1", 5)  # not opted in: not counted
    crash(cluster, "a.service", "m1", 2)
    expected = FailureRecord(
        "a.service", "m1", 2, 60.0, "exited; its Restart= restarted it", a.hash or ""
    )
    until(lambda: cluster.registry.read_failures()[1] == [expected], what="a's record")


def test_a_unit_failing_repeatedly_moves_once_then_stays_until_reset(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.agent("m2")
    cluster.engine()
    cluster.registry.change_units([unit("a.service", POLICY), unit("plain.service")])
    until(lambda: len(cluster.running()) == 2, what="both active")
    first = cluster.placement()["a.service"]
    other = "m2" if first == "m1" else "m1"
    crash(cluster, "a.service", first, 1)  # once: below the threshold
    crash(cluster, "plain.service", cluster.placement()["plain.service"], 5)  # not opted in
    crash(cluster, "a.service", first, 1)
    until(lambda: cluster.running().get("a.service") == other, what="a moved")
    assert failed_on(cluster, "a.service") == [first]
    assert reason(cluster, "a.service").startswith(f"failed 2 times in 1min on {first}")
    assert "avoided there for 1h (move 1 of 1)" in reason(cluster, "a.service")
    until(lambda: ("a.service", first) not in cluster.hosted(), what="a stopped where it failed")
    assert "plain.service" in cluster.placement()
    assert failed_on(cluster, "plain.service") == []

    # Bounded: RescheduleLimit=1, so failing on a second machine moves it no more.
    crash(cluster, "a.service", other, 2)
    until(lambda: "RescheduleLimit=1 reached" in reason(cluster, "a.service"), what="bounded")
    assert failed_on(cluster, "a.service") == sorted([first, other])
    assert cluster.placement()["a.service"] == other

    # An operator resets it: the records go, the reason too; it stays where it runs.
    assert cluster.registry.forget_failures(["a.service"]) == {"a.service": ["m1", "m2"]}
    until(lambda: reason(cluster, "a.service") == "", what="reason cleared")
    assert cluster.placement()["a.service"] == other
    assert failed_on(cluster, "a.service") == []


def test_a_unit_no_other_machine_can_take_stays_and_says_so(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.engine()
    cluster.registry.change_units([unit("a.service", POLICY)])
    until(lambda: cluster.running() == {"a.service": "m1"}, what="a active")
    crash(cluster, "a.service", "m1", 2)
    until(lambda: "no other machine can take it" in reason(cluster, "a.service"), what="reason")
    assert "it stays on m1" in reason(cluster, "a.service")
    assert cluster.placement() == {"a.service": "m1"}
    assert cluster.running() == {"a.service": "m1"}


def test_force_reschedule_unit_forgets_its_failures_and_nothing_else(
    run: Run, registry: Registry, units_dir: Path
) -> None:
    path = write(units_dir, "a.service", SERVICE + "\n[X-Fleet]\nRescheduleOnFailure=3\n")
    assert run("submit", path, write(units_dir, "b.service")).exit_code == 0
    for machine, name in (("m1", "a.service"), ("m2", "a.service"), ("m1", "b.service")):
        registry.report_failure(FailureRecord(name, machine, 3, 300.0, "exit code 1"))
    result = run("force-reschedule", "a.service")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Reset a.service: its failures on m1, m2 are forgotten\n"
    assert [(r.unit, r.machine) for r in registry.read_failures()[1]] == [("b.service", "m1")]
    assert not registry.force_reschedule_requested()  # only that unit's failures
    result = run("force-reschedule", "a.service")
    assert result.stdout == "Reset a.service: no failures recorded\n"
    # Without a unit: fleet's request to move units off machines not reporting, as before.
    result = run("force-reschedule")
    assert result.stdout.startswith("Requested: the engine moves units off machines")
    assert registry.force_reschedule_requested()
    assert [r.unit for r in registry.read_failures()[1]] == ["b.service"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nope.service"], "fleetpy: error: unit nope.service is not submitted"),
        (["b.service", "nope.service"], "fleetpy: error: unit nope.service is not submitted"),
        (["bad name"], "fleetpy: error: invalid unit name"),
    ],
)
def test_force_reschedule_of_unknown_units_deletes_nothing(
    run: Run, registry: Registry, units_dir: Path, args: list[str], error: str
) -> None:
    assert run("submit", write(units_dir, "b.service")).exit_code == 0
    registry.report_failure(FailureRecord("b.service", "m1", 3, 300.0))
    result = run("force-reschedule", *args)
    assert result.exit_code != 0
    assert one_error_line(result).startswith(error)
    assert [r.unit for r in registry.read_failures()[1]] == ["b.service"]


@pytest.mark.parametrize(
    ("xfleet", "error"),
    [
        ("RescheduleOnFailure=0", "invalid [X-Fleet] RescheduleOnFailure=0 in a.service"),
        (
            "RescheduleOnFailure=2\nRescheduleWindow=soon",
            "invalid [X-Fleet] RescheduleWindow=soon in a.service (expected a time span",
        ),
        ("RescheduleBackoff=1h", "[X-Fleet] RescheduleBackoff= in a.service needs Reschedule"),
        ("RescheduleOnFailure=2\nGlobal=true", "[X-Fleet] Global=true in a.service cannot be"),
    ],
)
def test_invalid_reschedule_options_are_refused_at_submit(
    run: Run, registry: Registry, units_dir: Path, xfleet: str, error: str
) -> None:
    result = run("submit", write(units_dir, "a.service", SERVICE + f"\n[X-Fleet]\n{xfleet}\n"))
    assert result.exit_code != 0
    assert one_error_line(result).startswith(f"fleetpy: error: {error}")
    assert snapshot(registry) == {}


def test_a_new_leader_keeps_the_unit_where_it_moved(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.agent("m2")
    first_engine = cluster.engine()
    cluster.registry.change_units([unit("a.service", POLICY)])
    until(lambda: "a.service" in cluster.running(), what="a active")
    first = cluster.placement()["a.service"]
    other = "m2" if first == "m1" else "m1"
    crash(cluster, "a.service", first, 2)
    until(lambda: cluster.running().get("a.service") == other, what="a moved")
    moved = reason(cluster, "a.service")
    first_engine.stop()  # resigns: the next engine leads from a fresh read of the records
    cluster.engines.remove(first_engine)
    second_engine = cluster.engine()
    until(second_engine.is_leader.is_set, what="a new leader")
    until(lambda: second_engine.stats.passes >= 2, what="the new leader's passes")
    assert cluster.placement() == {"a.service": other}
    assert reason(cluster, "a.service") == moved  # still avoiding where it failed
    # "a moved" saw it active on the other machine, which can come before the first
    # machine's agent has stopped its copy (its watch of the schedule: later under load).
    until(lambda: cluster.hosted() == [("a.service", other)], what="a running where it moved only")
