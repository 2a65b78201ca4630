"""The registry: every etcd read, write and watch of fleetpy goes through here.

Key layout under the prefix P (default ``/fleetpy``); values are JSON unless noted.

  P/content/<hash>              unit file text (raw), stored once per content hash
  P/unit/<name>                 UnitRecord: hash, desired state, global flag, owner, and
                                the signature of (name, hash) when the client signed it
  P/global/<name>               ScheduleEntry of a Global=true unit (read by every agent)
  P/schedule/<machine>/<name>   ScheduleEntry: the unit placed on that machine, with its
                                text, so an agent needs nothing but its own prefix
  P/reason/<name>               why the engine could not place the unit (plain text)
  P/machines/<machine>          MachineRecord, attached to the agent's lease
  P/metadata/<machine>          operators' metadata overlay of the machine (PATCH /machines):
                                {key: value, or null when removed}; no lease, so it
                                outlives agent restarts (fleetpy.metadata has the rules)
  P/state/<machine>/<name>      UnitState reported by the agent, attached to its lease (by
                                machine first: an agent's etcd role may write only its own)
  P/engine/leader               id of the leading engine, attached to its lease
  P/engine/force-reschedule     an operator's one-shot request to move units off machines
                                that are not reporting (despite a pause or grace period)
  P/deploy/<name>               DeploymentRecord: the last commit `fleetpy apply` finished,
                                the one it is rolling out; every apply write is guarded by it
  P/watcher/<name>              the `fleetpy git watch` that may apply the deployment, under
                                its lease (the others wait)
  P/signature/<hash>            reserved, unused: a signature covers a unit's name as well
                                as its content hash, so it lives in the unit record and the
                                engine copies it into the schedule (or client into the
                                global) entry, the one record an agent reads
  P/fleetpy-layout              marks P as a fleetpy prefix: a prefix inside another
                                fleetpy prefix (or holding one) is refused, since each
                                would read the other's keys as its own

Each JSON record carries its schema version, "v" (SCHEMA_VERSION; none: 1, as written
before versions). A newer one is RecordTooNew: said once per key and version and left
alone; where absence would mean "stop" or "unschedule", readers get Newer in its place.

The records, their codecs and the events are fleetpy.model's; here, one module per key
family (units, deployments, machines, metadata, schedule, views, watches, backup, auth,
history) on base.py's plumbing, joined in the one class Registry. roles.py has what each
kind of client may call (the protocols of access.py's roles).

Only the engine writes P/schedule and P/reason; only clients (CLI, API) write P/unit,
P/global, P/content and P/metadata; only agents write P/machines and P/state. With etcd's
auth on, the roles of access.py enforce it (each agent only its own machine's keys). Every
multi-key change is one transaction guarded by the revisions it read, so racing clients
never lose an update.
"""

from __future__ import annotations

import os

# gRPC's C core logs to stderr by itself (several lines per failed TLS handshake);
# fleetpy says what went wrong in one line of its own. Set before grpc is imported.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import RegistryError

# Re-exported for the client library and config (fleetpy.model has every record).
from ..model.changes import UnitChange
from ..model.codecs import MACHINE_ID
from ..model.records import ClusterView, UnitRecord, UnitState
from .auth import AccessControl
from .backup import DESIRED_KINDS, Backups
from .base import MAX_TXN_BYTES, MAX_TXN_OPS, PrefixError
from .endpoints import MAX_ENDPOINTS, normalize_prefix, parse_endpoint
from .history import History, ReclaimReport
from .machines import MachineIdInUse, MachineKeys
from .metadata import MetadataKeys
from .schedule import ScheduleKeys
from .tls import TlsMaterial, load_tls
from .transport import Alarm, Endpoint, EndpointStats, EtcdTransport, MemberStatus
from .units import UnitKeys
from .views import Views
from .watches import Watches

DEFAULT_PREFIX = "/fleetpy"
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RegistryConfig:
    """How to reach etcd: the one record of the etcd settings (config.SETTINGS' etcd
    scope names their options, env vars and config keys; `timeout` is --request-timeout).
    Its defaults are those settings' defaults, stated here only."""

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    prefix: str = DEFAULT_PREFIX
    timeout: float = 5.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None


# ----------------------------------------------------------------------------- registry


class Registry(
    UnitKeys,
    MachineKeys,
    MetadataKeys,
    ScheduleKeys,
    Views,
    Watches,
    Backups,
    AccessControl,
    History,
):
    """fleetpy's view of etcd: every key family's operations, on one connection.
    Thread-safe: the underlying gRPC client is."""

    def __init__(self, config: RegistryConfig, warn: Callable[[str], None] | None = None) -> None:
        self.config = config
        prefix = normalize_prefix(config.prefix)
        super().__init__(self._connect(), prefix, warn)

    # -- connection

    def _connect(self) -> EtcdTransport:
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
        return EtcdTransport(
            endpoints,
            timeout=config.timeout,
            tls=tls,
            user=config.username,
            password=config.password,
            diagnosis=tls,
        )

    def close(self) -> None:
        self._etcd.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if TYPE_CHECKING:  # mypy checks that the one Registry offers every role's protocol
    from .roles import AgentRegistry, EngineRegistry, OperatorRegistry

    def _offers_every_role(
        registry: Registry,
    ) -> tuple[OperatorRegistry, EngineRegistry, AgentRegistry]:
        return registry, registry, registry


__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_PREFIX",
    "DESIRED_KINDS",
    "MACHINE_ID",
    "MAX_TXN_BYTES",
    "MAX_TXN_OPS",
    "Alarm",
    "ClusterView",
    "EndpointStats",
    "MachineIdInUse",
    "MemberStatus",
    "PrefixError",
    "ReclaimReport",
    "Registry",
    "RegistryConfig",
    "UnitChange",
    "UnitRecord",
    "UnitState",
    "normalize_prefix",
]
