"""Operators' cordons (P/cordon/<machine>): a machine that takes no new units, and may be
drained (its units moved elsewhere a few at a time) or in a maintenance window (its units
held where they are while it reboots). No lease but a maintenance window's: it outlives
agent and etcd restarts, until `fleetpy uncordon` (or the window's end). fleetpy.drain has what the engine makes of it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .codecs import MalformedRecord, check_machine_id, read_record, typed_field, versioned_json


class CordonMode(StrEnum):
    CORDONED = "cordoned"  # no new units; what runs there stays
    DRAINING = "draining"  # cordoned, and its units move elsewhere


@dataclass(frozen=True)
class CordonRecord:
    machine: str
    mode: CordonMode = CordonMode.CORDONED
    max_unavailable: int = 1  # draining: units moved and not yet active where they went
    include_global: bool = False  # draining: its agent stops its global units too
    # A maintenance window: the machine's units stay on it even while it is not
    # reporting (a reboot moves nothing). Such a record lives under an etcd lease of the
    # window's length: the window ends when etcd drops it (etcd's clock, not a machine's).
    # The value is the window's end by the asking machine's clock, for people only.
    maintenance_until: float | None = None
    by: str = ""  # who asked (user@host)
    at: float = 0.0  # when (seconds since the epoch)

    def to_json(self) -> str:
        return versioned_json(
            {
                "mode": self.mode,
                "max_unavailable": self.max_unavailable,
                "include_global": self.include_global,
                "maintenance_until": self.maintenance_until,
                "by": self.by,
                "at": self.at,
            }
        )

    @classmethod
    def from_json(cls, machine: str, raw: bytes) -> CordonRecord:
        data = read_record(raw)
        mode = typed_field(data, "mode", str, CordonMode.CORDONED)
        if mode not in CordonMode.__members__.values():
            raise MalformedRecord(f"unknown cordon mode {mode!r}")
        limit = typed_field(data, "max_unavailable", int, 1)
        if isinstance(limit, bool) or limit < 1:
            raise MalformedRecord("field 'max_unavailable' is not a positive integer")
        until = typed_field(data, "maintenance_until", (int, float), None)
        return cls(
            check_machine_id(machine),
            CordonMode(mode),
            limit,
            typed_field(data, "include_global", bool, False),
            None if until is None else float(until),
            typed_field(data, "by", str, ""),
            float(typed_field(data, "at", (int, float), 0.0)),
        )

    @property
    def in_maintenance(self) -> bool:
        return self.maintenance_until is not None

    @property
    def drains_globals(self) -> bool:
        return self.mode is CordonMode.DRAINING and self.include_global


@dataclass(frozen=True)
class CordonEvent:
    """An operator cordoned a machine, changed its cordon, or uncordoned it (None)."""

    machine: str
    record: CordonRecord | None
