"""Container health over time on a simulated host (a real etcd, the real agent and engine,
docker's health events simulated): the health reported in the unit's state and listed by
`list-units`, an unhealthy unit restarted in place once per turn, none with
HealthOnFailure=none. Real docker: tests/system/test_container_hosts.py."""

from __future__ import annotations

import json
from collections.abc import Sequence

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings
from fleetpy.health import Health, SimulatedHealth
from fleetpy.model.changes import UnitChange
from fleetpy.states import DesiredState
from fleetpy.unitfile.container import expand_unit
from fleetpy.unitfile.unit import content_hash, parse_unit
from fleetpy.unitmanager import Action, RestartUnit, SimulatedUnitManager

from support.cli_run import Run
from support.sim_cluster import Cluster
from support.waiting import until

MACHINE = "m1"


class Host(SimulatedUnitManager):
    """A simulated host that remembers the restarts it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.restarts: list[str] = []

    def execute(self, actions: Sequence[Action]) -> None:
        self.restarts += [a.name for a in actions if isinstance(a, RestartUnit)]
        super().execute(actions)


def container_unit(name: str, extra: str = "") -> UnitChange:
    source = f"[Container]\nImage=local/busybox\nHealthCmd=test -e /tmp/ok\n{extra}"
    text = expand_unit(parse_unit(source, name), name).serialize()
    return UnitChange(name, text=text, hash=content_hash(text), desired=DesiredState.LAUNCHED)


def health_of(cluster: Cluster, unit: str) -> str | None:
    state = cluster.registry.list_states().get(unit, {}).get(MACHINE)
    return None if state is None or state.active != "active" else state.health


def test_unhealthy_container_restarted_in_place_and_listed(cluster: Cluster, run: Run) -> None:
    docker, host = SimulatedHealth(), Host()
    agent = Agent(
        cluster.registry, host, AgentSettings(machine_id=MACHINE, ttl=2), health=docker
    ).start()
    cluster.agents[MACHINE] = agent
    agent.ready.wait(10)
    cluster.engine()
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
