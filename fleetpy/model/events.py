"""Watch events: one typed record per change of the store, in batches of one watch
response each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from ..metadata import Overlay
from .records import DeploymentRecord, MachineRecord, ScheduleEntry, UnitRecord, UnitState

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
