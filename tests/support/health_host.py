"""A simulated host for container health (fleetpy.health): the restarts it was asked for,
container units with a health check, and the health etcd holds for them
(tests/integration/test_health.py, tests/system/test_health_outages.py)."""

from __future__ import annotations

from collections.abc import Sequence

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings
from fleetpy.health import SimulatedHealth
from fleetpy.model.changes import UnitChange
from fleetpy.states import DesiredState
from fleetpy.unitfile.container import expand_unit
from fleetpy.unitfile.unit import content_hash, parse_unit
from fleetpy.unitmanager import Action, RestartUnit, SimulatedUnitManager

from support.sim_cluster import Cluster

MACHINE = "m1"


class Host(SimulatedUnitManager):
    """A simulated host that remembers the restarts it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.restarts: list[str] = []

    def execute(self, actions: Sequence[Action]) -> None:
        self.restarts += [a.name for a in actions if isinstance(a, RestartUnit)]
        super().execute(actions)


def health_agent(cluster: Cluster, ttl: int) -> tuple[SimulatedHealth, Host, Agent]:
    """An agent on machine MACHINE of CLUSTER, its health from a simulated docker, and an
    engine."""
    docker, host = SimulatedHealth(), Host()
    agent = Agent(
        cluster.registry, host, AgentSettings(machine_id=MACHINE, ttl=ttl), health=docker
    ).start()
    cluster.agents[MACHINE] = agent
    agent.ready.wait(10)
    cluster.engine()
    return docker, host, agent


def container_unit(name: str, extra: str = "") -> UnitChange:
    source = f"[Container]\nImage=local/busybox\nHealthCmd=test -e /tmp/ok\n{extra}"
    text = expand_unit(parse_unit(source, name), name).serialize()
    return UnitChange(name, text=text, hash=content_hash(text), desired=DesiredState.LAUNCHED)


def health_of(cluster: Cluster, unit: str) -> str | None:
    state = cluster.registry.list_states().get(unit, {}).get(MACHINE)
    return None if state is None or state.active != "active" else state.health
