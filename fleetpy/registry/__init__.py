"""The registry: every etcd read, write and watch of fleetpy goes through here.

Key layout under the prefix P (default ``/fleetpy``); values are JSON unless noted.

  P/content/<hash>              unit file text (raw), stored once per content hash
  P/unit/<name>                 UnitRecord: hash, desired state, global flag, owner, and
                                the signature of (name, hash) when the client signed it
  P/global/<name>               ScheduleEntry of a Global=true unit (read by every agent);
                                mid-roll its GlobalRoll: the previous version, the machines
                                still on it, the machines a rolling restart holds stopped
  P/schedule/<machine>/<name>   ScheduleEntry: the unit placed on that machine, with its
                                text, so an agent needs nothing but its own prefix (the
                                engine's; `migrate --from-fleet` writes fleet's placements
                                there while no engine leads: fleet_migration.py)
  P/reason/<name>               why the engine could not place the unit (plain text)
  P/machines/<machine>          MachineRecord, attached to the agent's lease
  P/metadata/<machine>          operators' metadata overlay of the machine (PATCH /machines):
                                {key: value, or null when removed}; no lease, so it
                                outlives agent restarts (fleetpy.metadata has the rules)
  P/cordon/<machine>            CordonRecord: an operator's cordon of the machine (no new
                                units), with a drain (its units moved elsewhere, at most N
                                at a time not yet active) or a maintenance window (its units
                                held while it reboots); no lease (fleetpy.drain has the rules)
  P/trust/record                the trust record, signed by a root key the hosts hold: the
                                release keys that sign units (with expiries) and the
                                revoked keys, with a serial that only moves forward
                                (fleetpy.trust has the rules; every agent watches it)
  P/state/<machine>/<name>      UnitState reported by the agent, attached to its lease (by
                                machine first: an agent's etcd role may write only its own)
  P/failure/<machine>/<name>    FailureRecord: the unit failed RescheduleOnFailure= times
                                within its window there (its agent writes it, no lease); the
                                engine moves the unit and deletes it when the backoff ends
  P/audit/<name>                AuditTrail: the unit's last changes (who, host, time, verb,
                                hash, desired state), appended in the transaction of each
                                change, kept after a destroy (fleetpy.model.audit)
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
family (units, deployments, machines, metadata, cordons, failures, trust, schedule, views,
watches, backup, auth, history, audit) on base.py's plumbing, joined in the one class Registry (facade.py). roles.py has
what each kind of client may call (the protocols of access.py's roles).

This package's own module imports only RegistryConfig and the defaults (settings.py);
what it re-exports (Registry, the records, the transport's figures) is loaded on first
use, so a process that never talks to etcd (`fleetpy --help`, `fleetpy render`) does not
load gRPC and protobuf.
"""

from __future__ import annotations

import importlib
import os

# gRPC's C core logs to stderr by itself (several lines per failed TLS handshake);
# fleetpy says what went wrong in one line of its own. Set before grpc is imported.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from typing import TYPE_CHECKING, Any

from .settings import DEFAULT_ENDPOINT, DEFAULT_PREFIX, RegistryConfig

if TYPE_CHECKING:
    from ..model.changes import UnitChange
    from ..model.codecs import MACHINE_ID
    from ..model.records import ClusterView, UnitRecord, UnitState
    from .backup import DESIRED_KINDS
    from .base import MAX_TXN_BYTES, MAX_TXN_OPS, PrefixError
    from .endpoints import normalize_prefix
    from .facade import Registry
    from .history import ReclaimReport
    from .machines import MachineIdInUse
    from .transport import Alarm, EndpointStats, MemberStatus

# Where each re-exported name lives (relative to this package), imported on first use.
_LAZY = {
    "UnitChange": "..model.changes",
    "MACHINE_ID": "..model.codecs",
    "ClusterView": "..model.records",
    "UnitRecord": "..model.records",
    "UnitState": "..model.records",
    "DESIRED_KINDS": ".backup",
    "MAX_TXN_BYTES": ".base",
    "MAX_TXN_OPS": ".base",
    "PrefixError": ".base",
    "normalize_prefix": ".endpoints",
    "Registry": ".facade",
    "ReclaimReport": ".history",
    "MachineIdInUse": ".machines",
    "Alarm": ".transport",
    "EndpointStats": ".transport",
    "MemberStatus": ".transport",
}


def __getattr__(name: str) -> Any:
    """A re-exported name, imported from its module the first time it is asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


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
