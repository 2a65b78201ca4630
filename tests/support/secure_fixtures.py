"""A secure etcd for tests: TLS on client and peer URLs, --client-cert-auth, etcd's auth
on with fleetpy's roles (Registry.ensure_access), and a client certificate per user.

    with secure_etcd(tmp_path, machines=("m1", "m2")) as etcd:
        etcd.registry(etcd.creds.operator).list_units()
        etcd.env(etcd.creds.agents["m1"])          # FLEETPY_* for a CLI subprocess
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from fleetpy.cluster.credentials import ClusterCredentials
from fleetpy.cluster.etcd import EtcdCluster, EtcdServer
from fleetpy.cluster.pki import Credential
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.registry.tls import load_tls
from fleetpy.registry.transport import Endpoint, EtcdTransport

from support.paths import ROOT

PREFIX = "/fleetpy"


@dataclass
class SecureEtcd:
    creds: ClusterCredentials
    endpoints: list[str]
    prefix: str = PREFIX
    made: list[str] = field(default_factory=list)  # what ensure_access did first

    def config(self, who: Credential, timeout: float = 5.0) -> RegistryConfig:
        return self.creds.config(who, self.endpoints, self.prefix, timeout)

    def registry(self, who: Credential, timeout: float = 5.0) -> Registry:
        return Registry(self.config(who, timeout))

    def transport(self, who: Credential, timeout: float = 5.0) -> EtcdTransport:
        """A bare etcd client acting as WHO: raw keys, below the registry's layout."""
        material = load_tls(str(self.creds.ca.cert_file), str(who.cert_file), str(who.key_file))
        endpoints = []
        for url in self.endpoints:
            parsed = urlparse(url)
            assert parsed.hostname and parsed.port
            endpoints.append(Endpoint(parsed.hostname, parsed.port))
        return EtcdTransport(endpoints, tls=material, timeout=timeout, diagnosis=material)

    def cli(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        """`python -m fleetpy ARGS` as the operator; its exit code must be CODE."""
        result = subprocess.run(
            [sys.executable, "-m", "fleetpy", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert result.returncode == code, result.stderr
        return result

    def root_etcdctl_options(self) -> tuple[str, ...]:
        """etcdctl's TLS options as etcd's root: someone with etcd access around fleetpy."""
        creds = self.creds
        return (
            f"--cacert={creds.ca.cert_file}",
            f"--cert={creds.root.cert_file}",
            f"--key={creds.root.key_file}",
        )

    def env(self, who: Credential | None = None) -> dict[str, str]:
        """The environment of a CLI subprocess acting as WHO (the operator by default)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
        env.update(self.creds.settings(who or self.creds.operator))
        env["FLEETPY_ENDPOINT"] = ",".join(self.endpoints)
        env["FLEETPY_ETCD_PREFIX"] = self.prefix
        return env


@contextlib.contextmanager
def secure_etcd(
    directory: Path,
    machines: Sequence[str] = ("m1", "m2"),
    members: int = 1,
    passwords: Mapping[str, str] | None = None,
) -> Iterator[SecureEtcd]:
    """One member, or a cluster of MEMBERS, on loopback; stopped (data removed) after.
    passwords: users that also get one (etcd user name -> password)."""
    creds = ClusterCredentials.create(directory / "pki", members, machines=machines)
    server: EtcdServer | EtcdCluster
    if members == 1:
        server = EtcdServer(tls=creds.members[0])
        server.start()
        endpoints = [server.endpoint]
    else:
        server = EtcdCluster(members, tls=creds.members)
        server.start()
        endpoints = server.endpoints
    try:
        etcd = SecureEtcd(creds, endpoints)
        with etcd.registry(creds.root) as root:
            etcd.made = root.ensure_access(machines, passwords)
        yield etcd
    finally:
        server.stop()


@dataclass(frozen=True)
class Roles:
    """Who connects as whom: on a secure etcd each daemon its own etcd user, on a plain one
    the same settings for all; `raw`: etcdctl's options as etcd's root (the forger)."""

    operator: RegistryConfig
    engine: RegistryConfig
    agents: Mapping[str, RegistryConfig]
    raw: Sequence[str] = ()

    @classmethod
    def plain(cls, config: RegistryConfig, machines: Sequence[str]) -> Roles:
        return cls(config, config, dict.fromkeys(machines, config))

    @classmethod
    def secure(cls, etcd: SecureEtcd, machines: Sequence[str]) -> Roles:
        creds = etcd.creds
        return cls(
            etcd.config(creds.operator),
            etcd.config(creds.engine),
            {m: etcd.config(creds.agents[m]) for m in machines},
            raw=etcd.root_etcdctl_options(),
        )
