"""The simulated signed clusters of the signed-units tests: a real etcd (plain, or TLS
with client certificates and auth, each daemon its own etcd user: support.secure_fixtures'
Roles), an engine, simulated machines whose agents check signatures, the operator's keys
and a stranger's key nobody trusts. How the agents trust keys is the subclass's
(`trusted`): a directory read at start (test_signed_units), or fleetpy.host_trust
(support.trust_cluster)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings, EngineSettings
from fleetpy.engine import Engine
from fleetpy.host_trust import HostTrust
from fleetpy.model.records import UnitState
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitfile.signing import Signer, TrustedKeys, generate_key, load_signer
from fleetpy.unitmanager import SimulatedUnitManager

from support.secure_fixtures import Roles, secure_etcd

MACHINES = ("m1", "m2")
GOOD = "[Service]\nExecStart=/bin/sleep 1000\n"


class SignedClusterBase:
    """KEYS generated in the operator's keys directory; ROOTS of them trusted by the hosts
    (their public keys in `trusted/`)."""

    def __init__(
        self, roles: Roles, workdir: Path, keys: Sequence[str], roots: Sequence[str]
    ) -> None:
        self.roles = roles
        self.workdir = workdir
        self.registry = Registry(roles.operator)
        self.agent_registries = {m: Registry(c) for m, c in roles.agents.items()}
        self.keys = workdir / "keys"
        self.trusted_dir = workdir / "trusted"
        self.trusted_dir.mkdir()
        for name in keys:
            generate_key(self.keys, name)
        for name in roots:
            self.add_root(name)
        generate_key(workdir / "stranger", "stranger")  # a key nobody trusts
        self.managers = {m: SimulatedUnitManager() for m in MACHINES}
        self.agents = {m: self.agent(m) for m in MACHINES}
        self.engine = self.start_engine()

    def trusted(self, machine: str) -> TrustedKeys | HostTrust:
        raise NotImplementedError

    def agent_settings(self, machine: str) -> AgentSettings:
        return AgentSettings(machine_id=machine, ttl=3)

    def agent(self, machine: str) -> Agent:
        agent = Agent(
            self.agent_registries[machine],
            self.managers[machine],
            self.agent_settings(machine),
            trusted=self.trusted(machine),
        ).start()
        assert agent.ready.wait(10)
        return agent

    def restart_agent(self, machine: str) -> None:
        self.agents[machine].stop(revoke=False)
        self.agents[machine] = self.agent(machine)

    def start_engine(self) -> Engine:
        return Engine(
            Registry(self.roles.engine), EngineSettings(lease_ttl=2, reconcile_interval=5)
        ).start()

    def add_root(self, name: str) -> None:
        source = self.keys / f"{name}.pub"
        (self.trusted_dir / source.name).write_bytes(source.read_bytes())

    def signer(self, name: str) -> Signer:
        keys = self.workdir / "stranger" if name == "stranger" else self.keys
        return load_signer(name, keys, lambda m: None)

    def unit_file(self, name: str, text: str = GOOD) -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)

    def states(self, unit: str) -> dict[str, UnitState]:
        return self.registry.list_states().get(unit, {})

    def state(self, unit: str) -> UnitState | None:
        found = list(self.states(unit).values())
        return found[0] if len(found) == 1 else None

    def etcdctl(self, *args: str, value: str | None = None) -> str:
        """etcdctl as someone with etcd access but no signing key (etcd's root on TLS+auth)."""
        result = subprocess.run(
            ["etcdctl", "--endpoints", self.roles.operator.endpoints[0], *self.roles.raw, *args],
            input=None if value is None else value.encode(),
            capture_output=True,
            check=True,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        return result.stdout.decode()

    def raw_key(self, rel: str) -> str:
        return f"{self.roles.operator.prefix}/{rel}"

    def close(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.engine.stop()
        self.registry.close()
        for registry in self.agent_registries.values():
            registry.close()


Cluster = TypeVar("Cluster", bound=SignedClusterBase)


def signed_cluster_on(
    kind: str, registry_config: RegistryConfig, workdir: Path, make: Callable[[Roles], Cluster]
) -> Iterator[Cluster]:
    """MAKE's cluster on a plain etcd (the session's: KIND "plain") or a TLS+auth one of
    its own, closed after."""
    if kind == "plain":
        cluster = make(Roles.plain(registry_config, MACHINES))
        try:
            yield cluster
        finally:
            cluster.close()
        return
    with secure_etcd(workdir / "etcd", machines=MACHINES) as etcd:
        cluster = make(Roles.secure(etcd, MACHINES))
        try:
            yield cluster
        finally:
            cluster.close()
