"""RescheduleOnFailure=: simulated agents count failures and report them (real etcd)."""

from __future__ import annotations

from fleetpy.model.failures import FailureRecord
from fleetpy.unitmanager import SimulatedUnitManager

from support.sim_cluster import Cluster, unit
from support.waiting import until

POLICY = "RescheduleOnFailure=2\nRescheduleWindow=60s\nRescheduleBackoff=1h\nRescheduleLimit=1"


def crash(cluster: Cluster, name: str, machine: str, times: int) -> None:
    """NAME dies on MACHINE TIMES times, restarted by systemd's Restart= each time."""
    manager = cluster.agents[machine].manager
    assert isinstance(manager, SimulatedUnitManager)
    for _ in range(times):
        manager.restarted(name)


def test_an_agent_reports_a_unit_that_failed_its_threshold(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.engine()
    a, plain = unit("a.service", POLICY), unit("plain.service")
    cluster.registry.change_units([a, plain])
    until(lambda: len(cluster.running()) == 2, what="both active")
    crash(cluster, "plain.service", "m1", 5)  # not opted in: not counted
    crash(cluster, "a.service", "m1", 2)
    expected = FailureRecord(
        "a.service", "m1", 2, 60.0, "exited; restarted by systemd (Restart=)", a.hash or ""
    )
    until(lambda: cluster.registry.read_failures()[1] == [expected], what="a's record")
