"""Container health over time on a simulated host (a real etcd, the real agent and engine,
docker's health events simulated): the health reported in the unit's state and listed by
`list-units`, an unhealthy unit restarted in place once per turn, none with
HealthOnFailure=none. Real docker: tests/system/test_container_hosts.py."""

from __future__ import annotations

import json

from fleetpy.health import Health

from support.cli_run import Run
from support.health_host import MACHINE, container_unit, health_agent, health_of
from support.sim_cluster import Cluster
from support.waiting import until


def test_unhealthy_container_restarted_in_place_and_listed(cluster: Cluster, run: Run) -> None:
    docker, host, _ = health_agent(cluster, ttl=2)
    cluster.registry.change_units(
        [container_unit("box.service"), container_unit("keep.service", "HealthOnFailure=none\n")]
    )
    until(lambda: health_of(cluster, "box.service") == "", what="box active, health unknown")
    box, keep = f"fleetpy-box-{MACHINE}", f"fleetpy-keep-{MACHINE}"
    until(lambda: docker.followed == {box, keep}, what="both containers followed")

    docker.set(box, Health.HEALTHY)
    docker.set(keep, Health.HEALTHY)
    until(lambda: health_of(cluster, "box.service") == "healthy", what="box healthy")
    until(lambda: health_of(cluster, "keep.service") == "healthy", what="keep healthy")
    assert host.restarts == []

    docker.set(box, Health.UNHEALTHY)
    docker.set(keep, Health.UNHEALTHY)
    until(lambda: host.restarts == ["box.service"], what="box restarted")
    until(lambda: health_of(cluster, "keep.service") == "unhealthy", what="keep unhealthy")
    until(lambda: health_of(cluster, "box.service") == "unhealthy", what="box reported")
    rows = json.loads(run("list-units", "-o", "json").stdout)
    assert {(r["unit"], r["health"]) for r in rows} == {
        ("box.service", "unhealthy"),
        ("keep.service", "unhealthy"),
    }
    table = run("list-units", "--no-legend", "--fields", "unit,sub,health").stdout.split()
    assert table == ["box.service", "running", "unhealthy", "keep.service", "running", "unhealthy"]

    docker.set(box, Health.HEALTHY)  # the restarted container passed its checks
    until(lambda: health_of(cluster, "box.service") == "healthy", what="box healthy again")
    assert host.restarts == ["box.service"]  # once for that turn; keep never
    docker.set(box, Health.UNHEALTHY)
    until(lambda: host.restarts == ["box.service"] * 2, what="box restarted again")


def test_unhealthy_restarts_count_as_failures_with_reschedule_on_failure(cluster: Cluster) -> None:
    """An unhealthy container's restart is one of its failures (RescheduleOnFailure=): at
    the threshold its agent writes the failure record the engine moves units by."""
    docker, host, _ = health_agent(cluster, ttl=2)
    cluster.registry.change_units(
        [container_unit("box.service", "[X-Fleet]\nRescheduleOnFailure=2\n")]
    )
    box = f"fleetpy-box-{MACHINE}"
    until(lambda: docker.followed == {box}, what="box followed")
    for turn in (1, 2):
        docker.set(box, Health.HEALTHY)
        until(lambda: health_of(cluster, "box.service") == "healthy", what="box healthy")
        assert cluster.registry.read_failures()[1] == []  # below the threshold
        docker.set(box, Health.UNHEALTHY)
        until(lambda: host.restarts == ["box.service"] * turn, what=f"restart {turn}")
    until(lambda: cluster.registry.read_failures()[1] != [], what="the failure record")
    [record] = cluster.registry.read_failures()[1]
    assert (record.unit, record.machine, record.failures) == ("box.service", MACHINE, 2)
    assert "unhealthy" in record.cause
