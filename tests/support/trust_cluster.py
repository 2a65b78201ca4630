"""A signed cluster whose agents follow their trusted keys while they run: a real etcd
(plain, or TLS with client certificates and auth, each daemon its own etcd user), an
engine, simulated machines each with its own fleetpy.host_trust (one trusted directory
of root keys, a kept record per machine), and the operator's keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fleetpy.config import AgentSettings, OnRevoke
from fleetpy.host_trust import HostTrust
from fleetpy.registry import RegistryConfig

from support.secure_fixtures import Roles
from support.signed_cluster import MACHINES, SignedClusterBase, signed_cluster_on

KEYS = ("root", "root2", "v1", "v2")  # root keys: in the hosts' directory; v*: release keys


class TrustCluster(SignedClusterBase):
    def __init__(self, roles: Roles, workdir: Path, on_revoke: OnRevoke) -> None:
        self.on_revoke = on_revoke  # before the agents start
        super().__init__(roles, workdir, KEYS, roots=("root",))

    def agent_settings(self, machine: str) -> AgentSettings:
        return AgentSettings(machine_id=machine, ttl=3, on_revoke=self.on_revoke)

    def trusted(self, machine: str) -> HostTrust:
        cache = self.workdir / "state" / f"trust-{machine}.json"
        return HostTrust(self.trusted_dir, cache, machine)

    def running_on(self, unit: str) -> list[str]:
        """The machines whose unit manager runs the unit (systemd's view, not etcd's)."""
        return [
            m
            for m, manager in self.managers.items()
            if (seen := manager.observe().get(unit)) is not None and seen.active == "active"
        ]


def trust_cluster(
    kind: str, registry_config: RegistryConfig, workdir: Path, on_revoke: OnRevoke
) -> Iterator[TrustCluster]:
    """The cluster on a plain etcd (the session's) or a TLS+auth one of its own."""
    yield from signed_cluster_on(
        kind, registry_config, workdir, lambda roles: TrustCluster(roles, workdir, on_revoke)
    )


__all__ = ["MACHINES", "TrustCluster", "trust_cluster"]
