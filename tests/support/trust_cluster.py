"""A signed cluster whose agents follow their trusted keys while they run: a real etcd
(plain, or TLS with client certificates and auth, each daemon its own etcd user), an
engine, simulated machines each with its own fleetpy.host_trust (one trusted directory
of root keys, a kept record per machine), and the operator's keys."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings, EngineSettings, OnRevoke
from fleetpy.engine import Engine
from fleetpy.host_trust import HostTrust
from fleetpy.model.records import UnitState
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitfile.signing import Signer, generate_key, load_signer
from fleetpy.unitmanager import SimulatedUnitManager

from support.secure_fixtures import Roles, secure_etcd

MACHINES = ("m1", "m2")
KEYS = ("root", "root2", "v1", "v2")  # root keys: in the hosts' directory; v*: release keys


class TrustCluster:
    def __init__(self, roles: Roles, workdir: Path, on_revoke: OnRevoke) -> None:
        self.roles = roles
        self.workdir = workdir
        self.on_revoke = on_revoke
        self.registry = Registry(roles.operator)
        self.keys = workdir / "keys"
        self.trusted_dir = workdir / "trusted"
        self.trusted_dir.mkdir()
        for name in KEYS:
            generate_key(self.keys, name)
        self.add_root("root")
        generate_key(workdir / "stranger", "stranger")  # a key nobody trusts
        self.managers = {m: SimulatedUnitManager() for m in MACHINES}
        self.agent_registries = {m: Registry(c) for m, c in roles.agents.items()}
        self.agents = {m: self.agent(m) for m in MACHINES}
        self.engine = Engine(
            Registry(roles.engine), EngineSettings(lease_ttl=2, reconcile_interval=5)
        ).start()

    def add_root(self, name: str) -> None:
        source = self.keys / f"{name}.pub"
        (self.trusted_dir / source.name).write_bytes(source.read_bytes())

    def trust(self, machine: str) -> HostTrust:
        cache = self.workdir / "state" / f"trust-{machine}.json"
        return HostTrust(self.trusted_dir, cache, machine)

    def agent(self, machine: str) -> Agent:
        settings = AgentSettings(machine_id=machine, ttl=3, on_revoke=self.on_revoke)
        agent = Agent(
            self.agent_registries[machine],
            self.managers[machine],
            settings,
            trusted=self.trust(machine),
        ).start()
        assert agent.ready.wait(10)
        return agent

    def restart_agent(self, machine: str) -> None:
        self.agents[machine].stop(revoke=False)
        self.agents[machine] = self.agent(machine)

    def signer(self, name: str) -> Signer:
        keys = self.workdir / "stranger" if name == "stranger" else self.keys
        return load_signer(name, keys, lambda m: None)

    def unit_file(self, name: str, text: str) -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)

    def state(self, unit: str) -> UnitState | None:
        found = list(self.registry.list_states().get(unit, {}).values())
        return found[0] if len(found) == 1 else None

    def running_on(self, unit: str) -> list[str]:
        """The machines whose unit manager runs the unit (systemd's view, not etcd's)."""
        return [
            m
            for m, manager in self.managers.items()
            if (seen := manager.observe().get(unit)) is not None and seen.active == "active"
        ]

    def etcdctl(self, *args: str, value: str | None = None) -> str:
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


def trust_cluster(
    kind: str, registry_config: RegistryConfig, workdir: Path, on_revoke: OnRevoke
) -> Iterator[TrustCluster]:
    """The cluster on a plain etcd (the session's) or a TLS+auth one of its own."""
    if kind == "plain":
        cluster = TrustCluster(Roles.plain(registry_config, MACHINES), workdir, on_revoke)
        try:
            yield cluster
        finally:
            cluster.close()
        return
    with secure_etcd(workdir / "etcd", machines=MACHINES) as etcd:
        cluster = TrustCluster(Roles.secure(etcd, MACHINES), workdir, on_revoke)
        try:
            yield cluster
        finally:
            cluster.close()


__all__ = ["MACHINES", "TrustCluster", "trust_cluster"]
