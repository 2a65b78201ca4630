"""A unit's repeated failure on one machine (P/failure/<machine>/<unit>), as its agent
reports it once the unit's RescheduleOnFailure= threshold is crossed within its window,
and the watch event of one."""

from __future__ import annotations

from dataclasses import dataclass

from .codecs import (
    MalformedRecord,
    check_machine_id,
    check_unit_name,
    read_record,
    typed_field,
    versioned_json,
)


@dataclass(frozen=True)
class FailureRecord:
    """UNIT failed FAILURES times within WINDOW seconds on MACHINE (its agent's clock);
    CAUSE: the last failure as systemd (or a health check) said it, for people."""

    unit: str
    machine: str
    failures: int
    window: float
    cause: str = ""
    hash: str = ""  # the contents that failed

    def to_json(self) -> str:
        return versioned_json(
            {
                "failures": self.failures,
                "window": self.window,
                "cause": self.cause,
                "hash": self.hash,
            }
        )

    @classmethod
    def from_json(cls, machine: str, unit: str, raw: bytes) -> FailureRecord:
        data = read_record(raw)
        failures = typed_field(data, "failures", int)
        window = typed_field(data, "window", (int, float))
        if isinstance(failures, bool) or failures < 1 or isinstance(window, bool) or window < 0:
            raise MalformedRecord("field 'failures' or 'window' out of range")
        return cls(
            unit=check_unit_name(unit),
            machine=check_machine_id(machine),
            failures=failures,
            window=float(window),
            cause=typed_field(data, "cause", str, ""),
            hash=typed_field(data, "hash", str, ""),
        )


@dataclass(frozen=True)
class FailureEvent:
    """A failure record written (record) or deleted (None) on MACHINE for UNIT."""

    machine: str
    unit: str
    record: FailureRecord | None
