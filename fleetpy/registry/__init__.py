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

import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import urlparse

from ..errors import (
    DeploymentError,
    FleetpyError,
    MetadataError,
    PartialWriteError,
    RegistryError,
    StateError,
    UnknownUnitError,
)
from ..log import log_event
from ..metadata import MetadataChange, Overlay, apply_changes, effective, key_problem, value_problem
from ..states import RUNNING_STATES, DesiredState
from ..unit import parse_name
from . import access
from .layout import (
    ADOPT,
    FORCE_RESCHEDULE,
    LAYOUT_KEY,
    LAYOUT_VALUE,
    ancestor_markers,
    ancestors,
    join,
)
from .tls import TlsMaterial, load_tls
from .transport import (
    Alarm,
    Compare,
    DeleteOp,
    Endpoint,
    EndpointStats,
    EtcdCompacted,
    EtcdPermissionDenied,
    EtcdTransport,
    EventKind,
    GetOp,
    KeyValue,
    MemberStatus,
    PutOp,
    RangeResult,
    TxnOp,
    WatchEnded,
    WatchResponse,
    prefix_range_end,
)

DEFAULT_PREFIX = "/fleetpy"
# What people wrote (a backup's contents), in the order a restore writes it: contents
# before the units that name them, units last (the engine places what it sees).
DESIRED_KINDS = ("content", "global", "metadata", "deploy", "unit")
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
_PREFIX = re.compile(r"(/[A-Za-z0-9_.:@+-]+)*")
# etcd's default --max-txn-ops is 128; stay under it with room for guards.
MAX_TXN_OPS = 120
# etcd's default --max-request-bytes is 1.5 MiB; keep each transaction well under it.
MAX_TXN_BYTES = 1024 * 1024
_CONFLICT_RETRIES = 50

T = TypeVar("T")
_MISSING: Any = object()


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


class MalformedRecord(Exception):
    """A value under the prefix that is not a record fleetpy wrote (hand-edited, or
    another tool's key); readers skip it with one warning naming the key."""


# The schema version of the records this fleetpy writes: field "v" of each JSON record.
# A record without one is version 1, what every release before versions wrote, in the
# same shape (releases before ignore the field). A change a reader of an older version
# would misread takes a new version; fields an older reader may ignore do not.
SCHEMA_VERSION = 1
VERSION_FIELD = "v"
# Operators' overlays are flat maps of metadata keys; their version, from 2 on, goes
# under a key no metadata key can be (releases before versions skip such an overlay).
OVERLAY_VERSION_KEY = "@v"


class RecordTooNew(MalformedRecord):
    """A record of a schema version newer than this fleetpy's: written by a newer
    release. Never misread, and never taken for an absent record: left alone."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(
            f"written by a newer fleetpy (record version {version}; "
            f"this one reads up to {SCHEMA_VERSION})"
        )


@dataclass(frozen=True)
class Newer:
    """Stands for a record too new to read where one was found (a read, a watch event):
    what it is is unknown, that it is there is not."""

    version: int


_HASH = re.compile(r"[0-9a-f]{64}")
# Machine ids: systemd's 32 hex digits, or any short name of these characters
# (simulated hosts); never '/', which would break the key layout.
MACHINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def _object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise MalformedRecord(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise MalformedRecord(f"a JSON {type(data).__name__}, not an object")
    return data


def _version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MalformedRecord("field 'v' is not a schema version")
    if value > SCHEMA_VERSION:
        raise RecordTooNew(value)
    return value


def _record(raw: bytes) -> dict[str, Any]:
    """A JSON record of a version this fleetpy reads (RecordTooNew otherwise)."""
    data = _object(raw)
    _version(data.get(VERSION_FIELD, 1))
    return data


def _versioned(data: dict[str, Any]) -> str:
    return _dumps({VERSION_FIELD: SCHEMA_VERSION, **data})


def _field(
    data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _MISSING
) -> Any:
    value = data.get(name, default)
    if value is _MISSING:
        raise MalformedRecord(f"no {name!r} field")
    if not isinstance(value, kind) and not (default is None and value is None):
        raise MalformedRecord(f"field {name!r} is a {type(value).__name__}")
    return value


def _unit_name(name: str) -> str:
    try:
        parsed = parse_name(name)
    except FleetpyError as exc:
        raise MalformedRecord(str(exc)) from None
    if parsed.name != name:
        raise MalformedRecord(f"invalid unit name {name!r}")
    return name


def _machine_id(machine: str) -> str:
    if not MACHINE_ID.fullmatch(machine):
        raise MalformedRecord(f"invalid machine id {machine!r}")
    return machine


def _content_hash(value: Any) -> str:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise MalformedRecord("field 'hash' is not a sha256 hex digest")
    return value


def _desired(value: Any) -> DesiredState:
    try:
        return DesiredState(value)
    except ValueError:
        raise MalformedRecord(f"field 'desired' is not one of {', '.join(DesiredState)}") from None


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRecord("not UTF-8 text") from None


@dataclass(frozen=True)
class UnitRecord:
    name: str
    hash: str
    desired: DesiredState
    is_global: bool = False
    owner: str | None = None  # the deployment that created it (`fleetpy apply`), if any
    origin: str | None = None  # the git commit or content digest it was applied from
    revision: int = 0  # etcd mod_revision of the record, 0 if not stored
    # ed25519 signature of (name, hash) (fleetpy.signing's text form); None: unsigned.
    # Carried, never checked here: agents with trusted keys check it.
    signature: str | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "hash": self.hash,
            "desired": self.desired,
            "global": self.is_global,
            "owner": self.owner,
            "origin": self.origin,
        }
        if self.signature is not None:  # unsigned records stay as they were
            data["signature"] = self.signature
        return _versioned(data)

    @classmethod
    def from_json(cls, name: str, raw: bytes, revision: int = 0) -> UnitRecord:
        data = _record(raw)
        return cls(
            name=_unit_name(name),
            hash=_content_hash(data.get("hash")),
            desired=_desired(data.get("desired")),
            is_global=_field(data, "global", bool, False),
            owner=_field(data, "owner", str, None),
            origin=_field(data, "origin", str, None),
            revision=revision,
            signature=_field(data, "signature", str, None),
        )


@dataclass(frozen=True)
class DeploymentRecord:
    """What `fleetpy apply` last did for a deployment, and whether one is running."""

    name: str
    commit: str = ""  # git commit, or content digest, of the last finished apply
    applying: str = ""  # the commit an apply is rolling out now ("" when none is)
    message: str = ""  # how the last apply ended
    revision: int = 0

    def to_json(self) -> str:
        return _versioned(
            {"commit": self.commit, "applying": self.applying, "message": self.message}
        )

    @classmethod
    def from_json(cls, name: str, raw: bytes, revision: int = 0) -> DeploymentRecord:
        data = _record(raw)
        return cls(
            name,
            _field(data, "commit", str, ""),
            _field(data, "applying", str, ""),
            _field(data, "message", str, ""),
            revision,
        )


class DeploymentSession:
    """An apply's hold on its deployment record. Every write of the apply is guarded by
    the record's revision it last wrote, so when two applies race, the first write wins
    and the other stops; nothing stays locked if a client dies."""

    def __init__(self, record: DeploymentRecord) -> None:
        self.record = record

    @property
    def name(self) -> str:
        return self.record.name


@dataclass(frozen=True)
class ScheduleEntry:
    """What an agent needs to run one unit: name, content, desired state."""

    name: str
    hash: str
    desired: DesiredState
    text: str
    signature: str | None = None  # the unit record's, copied; agents with trusted keys check it

    def to_json(self) -> str:
        data: dict[str, Any] = {"hash": self.hash, "desired": self.desired, "text": self.text}
        if self.signature is not None:
            data["signature"] = self.signature
        return _versioned(data)

    @classmethod
    def from_json(cls, name: str, raw: bytes) -> ScheduleEntry:
        data = _record(raw)
        return cls(
            name=_unit_name(name),
            hash=_content_hash(data.get("hash")),
            desired=_desired(data.get("desired")),
            text=_field(data, "text", str),
            signature=_field(data, "signature", str, None),
        )


@dataclass(frozen=True)
class MachineRecord:
    id: str
    ip: str = ""
    own_metadata: Mapping[str, str] = field(default_factory=dict)  # the agent's --metadata
    hostname: str = ""
    ttl: int = 0  # the agent's lease TTL: the engine's grace period is based on it
    # Which agent holds the id: the same across its restarts on one boot, another on a
    # host cloned with the same /etc/machine-id ("" from agents before it was recorded).
    instance: str = ""
    # Operators' overlay (P/metadata/<id>), attached by readers; not part of this record.
    operator_metadata: Overlay = field(default_factory=dict)

    @property
    def metadata(self) -> Mapping[str, str]:
        """The machine's metadata as scheduling and listings see it: the agent's own with
        the operators' overlay on top."""
        if not self.operator_metadata:
            return self.own_metadata
        return effective(self.own_metadata, self.operator_metadata)

    def to_json(self) -> str:
        return _versioned(
            {
                "ip": self.ip,
                "metadata": dict(self.own_metadata),
                "hostname": self.hostname,
                "ttl": self.ttl,
                "instance": self.instance,
            }
        )

    @classmethod
    def from_json(cls, machine_id: str, raw: bytes) -> MachineRecord:
        data = _record(raw)
        metadata = _field(data, "metadata", dict, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise MalformedRecord("field 'metadata' is not a mapping of strings")
        ttl = _field(data, "ttl", int, 0)
        if isinstance(ttl, bool) or not 0 <= ttl <= 86400:
            raise MalformedRecord("field 'ttl' is out of range")
        ip = _field(data, "ip", str, "")
        if ip:
            # `status` and `ssh` give it to ssh, whose ProxyCommand runs in a shell: only
            # what agents write (an IP address, as --public-ip requires) is accepted.
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise MalformedRecord("field 'ip' is not an IP address") from None
        return cls(
            id=_machine_id(machine_id),
            ip=ip,
            own_metadata=dict(metadata),
            hostname=_field(data, "hostname", str, ""),
            ttl=ttl,
            instance=_field(data, "instance", str, ""),
        )


def overlay_to_json(overlay: Overlay) -> str:
    return _dumps(dict(overlay))


def overlay_from_json(machine_id: str, raw: bytes) -> dict[str, str | None]:
    """An operators' metadata overlay: {key: value or null}, each valid as metadata."""
    _machine_id(machine_id)
    data = _object(raw)
    if OVERLAY_VERSION_KEY in data:
        _version(data.pop(OVERLAY_VERSION_KEY))
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise MalformedRecord(f"metadata {key!r} is a {type(value).__name__}")
        problem = key_problem(key) or (value_problem(key, value) if value is not None else None)
        if problem:
            raise MalformedRecord(problem)
    return data


@dataclass(frozen=True)
class UnitState:
    """LOAD/ACTIVE/SUB as systemctl list-units shows them, for one unit on one machine."""

    name: str
    machine: str
    load: str
    active: str
    sub: str
    hash: str = ""
    message: str = ""  # e.g. systemd's complaint about a unit file it refused
    job: str = ""  # how the agent's last start of it ended (fleetpy.states: JOB_*)

    def to_json(self) -> str:
        data = {
            "load": self.load,
            "active": self.active,
            "sub": self.sub,
            "hash": self.hash,
            "message": self.message,
        }
        if self.job:  # states without one stay as they were
            data["job"] = self.job
        return _versioned(data)

    @classmethod
    def from_json(cls, name: str, machine: str, raw: bytes) -> UnitState:
        data = _record(raw)
        return cls(
            name=_unit_name(name),
            machine=_machine_id(machine),
            load=_field(data, "load", str, ""),
            active=_field(data, "active", str, ""),
            sub=_field(data, "sub", str, ""),
            hash=_field(data, "hash", str, ""),
            message=_field(data, "message", str, ""),
            job=_field(data, "job", str, ""),
        )


class MachineSchedule(NamedTuple):
    """What one agent is asked to run, read at one revision."""

    revision: int
    placed: dict[str, ScheduleEntry]
    globals: dict[str, ScheduleEntry]
    newer: frozenset[str]  # units whose entry (placed or global) is too new to read


@dataclass(frozen=True)
class ClusterView:
    """Everything a client or the engine needs, read at one etcd revision."""

    revision: int
    units: dict[str, UnitRecord]
    machines: dict[str, MachineRecord]
    schedule: dict[str, tuple[str, ScheduleEntry]]  # unit -> (machine, entry)
    reasons: dict[str, str]
    states: dict[str, dict[str, UnitState]]  # unit -> machine -> state
    # Operators' metadata overlays by machine id, also of machines not registered now
    # (the records in `machines` carry theirs already).
    overlays: dict[str, Overlay] = field(default_factory=dict)
    # Records too new for this fleetpy to read (left alone, never taken for absent):
    # unit names, unit -> machine of schedule entries, machine ids (record or overlay).
    newer_units: frozenset[str] = frozenset()
    newer_schedule: dict[str, str] = field(default_factory=dict)
    newer_machines: frozenset[str] = frozenset()


# Watch events: one typed record per change. A value that is not a fleetpy record
# arrives as a removal (None), as a fresh read would skip it; one too new to read
# arrives as None with `newer` its version (units, machines, schedule entries: what the
# engine and agents must not take for gone).


@dataclass(frozen=True)
class UnitEvent:
    name: str
    record: UnitRecord | None  # None: destroyed (or too new to read: `newer`)
    newer: int = 0


@dataclass(frozen=True)
class MachineEvent:
    machine: str
    record: MachineRecord | None  # None: its lease ended (or too new to read: `newer`)
    newer: int = 0


@dataclass(frozen=True)
class MetadataEvent:
    """Operators changed a machine's metadata overlay."""

    machine: str
    overlay: Overlay | None  # None: no overlay (deleted, or not a valid one)


@dataclass(frozen=True)
class ScheduleEvent:
    """A unit placed on (or taken off) a machine; machine "" for a global unit."""

    machine: str
    unit: str
    entry: ScheduleEntry | None  # None: taken off (or too new to read: `newer`)
    newer: int = 0


@dataclass(frozen=True)
class StateEvent:
    unit: str
    machine: str
    state: UnitState | None


@dataclass(frozen=True)
class ReasonEvent:
    unit: str
    reason: str | None  # None: the engine placed the unit (or it was destroyed)


@dataclass(frozen=True)
class DeploymentEvent:
    name: str
    record: DeploymentRecord | None  # None: deleted


@dataclass(frozen=True)
class ContentEvent:
    hash: str
    text: str | None


@dataclass(frozen=True)
class EngineEvent:
    """The leader key or an operator's request changed."""

    leader: str | None = None  # the new leader; None: no leader (or not this key)
    leader_changed: bool = False
    force_reschedule: bool = False  # `fleetpy force-reschedule` was run
    adopt: bool = False  # `fleetpy restore` ran: place units where they are found running


# Covariant: an agent takes batches of several event types in one callback.
E = TypeVar("E", covariant=True)


@dataclass(frozen=True)
class WatchBatch(Generic[E]):
    """One watch response: its events, or an error meaning 'resync from a fresh read'."""

    events: tuple[E, ...]
    revision: int
    error: Exception | None = None
    compacted: bool = False


# What the engine writes: placements, reasons, and clearing an operator's request.


@dataclass(frozen=True)
class PlaceUnit:
    machine: str
    entry: ScheduleEntry


@dataclass(frozen=True)
class UnplaceUnit:
    machine: str
    unit: str


@dataclass(frozen=True)
class StoreReason:
    unit: str
    reason: str | None  # None: delete


@dataclass(frozen=True)
class ClearForceReschedule:
    pass


@dataclass(frozen=True)
class ClearAdoptionRequest:
    pass


EngineWrite = PlaceUnit | UnplaceUnit | StoreReason | ClearForceReschedule | ClearAdoptionRequest


@dataclass(frozen=True)
class UnitChange:
    """A client's request for one unit, executed by Registry.change_units."""

    name: str
    desired: DesiredState | None = None  # None = leave the desired state alone (submit)
    text: str | None = None  # content when submitting from a file
    hash: str | None = None
    is_global: bool = False
    template: str | None = None  # an instance without a file takes this template's content
    owner: str | None = None
    origin: str | None = None
    replace: bool = False  # new contents under the same name (a rolling update's step)
    # The client's signature of (name, hash): stored with the record. None keeps an
    # existing record's signature, except when new contents replace it (it covered the old).
    signature: str | None = None


# ----------------------------------------------------------------------------- helpers


def _dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


# A DNS name or an IP address (urlparse drops an IPv6 address's brackets).
_ENDPOINT_HOST = re.compile(
    r"[A-Za-z0-9_.-]{1,253}|(?=.*:)[0-9A-Fa-f:.]{2,45}(%[A-Za-z0-9_.-]{1,64})?"
)
# An etcd cluster has a handful of members; thousands of endpoints would only make
# every failure message thousands of lines long (each is listed with its error).
MAX_ENDPOINTS = 32


def _parse_endpoint(url: str) -> tuple[str, int, bool]:
    text = url.strip()
    shown = repr(url if len(url) <= 100 else url[:100] + "...")
    if "://" not in text:
        text = "http://" + text
    try:
        parsed = urlparse(text)
    except ValueError as exc:
        raise RegistryError(f"invalid etcd endpoint {shown}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise RegistryError(f"invalid etcd endpoint {shown}: expected http(s)://HOST:PORT")
    # Parts gRPC would silently ignore: a password there would be neither used nor
    # safe (messages name the endpoint), and a path suggests a different server.
    if parsed.username is not None or parsed.password is not None:
        raise RegistryError(
            "invalid etcd endpoint: a user or password in the URL is not used; "
            "give --username and --password"
        )
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise RegistryError(
            f"invalid etcd endpoint {shown}: expected http(s)://HOST:PORT, without a path"
        )
    if not _ENDPOINT_HOST.fullmatch(parsed.hostname):
        raise RegistryError(f"invalid etcd endpoint {shown}: bad host name")
    try:
        port = parsed.port
    except ValueError:
        port = 0
    if port == 0:  # urlparse says None when there is none, 0 for ":0"
        raise RegistryError(f"invalid etcd endpoint {shown}: bad port (1 to 65535)")
    return parsed.hostname, port or 2379, parsed.scheme == "https"


def normalize_prefix(prefix: str) -> str:
    """'/fleetpy/' -> '/fleetpy'; '/' -> '' (the whole key space). Components are plain
    names: no empty, '.' or '..' parts, no spaces or control characters."""
    text = prefix.rstrip("/") if prefix != "/" else ""
    if not text.startswith("/") and text:
        text = "/" + text
    if (
        len(text) > 256
        or not _PREFIX.fullmatch(text)
        or any(part in (".", "..") for part in text.split("/"))
    ):
        raise RegistryError(
            f"invalid etcd prefix {prefix!r}: expected /NAME[/NAME...] with "
            "letters, digits and _.:@+-"
        )
    return text


def _sized_chunks(
    items: Sequence[T], limit: int, size: Callable[[T], int]
) -> Iterator[Sequence[T]]:
    """Runs of ITEMS for one transaction each: at most LIMIT items and MAX_TXN_BYTES of
    their SIZE (a single larger item goes alone)."""
    chunk: list[T] = []
    total = 0
    for item in items:
        bytes_ = size(item)
        if chunk and (len(chunk) >= limit or total + bytes_ > MAX_TXN_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += bytes_
    if chunk:
        yield chunk


def _unit_chunks(changes: Sequence[UnitChange]) -> Iterator[Sequence[UnitChange]]:
    """Transactions of at most 40 units (content, record, global entry: 3 ops each) and
    MAX_TXN_BYTES of unit text (a global unit's text is written twice)."""
    return _sized_chunks(
        changes,
        MAX_TXN_OPS // 3,
        lambda change: len(change.text or "") * (2 if change.is_global else 1) + 256,
    )


def _names(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _partial_message(
    done: Sequence[str],
    rest: Sequence[str],
    exc: Exception,
    verb: str = "wrote",
    participle: str = "written",
) -> str:
    """A command of several transactions failed after some: say what was written."""
    total = len(done) + len(rest)
    return (
        f"{verb} {len(done)} of {total} units ({_names(done)}) before an error; "
        f"not {participle}: {_names(rest)}: {exc}"
    )


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MachineIdInUse(RegistryError):
    """Another agent holds this machine id: a host cloned with the same /etc/machine-id."""

    def __init__(self, holder: MachineRecord) -> None:
        self.holder = holder
        where = ", ".join(
            part for part in (holder.hostname and f"host {holder.hostname}", holder.ip) if part
        )
        super().__init__(
            f"machine id {holder.id} is in use by another agent ({where or 'unknown host'}): "
            "a cloned image? give this host its own /etc/machine-id "
            "(rm /etc/machine-id; systemd-machine-id-setup); waiting until that one is gone"
        )


class PrefixError(RegistryError):
    """The etcd prefix lies inside another fleetpy prefix, or holds one."""


class _TxnConflict(Exception):
    """A guarded transaction lost a race; the caller re-reads and retries."""


# ----------------------------------------------------------------------------- registry


class Registry:
    """fleetpy's view of etcd. Thread-safe: the underlying gRPC client is."""

    def __init__(self, config: RegistryConfig, warn: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.prefix = normalize_prefix(config.prefix)
        self._layout_checked = False
        self._layout_unmarked = False  # the next client write puts our layout marker
        self._warn = warn or (lambda message: log_event("record_skipped", detail=message))
        self._warn_newer = warn  # None: a structured line of its own (_left_alone)
        self._warned: set[tuple[str, str]] = set()
        self._warn_lock = threading.Lock()
        self._etcd = self._connect()
        # Operation builders for transactions (the engine batches its own).
        self.txn = _Ops()

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
            host, port, secure = _parse_endpoint(url)
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

    def etcd_stats(self) -> tuple[EndpointStats, ...]:
        """Requests this client sent to each etcd endpoint, and the failed ones."""
        return self._etcd.stats()

    # -- etcd's history and space (the whole etcd's, not only this prefix's)

    def revision(self) -> int:
        """etcd's current revision."""
        return self._etcd.range(self.key("layout"), limit=1, keys_only=True).revision

    def compact_history(self, revision: int) -> bool:
        """Drop etcd's history before REVISION (values overwritten or deleted earlier).
        False: etcd's access control refused this client's user."""
        try:
            self._etcd.compact(revision)
        except EtcdPermissionDenied:
            return False
        return True

    def etcd_status(self) -> tuple[tuple[MemberStatus, ...], tuple[Alarm, ...]]:
        """Each member's database size and revision, and the alarms raised."""
        return tuple(self._etcd.member_status()), tuple(self._etcd.alarms())

    def reclaim_space(self) -> ReclaimReport:
        """What an operator does for etcd's NOSPACE alarm (etcd's own runbook): compact
        the history at the current revision, defragment each member in turn (each blocks
        while it rewrites its file), then disarm the NOSPACE alarms. A member that does
        not answer is left as it was and named in the report."""
        before = {status.url: status for status in self._etcd.member_status()}
        revision = self.revision()
        self._etcd.compact(revision, physical=True)
        unreachable = []
        for url, status in before.items():
            if status.error:
                unreachable.append(f"{url} ({status.error})")
                continue
            try:
                self._etcd.defragment(url)
            except EtcdPermissionDenied:
                who = self._etcd.identity
                raise RegistryError(
                    "defragmenting etcd and disarming its alarms take etcd's root user"
                    + (f" (this client acts as {who})" if who else "")
                    + ": run reclaim with root's credentials (its history is compacted)"
                ) from None
            except RegistryError as exc:
                unreachable.append(f"{url} ({exc})")
        disarmed = []
        for alarm in self._etcd.alarms():
            if alarm.kind == "NOSPACE":
                self._etcd.disarm(alarm)
                disarmed.append(alarm)
        after = {status.url: status for status in self._etcd.member_status()}
        log_event("etcd_reclaimed", revision=revision, disarmed=len(disarmed))
        return ReclaimReport(
            revision=revision,
            sizes=tuple(
                (url, before[url].db_size, after[url].db_size)
                for url in before
                if not before[url].error and not after[url].error
            ),
            disarmed=tuple(disarmed),
            unreachable=tuple(unreachable),
        )

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keys

    def key(self, *parts: str) -> str:
        return join(self.prefix, *parts)

    def _prefix(self, *parts: str) -> str:
        return self.key(*parts) + "/"

    def _strip(self, prefix: str, key: bytes | str) -> str:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        return text[len(prefix) :]

    # -- decoding: every value read is checked; what fleetpy did not write is skipped

    def _skip(self, key: str, why: str) -> None:
        """One warning per malformed key and problem, however often it is read."""
        with self._warn_lock:
            if (key, why) in self._warned:
                return
            self._warned.add((key, why))
        self._warn(f"skipped {key}: not a fleetpy record ({why})")

    def _left_alone(self, key: str, version: int) -> None:
        """One line per key and version too new to read, however often it is read."""
        with self._warn_lock:
            if (key, f"v{version}") in self._warned:
                return
            self._warned.add((key, f"v{version}"))
        if self._warn_newer is not None:
            self._warn_newer(f"left {key} alone: {RecordTooNew(version)}")
        else:
            log_event(
                "record_too_new",
                key=key,
                version=version,
                reads=SCHEMA_VERSION,
                action="left alone",
            )

    def decode(self, kind: str, rel: str, value: bytes, revision: int = 0) -> Any:
        """The record stored at P/<kind>/<rel>; raises MalformedRecord.

        unit: UnitRecord, machines: MachineRecord, metadata: an overlay (dict), schedule
        ("machine/unit") and global: ScheduleEntry, state ("machine/unit"): UnitState,
        reason and content: str, deploy: DeploymentRecord.
        """
        if kind == "unit":
            return UnitRecord.from_json(rel, value, revision)
        if kind == "machines":
            return MachineRecord.from_json(rel, value)
        if kind == "metadata":
            return overlay_from_json(rel, value)
        if kind == "schedule":
            machine, _, unit = rel.partition("/")
            _machine_id(machine)
            return ScheduleEntry.from_json(unit, value)
        if kind == "global":
            return ScheduleEntry.from_json(rel, value)
        if kind == "state":
            machine, _, unit = rel.partition("/")
            return UnitState.from_json(unit, machine, value)
        if kind == "reason":
            _unit_name(rel)
            return _text(value)
        if kind == "content":
            _content_hash(rel)
            return _text(value)
        if kind == "deploy":
            return DeploymentRecord.from_json(rel, value, revision)
        return _text(value)

    def _decoded(
        self, kind: str, start: str, key: bytes, value: bytes, revision: int = 0
    ) -> tuple[str, Any] | None:
        """(key relative to P/<kind>/, record), or None after warning about a bad one
        (or one too new to read: where that must not read as absent, _found)."""
        item = self._found(kind, start, key, value, revision)
        return None if item is None or isinstance(item[1], Newer) else item

    def _found(
        self, kind: str, start: str, key: bytes, value: bytes, revision: int = 0
    ) -> tuple[str, Any] | None:
        """_decoded, but a record too new to read is (rel, Newer(version)), said once."""
        full = key.decode("utf-8", "replace")
        try:
            rel = _text(key)[len(start) :]
        except MalformedRecord as exc:
            self._skip(full, str(exc))
            return None
        try:
            return rel, self.decode(kind, rel, value, revision)
        except RecordTooNew as exc:
            self._left_alone(full, exc.version)
            return rel, Newer(exc.version)
        except MalformedRecord as exc:
            self._skip(full, str(exc))
            return None

    def _read_kind(self, kind: str) -> list[tuple[str, Any]]:
        start = self._prefix(kind)
        found = []
        for value, meta in self._range(start):
            item = self._decoded(kind, start, meta.key, value, meta.mod_revision)
            if item is not None:
                found.append(item)
        return found

    # -- raw reads

    def _range(self, prefix: str, keys_only: bool = False) -> list[tuple[bytes, KeyValue]]:
        result = self._etcd.range(prefix, prefix_range_end(prefix), keys_only=keys_only)
        return [(kv.value, kv) for kv in result.kvs]

    def _get(self, key: str) -> KeyValue | None:
        kvs = self._etcd.range(key).kvs
        return kvs[0] if kvs else None

    def read_view(self, *, with_states: bool = True, with_text: bool = True) -> ClusterView:
        """Read units, machines, schedule, reasons (and states) at ONE revision."""
        prefixes = ["unit", "machines", "metadata", "schedule", "reason"]
        prefixes += ["state"] if with_states else []
        gets = []
        for name in prefixes:
            start = self._prefix(name)
            gets.append(self.txn.get(start, prefix_range_end(start)))
        _, responses, revision = self._txn([], gets)
        units: dict[str, UnitRecord] = {}
        machines: dict[str, MachineRecord] = {}
        overlays: dict[str, Overlay] = {}
        schedule: dict[str, tuple[str, ScheduleEntry]] = {}
        reasons: dict[str, str] = {}
        states: dict[str, dict[str, UnitState]] = {}
        newer: dict[str, dict[str, str]] = {"unit": {}, "schedule": {}, "machines": {}}
        newer["metadata"] = newer["machines"]  # a machine the engine must leave as it is
        for name, kvs in zip(prefixes, responses):
            start = self._prefix(name)
            for value, meta in kvs:
                item = self._found(name, start, meta.key, value, meta.mod_revision)
                if item is None:
                    continue
                rel, record = item
                if isinstance(record, Newer):
                    if name in newer:
                        machine, _, unit = rel.rpartition("/")
                        newer[name][unit] = machine
                    continue
                if name == "unit":
                    units[rel] = record
                elif name == "machines":
                    machines[rel] = record
                elif name == "metadata":
                    overlays[rel] = record
                elif name == "schedule":
                    entry = record if with_text else replace(record, text="")
                    schedule[entry.name] = (rel.partition("/")[0], entry)
                elif name == "reason":
                    reasons[rel] = record
                else:
                    states.setdefault(record.name, {})[record.machine] = record
        machines = with_overlays(machines, overlays)
        return ClusterView(
            revision,
            units,
            machines,
            schedule,
            reasons,
            states,
            overlays,
            frozenset(newer["unit"]),
            newer["schedule"],
            frozenset(newer["machines"]),
        )

    def _txn(
        self, compare: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> tuple[bool, list[Any], int]:
        """A transaction: (succeeded, responses, etcd's revision after it). A range
        response is a list of (value, KeyValue); the revision lets watches resume exactly
        where a read left off."""
        result = self._etcd.txn(compare, success, failure)
        responses: list[Any] = [
            [(kv.value, kv) for kv in item.kvs] if isinstance(item, RangeResult) else item
            for item in result.responses
        ]
        return result.succeeded, responses, result.revision

    # -- layout: one fleetpy prefix never lies inside another

    def _ancestors(self) -> list[str]:
        """'/a/b' -> ['/a', ''] (the root prefix last)."""
        return ancestors(self.prefix)

    def _layout_gets(self) -> list[Any]:
        keys = [self.key(LAYOUT_KEY), *ancestor_markers(self.prefix)]
        return [self.txn.get(key) for key in keys]

    def _check_layout(self, responses: Sequence[Any]) -> None:
        own, *ancestors = responses
        for ancestor, kvs in zip(self._ancestors(), ancestors):
            if kvs:
                raise PrefixError(
                    f"etcd prefix {self.prefix} lies inside the fleetpy prefix {ancestor or '/'}; "
                    "use a prefix outside it (each would read the other's keys as its own)"
                )
        if not own:
            # First use of this prefix: it must not hold another fleetpy prefix either.
            start = self.prefix + "/"
            for _, meta in self._range(start, keys_only=True):
                key = meta.key.decode("utf-8", "replace")
                if key.endswith("/" + LAYOUT_KEY) and key != self.key(LAYOUT_KEY):
                    nested = key[: -len(LAYOUT_KEY) - 1]
                    raise PrefixError(
                        f"etcd prefix {self.prefix or '/'} holds the fleetpy prefix {nested}; "
                        "use a prefix outside it (each would read the other's keys as its own)"
                    )
            self._layout_unmarked = True
        self._layout_checked = True

    def wait_for_layout(self, stop: threading.Event | None = None, mark: bool = True) -> None:
        """ensure_layout for a daemon starting while etcd may still be away: retry until
        etcd answers; a nested prefix (PrefixError) is fatal."""
        while True:
            try:
                self.ensure_layout(mark)
                return
            except PrefixError:
                raise
            except RegistryError as exc:
                log_event("etcd_unreachable", error=str(exc), retry_in="1s")
                if stop is not None and stop.wait(1.0):
                    return
                if stop is None:
                    time.sleep(1.0)

    def ensure_layout(self, mark: bool = True) -> None:
        """Refuse a nested prefix, and mark ours (daemons call this once at start).
        Agents do not mark (MARK false): a prefix without its marker is one whose data
        etcd lost, and an agent must not make it look like an empty cluster."""
        if self._layout_checked and not self._layout_unmarked:
            return
        if not self._layout_checked:
            _, responses, _ = self._txn([], self._layout_gets())
            self._check_layout(responses)
        if self._layout_unmarked and mark:
            key = self.key(LAYOUT_KEY)
            self._txn([self.txn.version(key, 0)], [self.txn.put(key, LAYOUT_VALUE)])
            self._layout_unmarked = False

    # -- units (clients)

    # -- backup and restore of the desired state (fleetpy.backup has the file format)

    def read_desired(self) -> tuple[int, dict[str, str]]:
        """Every key of DESIRED_KINDS at one revision: (revision, {"kind/rel": value})."""
        starts = [self._prefix(kind) for kind in DESIRED_KINDS]
        _, responses, revision = self._txn(
            [], [self.txn.get(s, prefix_range_end(s)) for s in starts]
        )
        found: dict[str, str] = {}
        for kind, start, kvs in zip(DESIRED_KINDS, starts, responses):
            for value, meta in kvs:
                found[f"{kind}/{self._strip(start, meta.key)}"] = _text(value)
        return revision, found

    def restore_desired(self, keys: Mapping[str, str]) -> int:
        """Write a backup's KEYS ("kind/rel": value) into this prefix; returns how many
        were written. Every record is checked first, and a prefix holding other desired
        state is refused: nothing is written then. Keys already there with the same
        value are skipped, so a restore that was interrupted is finished by running it
        again. Several transactions when it is large, contents first, units last."""
        for rel_key, value in keys.items():
            kind, _, rel = rel_key.partition("/")
            if kind not in DESIRED_KINDS:
                raise RegistryError(f"backup key {rel_key}: not desired state")
            try:
                self.decode(kind, rel, value.encode())
            except MalformedRecord as exc:
                raise RegistryError(f"backup key {rel_key}: {exc}") from None
        _, present = self.read_desired()
        other = sorted(k for k, v in present.items() if keys.get(k) != v)
        if other:
            raise RegistryError(
                f"prefix {self.prefix or '/'} already holds other desired state ({len(other)} "
                f"keys, e.g. {other[0]}): restore into an empty prefix or etcd"
            )
        todo = sorted(
            (k for k in keys if k not in present),
            key=lambda k: (DESIRED_KINDS.index(k.partition("/")[0]), k),
        )
        if todo:
            self.ensure_layout()  # a restored prefix is marked before its first key
            # Before the first unit: the engine places each restored unit where an agent
            # reports it still running, instead of anywhere (where it would restart).
            try:
                self._etcd.put(self.key("engine", ADOPT), str(len(todo)))
            except EtcdPermissionDenied:
                self._warn(
                    "this etcd user may not ask the engine to adopt running units (a role "
                    "from before restore asked; `fleetpy cluster up --secure` renews roles): "
                    "restored units are placed anew, and may restart elsewhere"
                )
        for chunk in _sized_chunks(todo, MAX_TXN_OPS, lambda k: len(k) + len(keys[k])):
            full = [self.key(k) for k in chunk]
            ops = [self.txn.put(f, keys[k]) for f, k in zip(full, chunk)]
            succeeded, _, _ = self._txn([self.txn.version(f, 0) for f in full], ops)
            if not succeeded:
                raise RegistryError(
                    f"prefix {self.prefix or '/'} was written to while restoring; run restore again"
                )
        if todo:
            log_event("desired_state_restored", prefix=self.prefix, keys=len(todo))
        return len(todo)

    def layout_present(self, revision: int = 0) -> bool:
        """Whether the prefix holds fleetpy's marker (at REVISION, if etcd still has it):
        written with the first unit, gone only when etcd lost fleetpy's data (wiped,
        restored from before, a new etcd)."""
        try:
            kvs = self._etcd.range(self.key(LAYOUT_KEY), revision=revision).kvs
        except EtcdCompacted:
            kvs = self._etcd.range(self.key(LAYOUT_KEY)).kvs
        return bool(kvs)

    def get_unit(self, name: str) -> UnitRecord | None:
        meta = self._get(self.key("unit", name))
        if meta is None:
            return None
        return self._unit_record(name, meta.key, meta.value, meta.mod_revision)

    def _unit_record(self, name: str, key: bytes, value: bytes, revision: int) -> UnitRecord | None:
        """A unit record a client asked for by name: None if malformed (skipped, as a
        listing would); a newer fleetpy's is an error, never taken for absent or rewritten."""
        try:
            return UnitRecord.from_json(name, value, revision)
        except RecordTooNew as exc:
            raise StateError(
                f"unit {name} was written by a newer fleetpy (record version "
                f"{exc.version}; this one reads up to {SCHEMA_VERSION}): left as it is; "
                "use the newer fleetpy for it"
            ) from None
        except MalformedRecord as exc:
            self._skip(key.decode("utf-8", "replace"), str(exc))
            return None

    def _client_range(self, kind: str) -> list[tuple[bytes, Any]]:
        """A range read by a client about to write: the layout check rides along."""
        start = self._prefix(kind)
        layout = [] if self._layout_checked else self._layout_gets()
        get = self.txn.get(start, prefix_range_end(start))
        _, responses, _ = self._txn([], [get, *layout])
        if layout:
            self._check_layout(responses[1:])
        return list(responses[0])

    def list_units(self) -> dict[str, UnitRecord]:
        start = self._prefix("unit")
        found = {}
        for value, meta in self._client_range("unit"):
            item = self._decoded("unit", start, meta.key, value, meta.mod_revision)
            if item is not None:
                found[item[0]] = item[1]
        return found

    def unit_keys(self) -> list[str]:
        """Names of every key under P/unit/, records fleetpy can read or not: what
        destroy selects from, so a malformed record can still be removed."""
        start = self._prefix("unit")
        return [
            meta.key.decode("utf-8", "replace")[len(start) :]
            for _, meta in self._client_range("unit")
        ]

    def get_content(self, content_hash: str) -> str | None:
        meta = self._get(self.key("content", content_hash))
        if meta is None:
            return None
        item = self._decoded("content", self._prefix("content"), meta.key, meta.value)
        return None if item is None else item[1]

    def get_contents(self, hashes: Sequence[str]) -> dict[str, str]:
        """Many content blobs, MAX_TXN_OPS per request."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(hashes), MAX_TXN_OPS):
            _, responses, _ = self._txn([], [self.txn.get(self.key("content", h)) for h in chunk])
            start = self._prefix("content")
            for kvs in responses:
                for value, meta in kvs:
                    item = self._decoded("content", start, meta.key, value)
                    if item is not None:
                        found[item[0]] = item[1]
        return found

    def get_units(self, names: Sequence[str]) -> dict[str, UnitRecord | None]:
        """The named unit records (None where absent), MAX_TXN_OPS per request."""
        found: dict[str, UnitRecord | None] = {}
        for chunk in _chunks(list(dict.fromkeys(names)), MAX_TXN_OPS):
            gets = [self.txn.get(self.key("unit", n)) for n in chunk]
            # Clients read before they write: check the layout in the same request.
            layout = [] if self._layout_checked else self._layout_gets()
            _, responses, _ = self._txn([], gets + layout)
            if layout:
                self._check_layout(responses[len(gets) :])
                responses = responses[: len(gets)]
            for name, kvs in zip(chunk, responses):
                found[name] = None
                for value, meta in kvs:
                    found[name] = self._unit_record(name, meta.key, value, meta.mod_revision)
        return found

    def change_units(
        self,
        changes: Sequence[UnitChange],
        known: Mapping[str, UnitRecord | None] | None = None,
        session: DeploymentSession | None = None,
    ) -> list[UnitRecord]:
        """Submit units and/or set their desired state, all-or-nothing per transaction.

        Each unit's record is guarded by the revision read, so concurrent clients
        never overwrite each other; on a lost race the batch is re-read and retried.
        Submitting different content under an existing name is an error (fleet:
        contents are immutable; destroy first). Batches larger than one etcd
        transaction allows are split into several transactions.

        `known`: records the caller just read (get_units), used for the first attempt
        so a command costs one read and one write; a lost race re-reads.
        """
        results: list[UnitRecord] = []
        for chunk in _unit_chunks(changes):
            first = [known]

            def attempt(
                chunk: Sequence[UnitChange] = chunk,
                first: list[Mapping[str, UnitRecord | None] | None] = first,
            ) -> list[UnitRecord]:
                records, first[0] = first[0], None
                return self._change_chunk(chunk, records, session)

            try:
                results.extend(self._retry(attempt))
            except FleetpyError as exc:
                if not results:
                    raise
                written = [r.name for r in results]
                raise PartialWriteError(
                    _partial_message(
                        written, [c.name for c in changes if c.name not in set(written)], exc
                    )
                ) from None
        return results

    def _retry(self, attempt: Callable[[], T]) -> T:
        for _ in range(_CONFLICT_RETRIES):
            try:
                return attempt()
            except _TxnConflict:
                continue
        raise RegistryError("gave up after repeated conflicting updates from other clients")

    def _change_chunk(
        self,
        chunk: Sequence[UnitChange],
        known: Mapping[str, UnitRecord | None] | None = None,
        session: DeploymentSession | None = None,
    ) -> list[UnitRecord]:
        names = [c.name for c in chunk]
        templates = sorted({c.template for c in chunk if c.template})
        wanted = [*names, *templates]
        if known is None or any(n not in known for n in wanted):
            known = self.get_units(wanted)
        existing = {n: r for n in wanted if (r := known[n]) is not None}

        compares: list[Any] = []
        ops: list[Any] = []
        results: list[UnitRecord] = []
        unchanged: list[UnitRecord] = []
        contents_put: set[str] = set()
        for change in chunk:
            current = existing.get(change.name)
            key = self.key("unit", change.name)
            if current is not None:
                record = current
                if change.hash is not None and change.hash != current.hash:
                    if not change.replace or change.text is None:
                        raise StateError.different_contents(change.name, current.hash, change.hash)
                    if change.is_global != current.is_global:
                        raise StateError.global_changes(change.name, change.is_global)
                    # A new version under the same name: the engine retargets it in place
                    # and the agent stops the old contents and starts the new.
                    record = replace(
                        current, hash=change.hash, origin=change.origin, signature=change.signature
                    )
                    if change.hash not in contents_put:
                        contents_put.add(change.hash)
                        ops.append(self.txn.put(self.key("content", change.hash), change.text))
                elif change.replace and change.origin is not None:
                    record = replace(current, origin=change.origin)
                if change.signature is not None:
                    record = replace(record, signature=change.signature)  # also a re-signing
                compares.append(self.txn.mod(key, current.revision))
            else:
                if change.hash is not None and change.text is not None:
                    record = UnitRecord(
                        change.name,
                        change.hash,
                        DesiredState.INACTIVE,
                        change.is_global,
                        change.owner,
                        change.origin,
                        signature=change.signature,
                    )
                    if change.hash not in contents_put:
                        contents_put.add(change.hash)
                        ops.append(self.txn.put(self.key("content", change.hash), change.text))
                elif change.template and change.template in existing:
                    tmpl = existing[change.template]
                    # Not the template's signature: it covers the template's name only.
                    record = UnitRecord(
                        change.name,
                        tmpl.hash,
                        DesiredState.INACTIVE,
                        tmpl.is_global,
                        change.owner,
                        signature=change.signature,
                    )
                    compares.append(self.txn.mod(self.key("unit", change.template), tmpl.revision))
                else:
                    raise UnknownUnitError.not_submitted(change.name, change.template)
                compares.append(self.txn.version(key, 0))
            if change.desired is not None:
                record = replace(record, desired=change.desired)
            if current is None or record != current:
                ops.append(self.txn.put(key, record.to_json()))
                if record.is_global:
                    ops.append(self._global_put(record, change))
            else:
                unchanged.append(record)
            results.append(record)
        if not ops:
            return results
        marking = self._layout_unmarked
        if marking:
            ops.append(self.txn.put(self.key(LAYOUT_KEY), LAYOUT_VALUE))
        revision = self._guarded(compares, ops, session)
        if marking:
            self._layout_unmarked = False
        # What was written now has this mod_revision (a reader can wait for it to show).
        return [r if r in unchanged else replace(r, revision=revision) for r in results]

    def _guarded(
        self, compares: Sequence[Compare], ops: Sequence[TxnOp], session: DeploymentSession | None
    ) -> int:
        """Run a client transaction; with a session, only while no other apply has
        written the deployment record since this one last did (and bump it). Returns
        etcd's revision after it."""
        if session is not None:
            key = self.key("deploy", session.name)
            record = session.record
            compares = [
                *compares,
                self.txn.mod(key, record.revision) if record.revision else self.txn.version(key, 0),
            ]
            ops = [*ops, self.txn.put(key, record.to_json())]
        ok, _, revision = self._txn(compares, ops)
        if ok:
            if session is not None:
                session.record = replace(session.record, revision=revision)
            return revision
        if session is not None:
            now = self.get_deployment(session.name)
            if (now.revision if now else 0) != session.record.revision:
                running = f" (it applies {now.applying})" if now and now.applying else ""
                raise DeploymentError(
                    f"another apply of deployment {session.name} wrote since this one "
                    f"started{running}; this one stopped here"
                )
        raise _TxnConflict()

    def get_deployment(self, name: str) -> DeploymentRecord | None:
        meta = self._get(self.key("deploy", name))
        if meta is None:
            return None
        try:
            return DeploymentRecord.from_json(name, meta.value, meta.mod_revision)
        except MalformedRecord as exc:
            self._skip(self.key("deploy", name), str(exc))
            return None

    def update_deployment(self, session: DeploymentSession, **fields: str) -> None:
        """Write the deployment record (commit, applying, message), guarded as above."""
        session.record = replace(session.record, **fields)  # type: ignore[arg-type]
        self._retry(lambda: self._guarded([], [], session))

    def campaign_watcher(self, deployment: str, candidate: str, lease_id: int) -> bool:
        """Be the one git watcher of a deployment (create-if-absent under a lease)."""
        key = self.key("watcher", deployment)
        ok, _, _ = self._txn(
            [self.txn.version(key, 0)], [self.txn.put(key, candidate, lease=lease_id)]
        )
        if ok:
            return True
        meta = self._get(key)
        return meta is not None and meta.value.decode("utf-8", "replace") == candidate

    def owned_units(self, owner: str) -> dict[str, UnitRecord]:
        return {name: record for name, record in self.list_units().items() if record.owner == owner}

    def _global_put(self, record: UnitRecord, change: UnitChange) -> Any:
        text = change.text if change.hash == record.hash and change.text is not None else None
        if text is None:
            text = self.get_content(record.hash) or ""
        entry = ScheduleEntry(record.name, record.hash, record.desired, text, record.signature)
        return self.txn.put(self.key("global", record.name), entry.to_json())

    def destroy_units(
        self, names: Sequence[str], session: DeploymentSession | None = None
    ) -> list[str]:
        """Delete unit records (and global entries) in one transaction per chunk.

        The engine then unschedules them and agents stop them; content blobs no unit
        refers to are garbage-collected by the engine.
        """
        if not self._layout_checked:
            _, responses, _ = self._txn([], self._layout_gets())
            self._check_layout(responses)
        destroyed: list[str] = []
        for chunk in _chunks(list(names), MAX_TXN_OPS // 2):
            try:
                destroyed.extend(self._destroy_chunk(chunk, session))
            except FleetpyError as exc:
                if not destroyed:
                    raise
                gone = set(destroyed)
                raise PartialWriteError(
                    _partial_message(
                        destroyed,
                        [n for n in names if n not in gone],
                        exc,
                        "destroyed",
                        "destroyed",
                    )
                ) from None
        return destroyed

    def _destroy_chunk(
        self, chunk: Sequence[str], session: DeploymentSession | None = None
    ) -> list[str]:
        def attempt() -> list[str]:
            gets = [self.txn.get(self.key("unit", n)) for n in chunk]
            _, responses, _ = self._txn([], gets)
            compares, ops, done = [], [], []
            for name, kvs in zip(chunk, responses):
                for _value, meta in kvs:
                    compares.append(self.txn.mod(self.key("unit", name), meta.mod_revision))
                    ops.append(self.txn.delete(self.key("unit", name)))
                    ops.append(self.txn.delete(self.key("global", name)))
                    done.append(name)
            if ops:
                self._guarded(compares, ops, session)
            return done

        return self._retry(attempt)

    def count(self, kind: str) -> int:
        """How many keys P/<kind>/ holds, without transferring them."""
        start = self._prefix(kind)
        return self._etcd.range(start, prefix_range_end(start), count_only=True).count

    def list_content(self) -> dict[str, int]:
        """Content hash -> mod_revision of its blob (keys that are not hashes skipped)."""
        start = self._prefix("content")
        found: dict[str, int] = {}
        for _, meta in self._range(start, keys_only=True):
            rel = self._strip(start, meta.key)
            if _HASH.fullmatch(rel):
                found[rel] = int(meta.mod_revision)
            else:
                self._skip(self._strip("", meta.key), "not a content hash")
        return found

    def delete_content(self, revisions: Mapping[str, int]) -> int:
        """Delete content blobs that nobody re-wrote since they were listed.

        A client submitting the same content re-puts the blob in the same transaction
        as its unit record, which bumps the blob's revision and so protects it here.
        """
        deleted = 0
        for content_hash, revision in revisions.items():
            key = self.key("content", content_hash)
            ok, _, _ = self._txn([self.txn.mod(key, revision)], [self.txn.delete(key)])
            deleted += ok
        return deleted

    # -- access control (as etcd's root user; the roles are access.py's)

    def ensure_access(
        self, machines: Sequence[str] = (), passwords: Mapping[str, str] | None = None
    ) -> list[str]:
        """Make fleetpy's etcd roles for this prefix and these machines' agents, a user
        of the same name holding each, mark the prefix, and turn etcd's auth on.

        Idempotent: run again with more machines to add theirs (once auth is on, as the
        root user: a client certificate with CN root). Each role ends up with exactly
        the grants access.py lists. Users get no password (only a client certificate
        whose CN is their name acts as them) unless `passwords` gives one. Returns what
        it made or changed, for a log.
        """
        for machine in machines:
            if not MACHINE_ID.fullmatch(machine):
                raise RegistryError(f"invalid machine id {machine!r}")
        secrets = dict(passwords or {})
        done: list[str] = []
        if self._etcd.user_add("root", secrets.get("root")):
            done.append("user root")
        self._etcd.user_grant_role("root", "root")
        for role in access.roles(self.prefix, machines):
            if self._etcd.role_add(role.name):
                done.append(f"role {role.name}")
            current = {(p.key, p.range_end): p for p in self._etcd.role_permissions(role.name)}
            wanted = {(p.key, p.range_end): p for p in role.permissions}
            for where, permission in wanted.items():
                if current.get(where) != permission:
                    self._etcd.role_grant(role.name, permission)
                    done.append(f"grant {role.name} {permission.access.value} {where[0]!r}")
            for key, range_end in current.keys() - wanted.keys():
                self._etcd.role_revoke(role.name, key, range_end)
                done.append(f"revoke {role.name} {key!r}")
            if self._etcd.user_add(role.name, secrets.get(role.name)):
                done.append(f"user {role.name}")
            self._etcd.user_grant_role(role.name, role.name)
        # Agents may not mark the prefix (nor scan it for nested ones): do it for them.
        self.ensure_layout()
        self._etcd.auth_enable()
        return done

    # -- machines and states (agents)

    def grant_lease(self, ttl: int) -> int:
        return self._etcd.lease_grant(int(ttl)).id

    def refresh_lease(self, lease_id: int) -> int:
        """Keep a lease alive; returns the remaining TTL (<= 0 if it expired)."""
        return self._etcd.lease_keepalive_once(lease_id)

    def revoke_lease(self, lease_id: int) -> None:
        self._etcd.lease_revoke(lease_id)

    def register_machine(
        self, machine: MachineRecord, lease_id: int, states: Sequence[UnitState] = ()
    ) -> None:
        """Write the machine's record under the agent's lease, unless another agent
        (another instance) holds its id: then MachineIdInUse, and nothing is written.
        STATES (what runs there now) go with the record, in its transaction as far as
        they fit: whoever sees the machine join also sees what it runs (a restore's
        adoption relies on it)."""
        key = self.key("machines", machine.id)
        state_ops = [
            self.txn.put(self.key("state", s.machine, s.name), s.to_json(), lease=lease_id)
            for s in states
        ]
        with_record, rest = state_ops[: MAX_TXN_OPS - 1], state_ops[MAX_TXN_OPS - 1 :]
        for _ in range(_CONFLICT_RETRIES):
            try:
                current = self._etcd.range(key).kvs
            except EtcdPermissionDenied:
                # A role from before agents read their record (cluster up --secure applies
                # the new one): write it as those agents did, unchecked.
                self._etcd.put(key, machine.to_json(), lease=lease_id)
                with_record, rest = [], state_ops
                break
            if current:
                try:
                    holder = MachineRecord.from_json(machine.id, current[0].value)
                except MalformedRecord:
                    holder = None  # unreadable: nobody we could tell apart, take it over
                if holder is not None and holder.instance not in ("", machine.instance):
                    raise MachineIdInUse(holder)
                guard = self.txn.mod(key, current[0].mod_revision)
            else:
                guard = self.txn.version(key, 0)
            put = self.txn.put(key, machine.to_json(), lease_id)
            if self._txn([guard], [put, *with_record])[0]:
                break
        else:
            raise RegistryError(f"machine {machine.id}: its record kept changing while registering")
        for chunk in _chunks(rest, MAX_TXN_OPS):
            self._txn([], chunk)

    def list_machines(self) -> dict[str, MachineRecord]:
        """The registered machines, each with its operators' metadata overlay."""
        gets = [
            self.txn.get(p, prefix_range_end(p))
            for p in map(self._prefix, ("machines", "metadata"))
        ]
        _, responses, _ = self._txn([], gets)
        found: list[dict[str, Any]] = []
        for kind, kvs in zip(("machines", "metadata"), responses):
            start = self._prefix(kind)
            items = (self._decoded(kind, start, meta.key, value) for value, meta in kvs)
            found.append(dict(item for item in items if item is not None))
        return with_overlays(found[0], found[1])

    # -- machine metadata (operators)

    def machine_overlay(self, machine_id: str) -> tuple[int, Overlay]:
        """One machine's operators' overlay and the revision it was read at (its agent
        watches from there)."""
        _, responses, revision = self._txn([], [self.txn.get(self.key("metadata", machine_id))])
        for value, meta in responses[0]:
            item = self._decoded("metadata", self._prefix("metadata"), meta.key, value)
            if item is not None:
                return revision, item[1]
        return revision, {}

    def agent_overlay(self, machine_id: str) -> tuple[int, Overlay] | None:
        """machine_overlay for the machine's own agent; None when its etcd role may not
        read the key (a role made before operators' metadata existed: `ensure_access`
        again grants it), so an upgraded agent keeps running on its own metadata."""
        try:
            return self.machine_overlay(machine_id)
        except EtcdPermissionDenied:
            return None

    def change_metadata(self, changes: Sequence[MetadataChange]) -> int:
        """Apply operators' metadata changes, all in one transaction guarded by the
        overlays it read (a racing change makes it re-read and retry). A machine need not
        be registered: its overlay waits for it. Returns etcd's revision after it."""
        by_machine: dict[str, list[MetadataChange]] = {}
        for change in changes:
            if not MACHINE_ID.fullmatch(change.machine):
                raise MetadataError(f"invalid machine id {change.machine!r}")
            by_machine.setdefault(change.machine, []).append(change)
        if len(by_machine) > MAX_TXN_OPS // 2:
            raise MetadataError(
                f"{len(by_machine)} machines in one change; at most {MAX_TXN_OPS // 2}"
            )
        if not by_machine:
            return 0
        if not self._layout_checked:
            _, responses, _ = self._txn([], self._layout_gets())
            self._check_layout(responses)

        def attempt() -> int:
            keys = {m: self.key("metadata", m) for m in by_machine}
            _, responses, _ = self._txn([], [self.txn.get(k) for k in keys.values()])
            compares: list[Compare] = []
            ops: list[TxnOp] = []
            for (machine, key), kvs in zip(keys.items(), responses):
                current: Overlay = {}
                if kvs:
                    value, meta = kvs[0]
                    compares.append(self.txn.mod(key, meta.mod_revision))
                    try:
                        current = overlay_from_json(machine, value)
                    except MalformedRecord as exc:
                        self._skip(key, str(exc))  # replaced by what the operator says now
                else:
                    compares.append(self.txn.version(key, 0))
                ops.append(
                    self.txn.put(key, overlay_to_json(apply_changes(current, by_machine[machine])))
                )
            marking = self._layout_unmarked
            if marking:  # a first write to this prefix marks it, in the same transaction
                ops.append(self.txn.put(self.key(LAYOUT_KEY), LAYOUT_VALUE))
            ok, _, revision = self._txn(compares, ops)
            if not ok:
                raise _TxnConflict()
            if marking:
                self._layout_unmarked = False
            return revision

        return self._retry(attempt)

    def report_states(
        self, states: Sequence[UnitState], lease_id: int, removed: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Write reported unit states (under the agent's lease) and drop removed ones."""
        ops: list[TxnOp] = [
            self.txn.put(self.key("state", s.machine, s.name), s.to_json(), lease=lease_id)
            for s in states
        ]
        ops += [self.txn.delete(self.key("state", machine, unit)) for unit, machine in removed]
        for chunk in _chunks(ops, MAX_TXN_OPS):
            self._txn([], chunk)

    def list_states(self) -> dict[str, dict[str, UnitState]]:
        states: dict[str, dict[str, UnitState]] = {}
        for _, state in self._read_kind("state"):
            states.setdefault(state.name, {})[state.machine] = state
        return states

    def read_machine_schedule(self, machine_id: str) -> MachineSchedule:
        """An agent's desired units at one revision: (revision, placed, global, newer)."""
        own = self._prefix("schedule", machine_id)
        glob = self._prefix("global")
        gets = [self.txn.get(p, prefix_range_end(p)) for p in (own, glob)]
        _, responses, revision = self._txn([], gets)
        found: list[dict[str, ScheduleEntry]] = [{}, {}]
        newer: set[str] = set()
        for kind, start, kvs, entries in zip(
            ("schedule", "global"), (self._prefix("schedule"), glob), responses, found
        ):
            for value, meta in kvs:
                item = self._found(kind, start, meta.key, value)
                if item is None:
                    continue
                if isinstance(item[1], Newer):
                    newer.add(item[0].rpartition("/")[2])
                else:
                    entries[item[1].name] = item[1]
        return MachineSchedule(revision, found[0], found[1], frozenset(newer))

    # -- engine

    def campaign(self, candidate: str, lease_id: int) -> bool:
        """Become leader if nobody is: create-if-absent under the candidate's lease."""
        key = self.key("engine", "leader")
        ok, _, _ = self._txn(
            [self.txn.version(key, 0)], [self.txn.put(key, candidate, lease=lease_id)]
        )
        return bool(ok)

    def leader(self) -> str | None:
        meta = self._get(self.key("engine", "leader"))
        return None if meta is None else meta.value.decode("utf-8", "replace")

    def read_leader_and_deployments(self) -> tuple[str | None, dict[str, DeploymentRecord], int]:
        """The engine leader and every deployment record at ONE revision (returned, so
        watches resume exactly there): what a dashboard shows beside the ClusterView."""
        leader_key, start = self.key("engine", "leader"), self._prefix("deploy")
        _, (leader, records), revision = self._txn(
            [], [self.txn.get(leader_key), self.txn.get(start, prefix_range_end(start))]
        )
        deployments: dict[str, DeploymentRecord] = {}
        for value, meta in records:
            item = self._decoded("deploy", start, meta.key, value, meta.mod_revision)
            if item is not None:
                deployments[item[0]] = item[1]
        name = leader[0][0].decode("utf-8", "replace") if leader else None
        return name, deployments, revision

    def engine_write(
        self,
        candidate: str,
        groups: Sequence[Sequence[EngineWrite]],
        written: Callable[[int, int], None] = lambda start, end: None,
        before_each: Callable[[], None] = lambda: None,
    ) -> bool:
        """Write the engine's changes while `candidate` leads (every transaction is
        fenced on the leader key: a deposed leader writes nothing).

        Each group is written in one transaction (a move: off one machine, onto another,
        never on both); groups are packed into as few transactions as etcd's limits allow.
        After each, `written(start, end)` gets the range of groups it held. Returns False
        when a transaction was refused because `candidate` no longer leads.
        """
        guard = self.txn.value(self.key("engine", "leader"), candidate)
        ops: list[TxnOp] = []
        size = 0
        first = 0
        for index, group in enumerate(groups):
            group_ops = [self._engine_op(write) for write in group]
            group_size = sum(self.op_size(op) for op in group_ops)
            if ops and (
                len(ops) + len(group_ops) > MAX_TXN_OPS or size + group_size > MAX_TXN_BYTES
            ):
                before_each()
                if not self._txn([guard], ops)[0]:
                    return False
                written(first, index)
                ops, size, first = [], 0, index
            ops.extend(group_ops)
            size += group_size
        if ops:
            before_each()
            if not self._txn([guard], ops)[0]:
                return False
            written(first, len(groups))
        return True

    def _engine_op(self, write: EngineWrite) -> TxnOp:
        if isinstance(write, PlaceUnit):
            return self.txn.put(
                self.key("schedule", write.machine, write.entry.name), write.entry.to_json()
            )
        if isinstance(write, UnplaceUnit):
            return self.txn.delete(self.key("schedule", write.machine, write.unit))
        if isinstance(write, StoreReason):
            if write.reason is None:
                return self.txn.delete(self.key("reason", write.unit))
            return self.txn.put(self.key("reason", write.unit), write.reason)
        if isinstance(write, ClearAdoptionRequest):
            return self.txn.delete(self.key("engine", ADOPT))
        return self.txn.delete(self.key("engine", FORCE_RESCHEDULE))

    def request_force_reschedule(self) -> None:
        self.ensure_layout()
        self._etcd.put(self.key("engine", FORCE_RESCHEDULE), str(int(time.time())))

    def force_reschedule_requested(self) -> bool:
        return self._get(self.key("engine", FORCE_RESCHEDULE)) is not None

    def adoption_requested(self) -> bool:
        return self._get(self.key("engine", ADOPT)) is not None

    def running_units(self) -> dict[str, tuple[str, str]]:
        """unit -> (machine, content hash) of the units agents report running (active,
        activating or reloading) on one machine; a unit reported running on several is
        left out (nothing to prefer)."""
        found: dict[str, tuple[str, str]] = {}
        for name, by_machine in self.list_states().items():
            running = [s for s in by_machine.values() if s.active in RUNNING_STATES]
            if len(running) == 1:
                found[name] = (running[0].machine, running[0].hash)
        return found

    @staticmethod
    def op_size(op: TxnOp) -> int:
        """Bytes an operation adds to a transaction (its key and value), roughly."""
        return len(op.key) + (len(op.value) if isinstance(op, PutOp) else 0) + 16

    # -- watches: typed events; the key layout stays in here

    def _watch(
        self,
        kind: str,
        event: Callable[[str, Any], E | None],
        callback: Callable[[WatchBatch[E]], None],
        start_revision: int | None,
        sub: str | None = None,
        exact: bool = False,
    ) -> Callable[[], None]:
        """Watch P/<kind>/[<sub>/], or with `exact` the one key P/<kind>/<sub> (a
        client allowed that key only may not watch a range): `event(relative key, record
        or None)` makes each typed event (None: not ours, skip). An error batch (etcd gone,
        revision compacted) ends the watch and tells the caller to resync."""
        start = self._prefix(kind, sub) if sub else self._prefix(kind)
        kind_start = self._prefix(kind)
        range_end: bytes | None = prefix_range_end(start)
        if exact and sub:
            start, range_end = self.key(kind, sub), None

        def on_response(response: WatchResponse | WatchEnded) -> None:
            if isinstance(response, WatchEnded):
                callback(WatchBatch((), 0, error=response.error, compacted=response.compacted))
                return
            events: list[E] = []
            for change in response.events:
                rel = change.key.decode("utf-8", "replace")[len(kind_start) :]
                record = None
                if change.kind is EventKind.PUT:
                    item = self._found(
                        kind, kind_start, change.key, change.value, change.mod_revision
                    )
                    record = None if item is None else item[1]
                if isinstance(record, Newer):
                    made = event(rel, None)
                    if made is not None and hasattr(made, "newer"):
                        events.append(replace(made, newer=record.version))  # type: ignore[type-var]
                    continue
                made = event(rel, record)
                if made is not None:
                    events.append(made)
            callback(WatchBatch(tuple(events), response.revision))

        return self._etcd.watch(start, range_end, start_revision, on_response)

    def watch_units(
        self, callback: Callable[[WatchBatch[UnitEvent]], None], start_revision: int | None = None
    ) -> Callable[[], None]:
        return self._watch(
            "unit", lambda rel, record: UnitEvent(rel, record), callback, start_revision
        )

    def watch_machines(
        self,
        callback: Callable[[WatchBatch[MachineEvent]], None],
        start_revision: int | None = None,
        machine: str | None = None,
    ) -> Callable[[], None]:
        """Every machine's record, or with MACHINE only that one (an agent's own; an
        agent whose etcd role predates reading it gets no such watch, said once)."""
        try:
            return self._watch(
                "machines",
                lambda rel, record: MachineEvent(rel, record),
                callback,
                start_revision,
                sub=machine,
                exact=machine is not None,
            )
        except EtcdPermissionDenied as exc:
            if machine is None:
                raise
            log_event("machine_watch_refused", machine=machine, error=str(exc))
            return lambda: None

    def watch_metadata(
        self,
        callback: Callable[[WatchBatch[MetadataEvent]], None],
        start_revision: int | None = None,
        machine: str | None = None,
    ) -> Callable[[], None]:
        """Operators' metadata overlays: every machine's, or only `machine`'s (its agent
        may read that one key and nothing else of P/metadata)."""
        return self._watch(
            "metadata",
            lambda rel, overlay: MetadataEvent(rel, overlay),
            callback,
            start_revision,
            machine,
            exact=True,
        )

    def watch_contents(
        self,
        callback: Callable[[WatchBatch[ContentEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        return self._watch(
            "content", lambda rel, text: ContentEvent(rel, text), callback, start_revision
        )

    def watch_schedule(
        self,
        callback: Callable[[WatchBatch[ScheduleEvent]], None],
        start_revision: int | None = None,
        machine: str | None = None,
    ) -> Callable[[], None]:
        """Every machine's schedule, or only `machine`'s (an agent wakes only for its own)."""

        def event(rel: str, entry: ScheduleEntry | None) -> ScheduleEvent:
            owner, _, unit = rel.partition("/")
            return ScheduleEvent(owner, unit, entry)

        return self._watch("schedule", event, callback, start_revision, machine)

    def watch_globals(
        self,
        callback: Callable[[WatchBatch[ScheduleEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        return self._watch(
            "global", lambda rel, entry: ScheduleEvent("", rel, entry), callback, start_revision
        )

    def watch_reasons(
        self,
        callback: Callable[[WatchBatch[ReasonEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        """Why the engine could not place units (what list-unit-files and the API show)."""
        return self._watch(
            "reason", lambda rel, text: ReasonEvent(rel, text), callback, start_revision
        )

    def watch_states(
        self, callback: Callable[[WatchBatch[StateEvent]], None], start_revision: int | None = None
    ) -> Callable[[], None]:
        def event(rel: str, state: UnitState | None) -> StateEvent:
            machine, _, unit = rel.partition("/")
            return StateEvent(unit, machine, state)

        return self._watch("state", event, callback, start_revision)

    def watch_deployments(
        self,
        callback: Callable[[WatchBatch[DeploymentEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        """What `fleetpy apply` records of each deployment (commit, applying, message)."""
        return self._watch(
            "deploy", lambda rel, record: DeploymentEvent(rel, record), callback, start_revision
        )

    def watch_engine(
        self, callback: Callable[[WatchBatch[EngineEvent]], None], start_revision: int | None = None
    ) -> Callable[[], None]:
        """The leader key and operators' requests to the engine."""

        def event(rel: str, value: str | None) -> EngineEvent | None:
            if rel == "leader":
                return EngineEvent(leader=value, leader_changed=True)
            if rel == FORCE_RESCHEDULE:
                return EngineEvent(force_reschedule=value is not None)
            if rel == ADOPT:
                return EngineEvent(adopt=value is not None)
            return None

        return self._watch("engine", event, callback, start_revision)


def with_overlays(
    machines: Mapping[str, MachineRecord], overlays: Mapping[str, Overlay]
) -> dict[str, MachineRecord]:
    """Machine records with their operators' overlays attached."""
    return {
        machine: replace(record, operator_metadata=overlays[machine])
        if machine in overlays
        else record
        for machine, record in machines.items()
    }


@dataclass(frozen=True)
class ReclaimReport:
    revision: int  # history before it is gone
    sizes: tuple[tuple[str, int, int], ...]  # member URL, database bytes before, after
    disarmed: tuple[Alarm, ...]
    unreachable: tuple[str, ...]  # members left as they were: URL (reason)


class _Ops:
    """Builders of transaction guards and operations (keys and values as text)."""

    @staticmethod
    def get(key: str, range_end: bytes | None = None) -> GetOp:
        return GetOp(key.encode(), range_end)

    @staticmethod
    def put(key: str, value: str, lease: int = 0) -> PutOp:
        return PutOp(key.encode(), value.encode(), lease)

    @staticmethod
    def delete(key: str) -> DeleteOp:
        return DeleteOp(key.encode())

    @staticmethod
    def mod(key: str, revision: int) -> Compare:
        return Compare.mod(key, revision)

    @staticmethod
    def version(key: str, version: int) -> Compare:
        return Compare.version(key, version)

    @staticmethod
    def value(key: str, value: str) -> Compare:
        return Compare.value_is(key, value)


__all__ = [
    "DESIRED_KINDS",
    "SCHEMA_VERSION",
    "VERSION_FIELD",
    "Alarm",
    "ClearForceReschedule",
    "ClusterView",
    "ContentEvent",
    "DeploymentEvent",
    "DeploymentRecord",
    "EndpointStats",
    "EngineEvent",
    "EngineWrite",
    "MachineEvent",
    "MachineIdInUse",
    "MachineRecord",
    "MachineSchedule",
    "MalformedRecord",
    "MemberStatus",
    "MetadataEvent",
    "Newer",
    "PlaceUnit",
    "PrefixError",
    "ReasonEvent",
    "ReclaimReport",
    "RecordTooNew",
    "Registry",
    "RegistryConfig",
    "ScheduleEntry",
    "ScheduleEvent",
    "StateEvent",
    "StoreReason",
    "UnitChange",
    "UnitEvent",
    "UnitRecord",
    "UnitState",
    "UnplaceUnit",
    "WatchBatch",
    "normalize_prefix",
    "with_overlays",
]
