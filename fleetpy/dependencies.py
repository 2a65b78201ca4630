"""Dependencies across machines: `[X-Fleet] Requires=` and `BindsTo=` (fleet's style, the
meaning of systemd's keys of the same names, for units anywhere in the cluster).

- A launched unit with `Requires=db.service` is placed as usual, but held loaded (its
  schedule entry says `loaded`, so its agent does not start it) until db.service is
  active on the machine the engine placed it on; then it is started. Once started it
  stays, whatever db.service does next.
- `BindsTo=db.service` is a Requires= that also holds the unit while db.service is not
  active: its agent stops it when db.service stops or fails (or is destroyed, or its
  machine is judged lost), and starts it again when db.service is active again. Held, it
  keeps its machine. What the engine cannot see (db's machine held through a grace period
  or an etcd outage, db's state not reported again yet) stops nothing.
- A held unit's reason says what it waits for ("waiting for db.service to be active: it
  failed on 3f2a…"), in list-unit-files and the API.

Nothing here opens a connection between agents: the engine reads, from etcd, only the
states of the units that are some launched unit's dependency (never P/state/ as a
whole), at each pass and then every POLL_SECONDS, and plans again only when one of them
changed. `plan_dependencies` is pure; `Dependencies` keeps what the engine read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import replace
from enum import Enum

from .model.records import ReadStates, UnitState
from .scheduler import Machine, Scheduled, UnitSpec
from .states import ActiveState, DesiredState

# How often the engine reads its dependencies' states while some launched unit has one.
POLL_SECONDS = 1.0


def waiting(target: str, why: str) -> str:
    return f"waiting for {target} to be active: {why}"


class Seen(Enum):
    """What the engine can tell of a dependency."""

    ACTIVE = "active"
    DOWN = "down"  # not submitted, not started, not placed, its machine lost, or reported so
    UNKNOWN = "unknown"  # its machine is held (out of touch), or its state not reported yet


def seen(
    target: str,
    specs: Mapping[str, UnitSpec],
    schedule: Mapping[str, Scheduled],
    machines: Mapping[str, Machine],
    states: Mapping[str, UnitState],
    invalid: Mapping[str, str],
) -> tuple[Seen, str]:
    """A dependency as the engine sees it, and why it is not active. INVALID: the units
    submitted whose contents the engine cannot use (unit -> why), which have no spec."""
    spec = specs.get(target)
    if spec is None and target in invalid:
        return Seen.DOWN, f"it is submitted but invalid ({invalid[target]})"
    if spec is None:
        return Seen.DOWN, "no such unit is submitted (destroyed, or not submitted yet)"
    if spec.options.is_global:  # it runs on every machine: none is the one to wait for
        return Seen.DOWN, "it is a global unit; only a unit the engine places can be required"
    if spec.desired is not DesiredState.LAUNCHED:
        return Seen.DOWN, f"it is not started (desired state {spec.desired})"
    entry = schedule.get(target)
    if entry is None:
        return Seen.DOWN, "it is not placed on any machine"
    machine = machines.get(entry.machine)
    if machine is None or machine.held is not None:
        # Held: the engine does not know (an etcd outage looks alike); lost: it moves.
        down = Seen.DOWN if machine is None else Seen.UNKNOWN
        return down, f"its machine {entry.machine} is not reporting"
    state = states.get(target)
    if state is None:  # e.g. its agent registered again after an outage, not reported yet
        return Seen.UNKNOWN, f"it is placed on {entry.machine}, not reported there yet"
    if state.active in (ActiveState.ACTIVE, ActiveState.RELOADING):
        return Seen.ACTIVE, ""
    return Seen.DOWN, f"it is {state.active} ({state.sub}) on {entry.machine}"


def plan_dependencies(
    specs: Mapping[str, UnitSpec],
    schedule: Mapping[str, Scheduled],
    machines: Mapping[str, Machine],
    states: Mapping[str, UnitState],
    invalid: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The launched units held loaded this pass, and why: unit -> reason.

    `states`: dependency -> its state where it is placed (only those read). A unit with
    Requires= is held until every dependency is active on a live machine. Once its
    schedule entry says launched (started), only its BindsTo= dependencies hold it, and
    only when known to be down: a started unit is never stopped for what the engine
    cannot see (a machine out of touch, a state not reported again yet)."""
    held: dict[str, str] = {}
    for name, spec in specs.items():
        options = spec.options
        if not options.requires or spec.desired is not DesiredState.LAUNCHED:
            continue
        entry = schedule.get(name)
        started = entry is not None and entry.desired is DesiredState.LAUNCHED
        for target in options.requires:
            if started and target not in options.binds_to:
                continue
            status, why = seen(target, specs, schedule, machines, states, invalid or {})
            if status is Seen.ACTIVE or (started and status is Seen.UNKNOWN):
                continue
            held[name] = waiting(target, why)
            break
    return held


def targets(specs: Mapping[str, UnitSpec]) -> set[str]:
    """The units some launched unit requires: the only states the engine reads."""
    return {
        target
        for spec in specs.values()
        if spec.options.requires and spec.desired is DesiredState.LAUNCHED
        for target in spec.options.requires
    }


def with_holds(specs: Mapping[str, UnitSpec], held: Mapping[str, str]) -> Mapping[str, UnitSpec]:
    """The specs the scheduler places: a held unit's desired state is loaded."""
    if not held:
        return specs
    out = dict(specs)
    for name in held:
        out[name] = replace(specs[name], desired=DesiredState.LOADED)
    return out


class Dependencies:
    """What the engine last read of its dependencies' states, and when to read again."""

    def __init__(self) -> None:
        self._targets: set[str] = set()
        self._seen: dict[tuple[str, str], str] = {}  # (machine, unit) -> active state read
        self._next: float | None = None

    def _read(
        self, schedule: Mapping[str, Scheduled], read: ReadStates
    ) -> dict[tuple[str, str], UnitState | None]:
        """The states of the placed dependencies, by (machine, unit); None: not reported."""
        pairs = sorted((schedule[t].machine, t) for t in self._targets if t in schedule)
        found = read(pairs) if pairs else {}
        return {pair: found.get(pair) for pair in pairs}

    @staticmethod
    def _summary(found: Mapping[tuple[str, str], UnitState | None]) -> dict[tuple[str, str], str]:
        return {pair: "" if state is None else state.active for pair, state in found.items()}

    def pass_plan(
        self,
        specs: Mapping[str, UnitSpec],
        schedule: Mapping[str, Scheduled],
        machines: Mapping[str, Machine],
        read: ReadStates,
        invalid: Mapping[str, str] | None = None,
    ) -> tuple[Mapping[str, UnitSpec], dict[str, str]]:
        """The engine's pass: the specs to place (held units loaded) and the held units'
        reasons (INVALID: the submitted units the engine cannot use, unit -> why). Nothing
        is read while no launched unit has a dependency."""
        self._targets = targets(specs)
        if not self._targets:
            self._seen, self._next = {}, None
            return specs, {}
        found = self._read(schedule, read)
        self._seen = self._summary(found)
        self._next = time.monotonic() + POLL_SECONDS
        states = {unit: state for (_, unit), state in found.items() if state is not None}
        held = plan_dependencies(specs, schedule, machines, states, invalid)
        return with_holds(specs, held), held

    def wait(self, now: float) -> float:
        """Seconds until the next read of the dependencies' states (inf: none)."""
        return math.inf if self._next is None else max(0.0, self._next - now)

    def changed(self, schedule: Mapping[str, Scheduled], read: ReadStates) -> bool:
        """When a read is due: whether a dependency's state (or placement) changed since
        the last pass, so the engine plans again only then."""
        if self._next is None or time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + POLL_SECONDS
        return self._summary(self._read(schedule, read)) != self._seen
