"""The trust record ([17] item 2) through etcd's outages: agents that follow it keep what
runs while etcd is killed or paused, follow a revocation written after etcd came back
(their watch of the record is set again), and `keys revoke` against a paused etcd is one
line that writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from fleetpy.client import operations, trust
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.config import OnRevoke
from fleetpy.errors import FleetpyError
from fleetpy.registry import RegistryConfig

from support.secure_fixtures import Roles
from support.sim_cluster import watch
from support.trust_cluster import MACHINES, TrustCluster
from support.waiting import until

GOOD = "[Service]\nExecStart=/bin/sleep 1000\n"


@pytest.fixture
def cluster(own_etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[TrustCluster]:
    config = RegistryConfig(endpoints=(own_etcd.endpoint,), prefix=prefix, timeout=5)
    made = TrustCluster(Roles.plain(config, MACHINES), tmp_path, OnRevoke.KEEP)
    yield made
    made.close()


def kept_after_revocation(cluster: TrustCluster) -> bool:
    state = cluster.state("web.service")
    return state is not None and "revoked" in state.message and "kept running" in state.message


def knows_revocation(cluster: TrustCluster, machine: str, kid: str) -> bool:
    trusted = cluster.agents[machine].trusted
    return trusted is not None and kid in trusted.retired


def test_a_revocation_after_etcd_restarted_and_paused_reaches_agents_and_stops_nothing(
    cluster: TrustCluster, own_etcd: EtcdServer
) -> None:
    trust.trust(
        cluster.registry, cluster.signer("root"), trust.release_key("v1", cluster.keys, None)
    )
    operations.start(
        cluster.registry, [cluster.unit_file("web.service", GOOD)], cluster.signer("v1")
    )
    until(lambda: len(cluster.running_on("web.service")) == 1, what="web running")
    (where,) = cluster.running_on("web.service")

    def never_stopped() -> None:
        assert cluster.running_on("web.service") == [where], "web.service stopped or moved"

    stop, seen = watch(never_stopped)
    try:
        own_etcd.kill()
        own_etcd.restart()
        own_etcd.pause()
        # While etcd does not answer, the operator's revoke fails in one error, writing nothing.
        with pytest.raises(FleetpyError) as refused:
            trust.revoke(cluster.registry, cluster.signer("root"), cluster.signer("v1").key_id, "x")
        assert "etcd" in str(refused.value).lower() or "timed out" in str(refused.value).lower()
        own_etcd.resume()
        until(lambda: cluster.state("web.service") is not None, timeout=30, what="etcd back")
        kid = cluster.signer("v1").key_id
        trust.revoke(cluster.registry, cluster.signer("root"), kid, "after the outage")
        until(
            lambda: kept_after_revocation(cluster),
            timeout=30,
            what="the agent following the revocation",
        )
        for machine in MACHINES:
            until(
                partial(knows_revocation, cluster, machine, kid),
                timeout=30,
                what=f"{machine} knowing the revocation",
            )
    finally:
        stop.set()
    assert seen == []
