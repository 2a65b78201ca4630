"""RescheduleOnFailure= across an etcd outage (simulated hosts, an etcd of the test's own):
failures counted while etcd is away are reported when it is back, and only the failing
unit moves."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.unitmanager import SimulatedUnitManager

from support.sim_cluster import Cluster, unit
from support.waiting import until

POLICY = "RescheduleOnFailure=2\nRescheduleWindow=60s"


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """An etcd of this test's own, for `cluster` (support.sim_cluster): it is paused."""
    with EtcdServer() as server:
        yield server


def test_failures_counted_while_etcd_is_paused_are_reported_when_it_is_back(
    etcd: EtcdServer, cluster: Cluster
) -> None:
    cluster.agent("m1", ttl=30)  # leases outlive the pause: no machine is lost
    cluster.agent("m2", ttl=30)
    cluster.engine(lease_ttl=30)
    cluster.registry.change_units([unit("a.service", POLICY), unit("b.service"), unit("c.service")])
    until(lambda: len(cluster.running()) == 3, what="3 units active")
    before = cluster.placement()
    home = before["a.service"]
    manager = cluster.agents[home].manager
    assert isinstance(manager, SimulatedUnitManager)
    etcd.pause()
    try:
        manager.restarted("a.service")
        manager.restarted("a.service")
        time.sleep(6)  # longer than the registry's timeout (5 s): the agent's write failed
    finally:
        etcd.resume()
    until(lambda: cluster.registry.read_failures()[1] != [], what="the record, once etcd is back")
    other = "m2" if home == "m1" else "m1"
    until(lambda: cluster.placement().get("a.service") == other, what="a moved")
    assert {u: m for u, m in cluster.placement().items() if u != "a.service"} == {
        u: m for u, m in before.items() if u != "a.service"
    }
    until(
        lambda: [m for u, m in cluster.hosted() if u == "a.service"] == [other],
        what="a running where it moved, and only there",
    )
