"""Resource reports across an etcd outage (simulated hosts, an etcd of the test's own):
usage that moved while etcd was paused is written once it is back, and nothing moves."""

from __future__ import annotations

import time

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.resources import Resources
from fleetpy.unitmanager import SimulatedUnitManager

from support.sim_cluster import Cluster, unit
from support.waiting import until

GiB, MiB = 1024**3, 1024**2


def test_usage_that_moved_while_etcd_was_paused_is_written_when_it_is_back(
    own_etcd: EtcdServer, own_cluster: Cluster
) -> None:
    etcd, cluster = own_etcd, own_cluster
    capacity = Resources(8 * GiB, 4000)
    agent = cluster.agent("m1", ttl=6, capacity=capacity)  # the lease outlives the pause
    cluster.agent("m2", ttl=6, capacity=capacity)
    cluster.engine(lease_ttl=6)
    cluster.registry.change_units([unit(f"db{i}.service", "ReserveMemory=1G") for i in range(4)])
    until(lambda: len(cluster.running()) == 4, what="4 units active")
    before = cluster.placement()
    manager = agent.manager
    assert isinstance(manager, SimulatedUnitManager)
    on_m1 = sum(machine == "m1" for machine in before.values())
    assert on_m1 == 2  # the least loaded machine each time
    etcd.pause()
    try:
        manager.memory_per_unit = GiB  # each unit grew from 16 MiB to 1 GiB
        time.sleep(4)  # measured twice (every 2 s): each write failed
    finally:
        etcd.resume()
    until(
        lambda: cluster.registry.list_machines()["m1"].used == Resources(on_m1 * GiB, 0),
        timeout=30,
        what="m1's usage written once etcd is back",
    )
    assert cluster.registry.list_machines()["m1"].capacity == capacity
    assert cluster.placement() == before
    assert len(cluster.hosted()) == 4
