"""The certificates of a secure fleetpy cluster, made in one directory: a CA; for each
etcd member a server and a peer certificate for its addresses; and one client
certificate per etcd user: root (to set up users and roles), the operator (the CLI),
the engine, and every machine's agent. A client certificate's CN is its etcd user.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..registry import RegistryConfig
from ..registry.access import ENGINE, OPERATOR, agent_role_name
from .etcd import EtcdTls
from .pki import Authority, Credential, Usage

ROOT = "root"
# File names of an agent's credentials inside a host, next to its agent.yaml.
HOST_CA = "ca.pem"
HOST_CERT = "agent.pem"
HOST_KEY = "agent-key.pem"


@dataclass(frozen=True)
class ClusterCredentials:
    directory: Path
    ca: Authority
    members: tuple[EtcdTls, ...]  # one per etcd member
    root: Credential
    operator: Credential
    engine: Credential
    agents: Mapping[str, Credential]  # machine id -> its agent's credential

    @classmethod
    def create(
        cls,
        directory: Path,
        members: int = 1,
        addresses: Sequence[str] = ("127.0.0.1",),
        machines: Sequence[str] = (),
    ) -> ClusterCredentials:
        """Everything in DIRECTORY (private keys mode 0600); etcd members are reached
        at ADDRESSES (and 127.0.0.1)."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        ca = Authority.create(directory, "ca")
        member_tls = tuple(
            EtcdTls.generate(
                directory, addresses, client_name=ROOT, peer=True, authority=ca, name=f"etcd{i}"
            )
            for i in range(members)
        )
        clients = directory / "clients"

        def client(user: str) -> Credential:
            return ca.issue(clients, user, Usage.CLIENT)

        return cls(
            directory,
            ca,
            member_tls,
            client(ROOT),
            client(OPERATOR),
            client(ENGINE),
            {machine: client(agent_role_name(machine)) for machine in machines},
        )

    def config(
        self,
        credential: Credential,
        endpoints: Sequence[str],
        prefix: str = RegistryConfig.prefix,
        timeout: float = RegistryConfig.timeout,
    ) -> RegistryConfig:
        """Registry settings that act as the credential's user (defaults: the record's)."""
        return RegistryConfig(
            endpoints=tuple(endpoints),
            prefix=prefix,
            timeout=timeout,
            ca_file=str(self.ca.cert_file),
            cert_file=str(credential.cert_file),
            key_file=str(credential.key_file),
        )

    def settings(self, credential: Credential) -> dict[str, str]:
        """The same as FLEETPY_* environment variables (engines, the env file)."""
        return {
            "FLEETPY_CA_FILE": str(self.ca.cert_file),
            "FLEETPY_CERT_FILE": str(credential.cert_file),
            "FLEETPY_KEY_FILE": str(credential.key_file),
        }

    def install_agent(
        self, machine: str, etc_dir: Path, inside: str = "/etc/fleetpy"
    ) -> dict[str, str]:
        """Copy a machine's agent credential and the CA into ETC_DIR (a host's
        /etc/fleetpy, seen from here), mode 0600; returns the agent.yaml settings that
        point at them as the host sees them (INSIDE)."""
        etc_dir.mkdir(parents=True, exist_ok=True)
        credential = self.agents[machine]
        for source, name in (
            (self.ca.cert_file, HOST_CA),
            (credential.cert_file, HOST_CERT),
            (credential.key_file, HOST_KEY),
        ):
            target = etc_dir / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
        return {
            "ca_file": f"{inside}/{HOST_CA}",
            "cert_file": f"{inside}/{HOST_CERT}",
            "key_file": f"{inside}/{HOST_KEY}",
        }


__all__ = ["HOST_CA", "HOST_CERT", "HOST_KEY", "ROOT", "ClusterCredentials"]
