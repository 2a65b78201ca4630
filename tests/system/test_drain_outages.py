"""A drain across an etcd restart (issue 24, item 1), on simulated machines: the engine,
the agents and the waiting CLI's library wait etcd out, and the drain finishes."""

from __future__ import annotations

import threading

from fleetpy.client import drain
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.errors import DrainError
from fleetpy.registry import Registry, RegistryConfig

from support.sim_cluster import Cluster, never_twice, unit, watch
from support.waiting import until


def test_a_drain_goes_on_across_an_etcd_restart(own_etcd: EtcdServer, prefix: str) -> None:
    config = RegistryConfig(endpoints=(own_etcd.endpoint,), prefix=prefix, timeout=5)
    cluster = Cluster(config)
    try:
        cluster.agent("m1", ttl=10)
        cluster.engine(lease_ttl=10)
        cluster.registry.change_units([unit(f"u{i}.service") for i in range(4)])
        until(lambda: len(cluster.running()) == 4, what="4 units on m1")
        cluster.agent("m2", ttl=10, start_seconds=1.0)
        stop_twice, twice = watch(never_twice(cluster))
        drain.start_drain(cluster.registry, "m1", 1)
        waited: list[object] = []

        def wait() -> None:
            try:
                waited.append(drain.wait_drain(Registry(config), "m1", 90, lambda p: None))
            except DrainError as exc:
                waited.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        until(lambda: "m2" in cluster.placement().values(), what="a first unit moved")
        own_etcd.restart()  # the CLI, the engine and the agents wait it out
        waiter.join(120)
        stop_twice.set()
        assert twice == []
        assert len(waited) == 1 and not isinstance(waited[0], DrainError), waited
        assert cluster.running() == {f"u{i}.service": "m2" for i in range(4)}
        assert list(cluster.registry.cordons()) == ["m1"]  # the record outlived etcd's restart
    finally:
        cluster.close()
