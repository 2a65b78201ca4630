"""An engine and simulated agents in this process against the test's etcd prefix, and
unit changes to feed them (test_engine, test_api_server, test_dashboard); the `cluster`
fixture: one on the test's prefix, closed after it (a module may define its own), and
`own_cluster` on an etcd of the test's own (`own_etcd`, for faults); checks
run in the background while a test acts (`watch`, `never_twice`)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator

import pytest

from fleetpy.agent import Agent
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.config import AgentSettings, EngineSettings
from fleetpy.engine import Engine
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.resources import Resources
from fleetpy.states import DesiredState
from fleetpy.unitmanager import SimulatedUnitManager


def unit(
    name: str,
    xfleet: str = "",
    desired: DesiredState = DesiredState.LAUNCHED,
    is_global: bool = False,
) -> UnitChange:
    text = "[Service]\nExecStart=/bin/sleep 1000\n" + (f"\n[X-Fleet]\n{xfleet}\n" if xfleet else "")
    return UnitChange(
        name=name,
        text=text,
        hash=hashlib.sha256(text.encode()).hexdigest(),
        desired=desired,
        is_global=is_global,
    )


class Cluster:
    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self.registry = Registry(config)
        self.agents: dict[str, Agent] = {}
        self.engines: list[Engine] = []

    def agent(
        self,
        machine: str,
        ttl: int = 2,
        start_seconds: float = 0.0,
        capacity: Resources | None = None,
        public_ip: str = "",
        **metadata: str,
    ) -> Agent:
        """CAPACITY: the CPUs and memory the machine offers (None: this host's)."""
        agent = Agent(
            self.registry,
            SimulatedUnitManager(start_seconds),
            AgentSettings(machine_id=machine, metadata=metadata, ttl=ttl, public_ip=public_ip),
            capacity=capacity,
        ).start()
        agent.ready.wait(10)
        self.agents[machine] = agent
        return agent

    def engine(self, lease_ttl: int = 2) -> Engine:
        engine = Engine(
            Registry(self.config), EngineSettings(lease_ttl=lease_ttl, reconcile_interval=5)
        ).start()
        self.engines.append(engine)
        return engine

    def placement(self) -> dict[str, str]:
        return {u: m for u, (m, _) in self.registry.read_view(with_states=False).schedule.items()}

    def running(self) -> dict[str, str]:
        return {
            u: m
            for u, states in self.registry.list_states().items()
            for m, s in states.items()
            if s.active == "active"
        }

    def hosted(self) -> list[tuple[str, str]]:
        """(unit, machine) for each unit active on a simulated host, as the hosts
        themselves run them (not etcd's view, which running() reads); a unit running on
        two machines is there twice."""
        return sorted(
            (name, machine)
            for machine, agent in self.agents.items()
            for name, state in agent.manager.observe().items()
            if state.active == "active"
        )

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for engine in self.engines:
            engine.stop()
        self.registry.close()


@pytest.fixture
def cluster(registry_config: RegistryConfig) -> Iterator[Cluster]:
    c = Cluster(registry_config)
    yield c
    c.close()


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of the test's own, for a test that pauses, kills or revokes its leases."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def own_cluster(own_etcd: EtcdServer, prefix: str) -> Iterator[Cluster]:
    """A cluster on the test's own etcd (own_etcd)."""
    c = Cluster(RegistryConfig(endpoints=(own_etcd.endpoint,), prefix=prefix, timeout=5))
    yield c
    c.close()


def watch(check: Callable[[], None]) -> tuple[threading.Event, list[str]]:
    """Run CHECK every 50 ms until the event is set; what it raised, kept."""
    stop, seen = threading.Event(), []

    def loop() -> None:
        while not stop.wait(0.05):
            try:
                check()
            except AssertionError as exc:
                seen.append(str(exc))

    threading.Thread(target=loop, daemon=True).start()
    return stop, seen


def never_twice(cluster: Cluster) -> Callable[[], None]:
    """A check for `watch`: no unit active on two simulated hosts at once."""

    def check() -> None:
        hosted = [name for name, _ in cluster.hosted()]
        twice = {name for name in hosted if hosted.count(name) > 1}
        assert not twice, f"running on two machines at once: {twice}"

    return check
