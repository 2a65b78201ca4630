"""The one class Registry: every key family's operations (units, machines, metadata, cordons,
failures, trust, schedule, views, watches, backups, access control, history, audit trails,
a migration from fleet) on one etcd connection.

Its own module, not the package's __init__, so that importing fleetpy.registry (for
RegistryConfig, or a record) does not load gRPC: the CLI's --help and the agent's
settings never need it (fleetpy.registry re-exports Registry lazily).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import RegistryError
from .audit import AuditKeys
from .auth import AccessControl
from .backup import Backups
from .cordons import CordonKeys
from .endpoints import MAX_ENDPOINTS, normalize_prefix, parse_endpoint
from .failures import FailureKeys
from .fleet_migration import FleetMigrationKeys
from .global_rolls import GlobalRollKeys
from .history import History
from .machines import MachineKeys
from .metadata import MetadataKeys
from .schedule import ScheduleKeys
from .settings import RegistryConfig
from .tls import TlsMaterial, load_tls
from .transport import Endpoint, EtcdTransport
from .trust import TrustKeys
from .units import UnitKeys
from .views import Views
from .watches import Watches


class Registry(
    UnitKeys,
    GlobalRollKeys,
    MachineKeys,
    MetadataKeys,
    FailureKeys,
    CordonKeys,
    ScheduleKeys,
    Views,
    TrustKeys,
    Watches,
    Backups,
    AccessControl,
    History,
    FleetMigrationKeys,
    AuditKeys,
):
    """fleetpy's view of etcd: every key family's operations, on one connection.
    Thread-safe: the underlying gRPC client is."""

    def __init__(self, config: RegistryConfig, warn: Callable[[str], None] | None = None) -> None:
        self.config = config
        prefix = normalize_prefix(config.prefix)
        transport, self.etcd_user = self._connect()
        super().__init__(transport, prefix, warn)

    # -- connection

    def _connect(self) -> tuple[EtcdTransport, str | None]:
        """The transport, and the etcd user it acts as (--username, else the client
        certificate's CN; None: no credentials) for the audit trail."""
        config = self.config
        if len(config.endpoints) > MAX_ENDPOINTS:
            raise RegistryError(
                f"{len(config.endpoints)} etcd endpoints given; fleetpy takes at most "
                f"{MAX_ENDPOINTS} (an etcd cluster's members)"
            )
        tls = load_tls(config.ca_file, config.cert_file, config.key_file)
        endpoints = []
        for url in config.endpoints:
            host, port, secure = parse_endpoint(url)
            if secure and tls is None:
                tls = TlsMaterial(None, None, None)  # https without --ca-file: gRPC's CAs
            endpoints.append(Endpoint(host, port))
        if (config.username is None) != (config.password is None):
            given = "--username" if config.username is not None else "--password"
            raise RegistryError(f"{given} needs the other: etcd's user and password go together")
        transport = EtcdTransport(
            endpoints,
            timeout=config.timeout,
            tls=tls,
            user=config.username,
            password=config.password,
            diagnosis=tls,
        )
        return transport, config.username or (tls.identity if tls is not None else None)

    def close(self) -> None:
        self._etcd.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if TYPE_CHECKING:  # mypy checks that the one Registry offers every role's protocol
    from .roles import AgentRegistry, EngineRegistry, MigrationRegistry, OperatorRegistry

    def _offers_every_role(
        registry: Registry,
    ) -> tuple[OperatorRegistry, EngineRegistry, AgentRegistry, MigrationRegistry]:
        return registry, registry, registry, registry
