"""Container health while etcd is down, on a simulated host with an etcd of its own (the
test kills it): the agent still restarts an unhealthy unit in place."""

from __future__ import annotations

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.health import Health
from fleetpy.registry import RegistryConfig

from support.health_host import MACHINE, container_unit, health_agent, health_of
from support.sim_cluster import Cluster
from support.waiting import until


def test_unhealthy_container_restarted_while_etcd_is_down() -> None:
    """Health needs no etcd: with etcd killed, the agent still restarts an unhealthy unit
    (once), moves nothing, and reports its health when etcd is back."""
    with EtcdServer() as etcd:
        cluster = Cluster(RegistryConfig(endpoints=(etcd.endpoint,), prefix="/h", timeout=2.0))
        try:
            docker, host, agent = health_agent(cluster, ttl=5)
            cluster.registry.change_units([container_unit("box.service")])
            box = f"fleetpy-box-{MACHINE}"
            until(lambda: docker.followed == {box}, what="box followed")
            docker.set(box, Health.HEALTHY)
            until(lambda: health_of(cluster, "box.service") == "healthy", what="box healthy")
            etcd.kill()
            # The agent's loop is in its retry path, no longer reading its schedule.
            until(lambda: not agent._synced, what="the agent lost etcd")
            docker.set(box, Health.UNHEALTHY)
            until(lambda: host.restarts == ["box.service"], what="restarted, etcd down")
            assert host.observe()["box.service"].active == "active"
            etcd.restart()
            until(lambda: health_of(cluster, "box.service") == "unhealthy", what="reported")
            assert host.restarts == ["box.service"]  # that turn acted on once
            assert cluster.placement() == {"box.service": MACHINE}
        finally:
            cluster.close()
