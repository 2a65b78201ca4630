"""Cordons, drains and maintenance windows: what the engine makes of operators' cordon
records (P/cordon/<machine>, fleetpy.model.cordons).

- A cordoned machine keeps what runs there and takes no new unit (scheduler.Machine).
- A draining machine's units are moved elsewhere by the engine, a few at a time: at most
  `max_unavailable` moved units not yet active where they went. Each pass, `plan_drain`
  picks the next units to evict; the scheduler places them (every constraint holds, a
  MachineOf= dependent follows its unit), or leaves one that can go nowhere, saying why.
  A moved unit's reason says it is on its way (`moved_off`) until its agent reports it
  active: that stored reason is the drain's only progress, so a new leader (an engine
  failover), a second `fleetpy drain` and a killed one all resume from etcd alone.
- A machine in a maintenance window that stops reporting is held: its units stay there
  until the window ends (a reboot moves nothing), then it is judged as any missing
  machine. The window is the cordon record's etcd lease: it ends when etcd drops the
  record, so no wall clock of any machine decides it.

`plan_drain` is pure; `Drains` keeps the records the engine watches.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from .model.cordons import CordonEvent, CordonMode, CordonRecord
from .model.records import ReadStates, UnitState
from .states import ActiveState, DesiredState, LoadState
from .unitfile.unit import FleetOptions

MOVED_OFF = "moved off draining machine "
CANNOT_LEAVE = "cannot leave draining machine "
EVERY_MACHINE_CORDONED = "every live machine is cordoned"
_MOVED_OFF = re.compile(re.escape(MOVED_OFF) + r"(\S+) to (\S+);")
# How often the engine reads the states of moved units while they are on their way.
POLL_SECONDS = 1.0


def moved_off(machine: str, destination: str) -> str:
    return f"{MOVED_OFF}{machine} to {destination}; not active there yet"


def cannot_leave(machine: str, why: str) -> str:
    return f"{CANNOT_LEAVE}{machine}: {why}"


def moving(reason: str | None) -> tuple[str, str] | None:
    """(draining machine, destination) of a unit on its way, from its stored reason."""
    found = _MOVED_OFF.match(reason or "")
    return None if found is None else (found[1], found[2])


def arrived(desired: DesiredState, state: UnitState | None) -> bool:
    """Whether a moved unit is where it should be on its new machine."""
    if state is None:
        return False
    if desired is DesiredState.LOADED:
        return state.load == LoadState.LOADED
    return state.active == ActiveState.ACTIVE


@dataclass(frozen=True)
class DrainPlan:
    evict: dict[str, str] = field(default_factory=dict)  # unit -> the machine it leaves now
    notes: dict[str, str] = field(default_factory=dict)  # unit -> reason to keep storing


def plan_drain(
    cordons: Mapping[str, CordonRecord],
    placed: Mapping[str, str],
    machine_of: Mapping[str, tuple[str, ...]],
    reasons: Mapping[str, str],
    alive: Set[str],
    arrived_units: Set[str],
) -> DrainPlan:
    """The units to move off draining machines this pass, and the reasons to keep.

    `placed`: unit -> machine of the units the engine places; `machine_of`: their
    MachineOf= targets; `arrived_units`: units on their way (`moving`) now reported at
    their destination. A machine not reporting is not drained (its units are judged as a
    lost machine's). Units that could not leave are tried after the others."""
    evict: dict[str, str] = {}
    notes: dict[str, str] = {}
    unavailable: dict[str, int] = {}
    for unit, reason in reasons.items():
        way = moving(reason)
        if way is not None and placed.get(unit) == way[1] and unit not in arrived_units:
            notes[unit] = reason
            unavailable[way[0]] = unavailable.get(way[0], 0) + 1
    for machine, record in sorted(cordons.items()):
        if record.mode is not CordonMode.DRAINING or machine not in alive:
            continue
        here = sorted(unit for unit, on in placed.items() if on == machine)
        followers: dict[str, list[str]] = {}
        roots = []
        for unit in here:
            targets = [t for t in machine_of.get(unit, ()) if placed.get(t) == machine]
            if targets:
                followers.setdefault(targets[0], []).append(unit)
            else:
                roots.append(unit)
        stuck = CANNOT_LEAVE + machine + ":"
        roots.sort(key=lambda unit: (reasons.get(unit, "").startswith(stuck), unit))
        room = record.max_unavailable - unavailable.get(machine, 0)
        tried: set[str] = set()
        for unit in roots:
            if room <= 0:
                break
            evict[unit] = machine
            group = _group(unit, followers)
            tried.update(group)
            room -= len(group)
        for unit in here:  # not tried this pass: still cannot leave
            if unit not in tried and reasons.get(unit, "").startswith(stuck):
                notes[unit] = reasons[unit]
    return DrainPlan(evict, notes)


def _group(unit: str, followers: Mapping[str, list[str]]) -> list[str]:
    """A unit and the MachineOf= dependents (and theirs) that move with it."""
    group, todo = [], [unit]
    while todo:
        group.append(todo.pop())
        todo.extend(followers.get(group[-1], ()))
    return group


def maintenance_holds(
    cordons: Mapping[str, CordonRecord], missing: Iterable[str]
) -> dict[str, str]:
    """Machines not reporting within their maintenance window: held, and why."""
    held = {}
    for machine in missing:
        record = cordons.get(machine)
        if record is not None and record.maintenance_until is not None:
            held[machine] = f"in a maintenance window (until {until_text(record)})"
    return held


def until_text(record: CordonRecord) -> str:
    """When a maintenance window ends, as the operator who asked for it was told."""
    assert record.maintenance_until is not None
    return f"{datetime.fromtimestamp(record.maintenance_until, UTC):%Y-%m-%d %H:%M:%S} UTC"


class _Placement(Protocol):  # scheduler.Scheduled (the scheduler imports this module)
    @property
    def machine(self) -> str: ...


class _Spec(Protocol):  # scheduler.UnitSpec
    @property
    def desired(self) -> DesiredState: ...
    @property
    def options(self) -> FleetOptions: ...


class Drains:
    """The cordon records the engine leads with: read at each full read, then watched;
    and when to look at the units on their way again (`poll_at`, monotonic)."""

    def __init__(self) -> None:
        self.records: dict[str, CordonRecord] = {}
        self.poll_at: float | None = None
        self._specs: Mapping[str, _Spec] = {}  # as the last pass had them (held ones loaded)

    def reset(self, records: Mapping[str, CordonRecord]) -> None:
        self.records = dict(records)

    def event(self, event: CordonEvent) -> None:
        if event.record is None:
            self.records.pop(event.machine, None)
        else:
            self.records[event.machine] = event.record

    def draining(self) -> bool:
        return any(r.mode is CordonMode.DRAINING for r in self.records.values())

    @staticmethod
    def next_wake(reasons: Mapping[str, str], plan: DrainPlan | None = None) -> float | None:
        """Seconds until the engine should look again without an event: while moved
        units are on their way (their states are not watched), or about to be (PLAN
        evicts some)."""
        if (plan is not None and plan.evict) or any(moving(r) for r in reasons.values()):
            return POLL_SECONDS
        return None

    def holds(self, schedule: Mapping[str, _Placement], alive: Set[str]) -> dict[str, str]:
        """Machines hosting units, not reporting, within a maintenance window: held, and why."""
        if all(record.maintenance_until is None for record in self.records.values()):
            return {}  # the usual case: no pass over every placement
        hosting = {entry.machine for entry in schedule.values()}
        return maintenance_holds(self.records, hosting - alive)

    def pass_plan(
        self,
        schedule: Mapping[str, _Placement],
        specs: Mapping[str, _Spec],
        reasons: Mapping[str, str],
        alive: Set[str],
        read_states: ReadStates,
    ) -> DrainPlan:
        """The engine's pass: its drain plan (none, and nothing computed, when no machine
        drains and no unit is on its way); the next look set by next_wake."""
        drain = DrainPlan()
        self._specs = specs
        if self.next_wake(reasons) or self.draining():
            drain = self.plan(
                {unit: entry.machine for unit, entry in schedule.items()},
                {unit: spec.desired for unit, spec in specs.items()},
                {unit: spec.options.machine_of for unit, spec in specs.items()},
                reasons,
                alive,
                read_states,
            )
        wake = self.next_wake(reasons, drain)
        self.poll_at = None if wake is None else time.monotonic() + wake
        return drain

    def wait(self, now: float) -> float:
        """Seconds until the next look at the units on their way (inf: none)."""
        return math.inf if self.poll_at is None else max(0.0, self.poll_at - now)

    def changed(self, reasons: Mapping[str, str], read_states: ReadStates) -> bool:
        """When a look is due: whether a unit on its way has arrived, so that a pass
        moves the next. Until one has, a pass would plan what the last one did (every
        other change is an event that makes its own pass): only their states are read,
        again in POLL_SECONDS, not the whole cluster planned once a second."""
        if self.poll_at is None or time.monotonic() < self.poll_at:
            return False
        ways = _ways(reasons)
        desired = {unit: self._specs[unit].desired for unit in ways if unit in self._specs}
        if ways and _arrivals(ways, desired, read_states):
            return True
        self.poll_at = time.monotonic() + POLL_SECONDS if ways else None
        return False

    def plan(
        self,
        placed: Mapping[str, str],
        desired: Mapping[str, DesiredState],
        machine_of: Mapping[str, tuple[str, ...]],
        reasons: Mapping[str, str],
        alive: Set[str],
        read_states: ReadStates,
    ) -> DrainPlan:
        """plan_drain, with the states of the units on their way read (only those)."""
        ways = _ways(reasons)
        if not ways and not self.draining():
            return DrainPlan()
        done = _arrivals(ways, desired, read_states) if ways else set()
        return plan_drain(self.records, placed, machine_of, reasons, alive, done)


def _ways(reasons: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Units on their way: (draining machine, destination), from their stored reasons."""
    return {unit: way for unit, way in ((u, moving(r)) for u, r in reasons.items()) if way}


def _arrivals(
    ways: Mapping[str, tuple[str, str]],
    desired: Mapping[str, DesiredState],
    read_states: ReadStates,
) -> set[str]:
    """Units on their way that their destination reports arrived (only their states read)."""
    states = read_states((to, unit) for unit, (_, to) in ways.items())
    return {
        unit
        for unit, (_, to) in ways.items()
        if unit in desired and arrived(desired[unit], states.get((to, unit)))
    }
