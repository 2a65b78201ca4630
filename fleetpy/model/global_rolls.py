"""A global unit's rolling update, carried by its global entry (P/global/<name>): the
version being replaced, the machines that keep it until the roll moves them, and the
machines where a rolling restart holds the unit stopped.

The entry's own hash is always the newest version: a machine the roll does not name runs
it, so a machine that joins mid-roll gets the new version at once, and the roll never
needs to know every machine. Only the client rolling the unit (apply, restart) shrinks
`waiting`, a few machines per transaction; a roll with nothing left is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .codecs import MalformedRecord, check_content_hash, check_machine_id, typed_field


@dataclass(frozen=True)
class GlobalVersion:
    """One version of a global unit, as its agents need it."""

    hash: str
    text: str
    signature: str | None = None  # the unit record's at the time: agents with keys check it

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"hash": self.hash, "text": self.text}
        if self.signature is not None:
            data["signature"] = self.signature
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> GlobalVersion:
        return cls(
            check_content_hash(data.get("hash")),
            typed_field(data, "text", str),
            typed_field(data, "signature", str, None),
        )


@dataclass(frozen=True)
class GlobalRoll:
    previous: GlobalVersion | None = None  # what the machines in `waiting` keep running
    waiting: frozenset[str] = frozenset()  # machines not moved to the entry's version yet
    stopped: frozenset[str] = frozenset()  # machines where a rolling restart holds it stopped

    @property
    def finished(self) -> bool:
        return not self.stopped and (self.previous is None or not self.waiting)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.previous is not None:
            data["previous"] = self.previous.to_data()
            data["waiting"] = sorted(self.waiting)
        if self.stopped:
            data["stopped"] = sorted(self.stopped)
        return data

    @classmethod
    def from_data(cls, data: Any) -> GlobalRoll:
        if not isinstance(data, dict):
            raise MalformedRecord(f"field 'roll' is a {type(data).__name__}")
        previous = data.get("previous")
        if previous is not None and not isinstance(previous, dict):
            raise MalformedRecord(f"field 'roll.previous' is a {type(previous).__name__}")
        return cls(
            None if previous is None else GlobalVersion.from_data(previous),
            _machines(data, "waiting"),
            _machines(data, "stopped"),
        )


def after_write(
    roll: GlobalRoll | None,
    current: GlobalVersion | None,
    new_hash: str,
    rolling: frozenset[str] | None,
) -> GlobalRoll | None:
    """The roll a global entry carries once version NEW_HASH is written over CURRENT (its
    entry now, with ROLL). The same version (a desired-state change): the roll goes on.
    A new one without ROLLING: every machine switches at once. A new one during a roll:
    the machines still on the previous version keep it until moved, the ones moved
    already (at most the last steps') take the newest at once; back to the previous
    version: every machine is on it at once (those waiting already run it)."""
    if current is None or current.hash == new_hash:
        return roll
    stopped = roll.stopped if roll is not None else frozenset()
    if rolling is None:
        return None
    if roll is not None and roll.previous is not None and roll.waiting:
        if roll.previous.hash == new_hash:
            return _unless_finished(GlobalRoll(None, frozenset(), stopped))
        return _unless_finished(GlobalRoll(roll.previous, roll.waiting, stopped))
    return _unless_finished(GlobalRoll(current, rolling, stopped))


def stepped(
    roll: GlobalRoll | None,
    move: frozenset[str] = frozenset(),
    stop: frozenset[str] = frozenset(),
    start: frozenset[str] = frozenset(),
) -> GlobalRoll | None:
    """ROLL after one step: MOVE take the new version, STOP are held stopped (a rolling
    restart), START are let run again. None once nothing is left to roll."""
    roll = roll or GlobalRoll()
    return _unless_finished(
        GlobalRoll(roll.previous, roll.waiting - move, (roll.stopped | stop) - start)
    )


def _unless_finished(roll: GlobalRoll) -> GlobalRoll | None:
    return None if roll.finished else roll


def _machines(data: Mapping[str, Any], name: str) -> frozenset[str]:
    value = typed_field(data, name, list, [])
    if not all(isinstance(m, str) for m in value):
        raise MalformedRecord(f"field 'roll.{name}' holds a non-string")
    return frozenset(check_machine_id(m) for m in value)


__all__ = ["GlobalRoll", "GlobalVersion", "after_write", "stepped"]
