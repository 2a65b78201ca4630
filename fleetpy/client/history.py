"""`fleetpy history UNIT` and the API's /fleetpy/v1/units/<name>/history: a unit's audit
trail (fleetpy.model.audit) as read, and whether its record was last written by someone
who bypassed it."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UnknownUnitError
from ..unitfile.unit import parse_name

if TYPE_CHECKING:  # loaded with the registry that reads a trail, not by --help
    from ..model.audit import AuditEntry
    from ..registry.roles import OperatorRegistry


@dataclass(frozen=True)
class UnitHistory:
    unit: str
    entries: tuple[AuditEntry, ...]  # oldest first
    # The unit's record (or its absence) does not match the last entry: someone wrote
    # etcd without fleetpy (or a fleetpy from before the audit trail) since it.
    unrecorded: bool
    revision: int | None  # the unit record's mod_revision (None: no record)


def unit_history(registry: OperatorRegistry, name: str) -> UnitHistory:
    """NAME's history; UnknownUnitError if it has neither a trail nor a record."""
    parse_name(name)  # UnitNameError for an invalid name
    record = registry.get_unit(name)
    trail = registry.unit_history(name)
    revision = None if record is None else record.revision
    if trail is None:
        if record is None:
            raise UnknownUnitError(f"unit {name} has no history: it was never submitted")
        return UnitHistory(name, (), True, revision)
    return UnitHistory(name, trail.entries, trail.unrecorded(revision), revision)


def entry_time(entry: AuditEntry) -> str:
    """The entry's time in UTC, to the second (ISO 8601)."""
    moment = datetime.datetime.fromtimestamp(entry.time, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def history_json(history: UnitHistory) -> dict[str, Any]:
    """The history as `history -o json` prints it and the API returns it."""
    return {
        "unit": history.unit,
        "revision": history.revision,
        "unrecorded": history.unrecorded,
        "entries": [
            {**entry.to_data(), "revision": entry.revision, "at": entry_time(entry)}
            for entry in history.entries
        ],
    }


__all__ = ["UnitHistory", "entry_time", "history_json", "unit_history"]
