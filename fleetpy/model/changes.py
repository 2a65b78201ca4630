"""Writes as data: what a client asks for a unit (UnitChange) and what the engine writes
(placements, reasons, clearing an operator's request); the registry turns them into
guarded transactions."""

from __future__ import annotations

from dataclasses import dataclass

from ..states import DesiredState
from .records import ScheduleEntry


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


@dataclass(frozen=True)
class ForgetFailure:
    """Delete a unit's failure record on a machine (its backoff ended, or the unit went)."""

    machine: str
    unit: str


EngineWrite = (
    PlaceUnit
    | UnplaceUnit
    | StoreReason
    | ClearForceReschedule
    | ClearAdoptionRequest
    | ForgetFailure
)


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
    # A global unit's new version rolled out machine by machine (fleetpy.model.global_rolls):
    # the machines that keep the version it replaces until the roll moves them. None:
    # every machine switches at once.
    rolling: frozenset[str] | None = None
