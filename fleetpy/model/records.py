"""fleetpy's records: what the store holds (units, deployments, schedule entries, machines,
unit states), what a client asks of it (UnitChange) and what readers see of it at one
revision (ClusterView, MachineSchedule). Each record has its JSON codec (fleetpy.model.codecs
has the checks and schema versions)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from ..metadata import Overlay, effective
from ..resources import Resources
from ..states import DesiredState
from .codecs import (
    MalformedRecord,
    check_content_hash,
    check_machine_id,
    check_unit_name,
    parse_desired,
    read_record,
    typed_field,
    versioned_json,
)
from .cordons import CordonRecord
from .global_rolls import GlobalRoll


@dataclass(frozen=True)
class UnitRecord:
    name: str
    hash: str
    desired: DesiredState
    is_global: bool = False
    owner: str | None = None  # the deployment that created it (`fleetpy apply`), if any
    origin: str | None = None  # the git commit or content digest it was applied from
    revision: int = 0  # etcd mod_revision of the record, 0 if not stored
    # ed25519 signature of (name, hash) (fleetpy.unitfile.signing's text form); None: unsigned.
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
        return versioned_json(data)

    @classmethod
    def from_json(cls, name: str, raw: bytes, revision: int = 0) -> UnitRecord:
        data = read_record(raw)
        return cls(
            name=check_unit_name(name),
            hash=check_content_hash(data.get("hash")),
            desired=parse_desired(data.get("desired")),
            is_global=typed_field(data, "global", bool, False),
            owner=typed_field(data, "owner", str, None),
            origin=typed_field(data, "origin", str, None),
            revision=revision,
            signature=typed_field(data, "signature", str, None),
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
        return versioned_json(
            {"commit": self.commit, "applying": self.applying, "message": self.message}
        )

    @classmethod
    def from_json(cls, name: str, raw: bytes, revision: int = 0) -> DeploymentRecord:
        data = read_record(raw)
        return cls(
            name,
            typed_field(data, "commit", str, ""),
            typed_field(data, "applying", str, ""),
            typed_field(data, "message", str, ""),
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
    roll: GlobalRoll | None = None  # a global unit's rolling update in progress

    def to_json(self) -> str:
        data: dict[str, Any] = {"hash": self.hash, "desired": self.desired, "text": self.text}
        if self.signature is not None:
            data["signature"] = self.signature
        if self.roll is not None:
            data["roll"] = self.roll.to_data()
        return versioned_json(data)

    def for_machine(self, machine: str) -> ScheduleEntry:
        """What MACHINE runs of this global entry: the previous version until the roll
        moves it, stopped while a rolling restart holds it there, else the entry."""
        roll = self.roll
        if roll is None:
            return self
        entry = replace(self, roll=None)
        if roll.previous is not None and machine in roll.waiting:
            old = roll.previous
            entry = replace(entry, hash=old.hash, text=old.text, signature=old.signature)
        if machine in roll.stopped and entry.desired is DesiredState.LAUNCHED:
            entry = replace(entry, desired=DesiredState.LOADED)
        return entry

    @classmethod
    def from_json(cls, name: str, raw: bytes) -> ScheduleEntry:
        data = read_record(raw)
        return cls(
            name=check_unit_name(name),
            hash=check_content_hash(data.get("hash")),
            desired=parse_desired(data.get("desired")),
            text=typed_field(data, "text", str),
            signature=typed_field(data, "signature", str, None),
            roll=None if data.get("roll") is None else GlobalRoll.from_data(data["roll"]),
        )


def entries_for(entries: Mapping[str, ScheduleEntry], machine: str) -> dict[str, ScheduleEntry]:
    """Global ENTRIES as MACHINE runs them mid-roll (ScheduleEntry.for_machine)."""
    return {name: entry.for_machine(machine) for name, entry in entries.items()}


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
    # CPUs and memory of the machine, and what its fleetpy units use of them as systemd
    # accounts it (fleetpy.capacity): None from agents before resource reports.
    capacity: Resources | None = None
    used: Resources | None = None
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
        data: dict[str, Any] = {
            "ip": self.ip,
            "metadata": dict(self.own_metadata),
            "hostname": self.hostname,
            "ttl": self.ttl,
            "instance": self.instance,
        }
        if self.capacity is not None:  # records without it stay as they were
            data["capacity"] = self.capacity.to_data()
        if self.used is not None:
            data["used"] = self.used.to_data()
        return versioned_json(data)

    @classmethod
    def from_json(cls, machine_id: str, raw: bytes) -> MachineRecord:
        data = read_record(raw)
        metadata = typed_field(data, "metadata", dict, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise MalformedRecord("field 'metadata' is not a mapping of strings")
        ttl = typed_field(data, "ttl", int, 0)
        if isinstance(ttl, bool) or not 0 <= ttl <= 86400:
            raise MalformedRecord("field 'ttl' is out of range")
        ip = typed_field(data, "ip", str, "")
        if ip:
            # `status` and `ssh` give it to ssh, whose ProxyCommand runs in a shell: only
            # what agents write (an IP address, as --public-ip requires) is accepted.
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise MalformedRecord("field 'ip' is not an IP address") from None
        return cls(
            id=check_machine_id(machine_id),
            ip=ip,
            own_metadata=dict(metadata),
            hostname=typed_field(data, "hostname", str, ""),
            ttl=ttl,
            instance=typed_field(data, "instance", str, ""),
            capacity=_resources(data, "capacity"),
            used=_resources(data, "used"),
        )


def _resources(data: Mapping[str, Any], name: str) -> Resources | None:
    value = data.get(name)
    if value is None:
        return None
    try:
        return Resources.from_data(value)
    except ValueError as exc:
        raise MalformedRecord(f"field {name!r}: {exc}") from None


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
    health: str = ""  # a container's health (fleetpy.health.Health); "" without a check

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
        if self.health:  # likewise
            data["health"] = self.health
        return versioned_json(data)

    @classmethod
    def from_json(cls, name: str, machine: str, raw: bytes) -> UnitState:
        data = read_record(raw)
        return cls(
            name=check_unit_name(name),
            machine=check_machine_id(machine),
            load=typed_field(data, "load", str, ""),
            active=typed_field(data, "active", str, ""),
            sub=typed_field(data, "sub", str, ""),
            hash=typed_field(data, "hash", str, ""),
            message=typed_field(data, "message", str, ""),
            job=typed_field(data, "job", str, ""),
            health=typed_field(data, "health", str, ""),
        )


# Reads the states of the given (machine, unit) pairs (the registry's unit_states): the
# engine's looks at the few units it waits for (drains' moved units, dependencies).
ReadStates = Callable[[Iterable[tuple[str, str]]], Mapping[tuple[str, str], UnitState]]


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
    # Operators' cordons by machine id (fleetpy.model.cordons), also of machines away.
    cordons: dict[str, CordonRecord] = field(default_factory=dict)


# Watch events: one typed record per change. A value that is not a fleetpy record


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
