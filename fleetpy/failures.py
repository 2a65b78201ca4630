"""Rescheduling on repeated failure (RescheduleOnFailure=, fleetpy.unitfile.reschedule):
what the engine makes of the failure records agents write.

A unit that failed its threshold on a machine avoids that machine for its backoff
period: the planner (scheduler.Snapshot.avoid) moves it elsewhere, as any other move,
with every constraint respected. Bounded: once it has failed on more than its
RescheduleLimit= machines within the backoff, it moves no more and stays where it is,
saying so, until the backoff ends or `fleetpy force-reschedule UNIT` deletes its records.
A unit no other machine can take stays too, and says why.

Times are the engine's own monotonic clock, from when it first saw a record (never a
clock of the agent's): a new leader starts each backoff afresh from its first read,
which only makes it longer. `judge` is pure; FailureBook is the leader's memory of the
records, fed by its watch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .model.failures import FailureEvent, FailureRecord
from .unitfile.reschedule import ReschedulePolicy, describe_span
from .unitfile.unit import FleetOptions


@dataclass(frozen=True)
class Seen:
    """A failure record and when (engine's monotonic clock) it was first seen."""

    record: FailureRecord
    at: float


@dataclass(frozen=True)
class Avoidance:
    """Machines a unit must not be placed on, and what the unit's reason says."""

    machines: frozenset[str]
    note: str
    stays: bool = False  # RescheduleLimit= reached: not moved, whatever the machines


def judge(
    unit: str, policy: ReschedulePolicy, failed: Mapping[str, Seen], now: float
) -> Avoidance | None:
    """What the failures of UNIT (by machine) mean now: None when none is within the
    backoff."""
    active = {m: seen for m, seen in failed.items() if now < seen.at + policy.backoff}
    if not active:
        return None
    machines = frozenset(active)
    backoff = describe_span(policy.backoff)
    if len(active) > policy.limit:
        names = ", ".join(sorted(active))
        return Avoidance(
            machines,
            f"failed on {len(active)} machines within {backoff} ({names}): "
            f"RescheduleLimit={policy.limit} reached, it stays where it is until "
            f"`fleetpy force-reschedule {unit}` (or the backoff ends)",
            stays=True,
        )
    last = max(active.values(), key=lambda seen: (seen.at, seen.record.machine)).record
    cause = f" ({last.cause})" if last.cause else ""
    return Avoidance(
        machines,
        f"failed {last.failures} times in {describe_span(last.window)} on {last.machine}"
        f"{cause}; avoided there for {backoff} (move {len(active)} of {policy.limit})",
    )


class _Spec(Protocol):  # scheduler.UnitSpec (which imports this module)
    @property
    def name(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def options(self) -> FleetOptions: ...


class FailureBook:
    """The engine's failure records, with when it first saw each."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Seen] = {}  # (unit, machine) -> seen

    def load(self, records: Iterable[FailureRecord], now: float) -> None:
        """A full read: records already known keep when they were first seen."""
        old, self._seen = self._seen, {}
        for record in records:
            known = old.get((record.unit, record.machine))
            at = known.at if known is not None and known.record == record else now
            self._seen[(record.unit, record.machine)] = Seen(record, at)

    def apply(self, event: FailureEvent, now: float) -> None:
        key = (event.unit, event.machine)
        if event.record is None:
            self._seen.pop(key, None)
        elif key not in self._seen or self._seen[key].record != event.record:
            self._seen[key] = Seen(event.record, now)

    def units(self) -> set[str]:
        return {unit for unit, _ in self._seen}

    def policies(
        self, specs: Mapping[str, _Spec]
    ) -> dict[str, tuple[str, ReschedulePolicy | None]]:
        """Units with failure records: (their contents, their RescheduleOnFailure=)."""
        found = (specs.get(unit) for unit in self.units())
        return {s.name: (s.hash, s.options.reschedule) for s in found if s is not None}

    def forgotten(self, machine: str, unit: str) -> None:
        self._seen.pop((unit, machine), None)

    def by_unit(self) -> dict[str, dict[str, Seen]]:
        found: dict[str, dict[str, Seen]] = {}
        for (unit, machine), seen in sorted(self._seen.items()):
            found.setdefault(unit, {})[machine] = seen
        return found

    def avoidances(
        self, policies: Mapping[str, tuple[str, ReschedulePolicy | None]], now: float
    ) -> dict[str, Avoidance]:
        """POLICIES: unit -> (its content hash, its policy)."""
        found: dict[str, Avoidance] = {}
        for unit, failed in self.by_unit().items():
            content, policy = policies.get(unit, ("", None))
            if policy is None:
                continue
            current = {m: seen for m, seen in failed.items() if seen.record.hash in ("", content)}
            avoidance = judge(unit, policy, current, now)
            if avoidance is not None:
                found[unit] = avoidance
        return found

    def expired(
        self, policies: Mapping[str, tuple[str, ReschedulePolicy | None]], now: float
    ) -> list[tuple[str, str]]:
        """(machine, unit) of records to delete: the backoff ended, the unit is gone or
        no longer opts in, or it has new contents since (a fix starts afresh)."""
        done = []
        for (unit, machine), seen in sorted(self._seen.items()):
            content, policy = policies.get(unit, ("", None))
            if (
                policy is None
                or seen.record.hash not in ("", content)
                or now >= seen.at + policy.backoff
            ):
                done.append((machine, unit))
        return done

    def next_expiry(
        self, policies: Mapping[str, tuple[str, ReschedulePolicy | None]]
    ) -> float | None:
        """When the next backoff ends (monotonic), if any record has one."""
        ends = [
            seen.at + policy.backoff
            for (unit, _), seen in self._seen.items()
            for policy in (policies.get(unit, ("", None))[1],)
            if policy is not None
        ]
        return min(ends, default=None)
