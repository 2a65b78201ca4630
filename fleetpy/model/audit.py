"""The audit trail of a unit (P/audit/<name>): who changed its desired state, from where,
when, to what. The registry writes an entry in the same transaction as each change of the
unit's record (fleetpy.registry.audit), so no fleetpy code path can change a unit without
one; the trail keeps the last AUDIT_KEPT entries, and outlives the unit's destroy (a new
unit of the same name continues it).

What an entry says is the writing client's word (its etcd user, host and clock): etcd
itself stamps only the revision. Someone writing etcd directly can skip or forge entries;
what they cannot hide is that the unit's record was written at a revision no entry has
(see `unrecorded`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ..states import DesiredState
from .codecs import (
    MalformedRecord,
    check_content_hash,
    check_unit_name,
    parse_desired,
    read_record,
    typed_field,
    versioned_json,
)

# Entries per unit name: about 3.5 KiB a key, rewritten with each change (100,000 units
# with a full trail each: ~350 MB of etcd's space, out of its 2 GiB default quota).
AUDIT_KEPT = 10
# A client's own word is cut to size, so a trail stays under TRAIL_BYTES whoever wrote it.
MAX_FIELD_CHARS = 128  # user, host, origin, detail
MAX_KEYS = 4  # signing key ids per entry
TRAIL_BYTES = 4 * 1024  # what a transaction reserves for a trail it appends to (typical: 3.5)


class AuditVerb(StrEnum):
    """What a change did to the unit, named from the records before and after it."""

    SUBMIT = "submit"  # a new unit, desired inactive
    LOAD = "load"
    START = "start"
    STOP = "stop"  # launched -> loaded
    UNLOAD = "unload"  # -> inactive
    REPLACE = "replace"  # new contents under the same name (apply's rolling update, rollback)
    RESIGN = "re-sign"  # the same contents with another signature
    ORIGIN = "origin"  # the same unit recorded as applied from another commit
    DESTROY = "destroy"
    RESTORE = "restore"  # written back from a backup (`fleetpy restore`)
    MIGRATE = "migrate"  # taken over from fleet (`fleetpy migrate --from-fleet`)
    # Steps on a global unit's machines (its global entry, not its record), one entry
    # per run of steps by the same client (detail: how many machines so far):
    ROLL = "roll"  # moved to the unit's new version (apply's rolling update)
    RESTART = "restart"  # stopped and started again (`fleetpy restart`)


# The verbs whose change wrote the unit's record (and so share its revision).
RECORD_VERBS = frozenset(AuditVerb) - {AuditVerb.ROLL, AuditVerb.RESTART}


@dataclass(frozen=True)
class AuditEntry:
    verb: AuditVerb
    time: float  # seconds since the epoch, by the writing client's clock
    user: str | None  # the etcd user it wrote as (None: an etcd without auth)
    local_user: str  # its login on the client host
    host: str  # the client host's name
    hash: str | None  # the unit's content hash after the change (None: destroyed)
    desired: DesiredState | None  # its desired state after the change (None: destroyed)
    keys: tuple[str, ...] = ()  # ids of the keys whose signature the unit carries
    origin: str | None = None  # the commit (or digest) `fleetpy apply` wrote it from
    detail: str = ""  # e.g. a global unit's rolling update: the machines it rolls over
    # etcd's revision of the change: the trail key's mod_revision for the last entry,
    # stored into an entry when the next one is appended (0: not known yet)
    revision: int = 0

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "verb": self.verb,
            "time": self.time,
            "user": self.user,
            "local_user": self.local_user,
            "host": self.host,
            "hash": self.hash,
            "desired": self.desired,
        }
        for name, value, empty in (
            ("keys", list(self.keys), []),
            ("origin", self.origin, None),
            ("detail", self.detail, ""),
            ("revision", self.revision, 0),
        ):
            if value != empty:
                data[name] = value
        return data

    @classmethod
    def from_data(cls, data: Any) -> AuditEntry:
        if not isinstance(data, dict):
            raise MalformedRecord("an audit entry is not an object")
        verb = typed_field(data, "verb", str, "")
        if verb not in AuditVerb.__members__.values():
            raise MalformedRecord(f"unknown audit verb {verb!r}")
        when = typed_field(data, "time", (int, float), 0.0)
        content = typed_field(data, "hash", str, None)
        desired = data.get("desired")
        keys = typed_field(data, "keys", list, [])
        if not all(isinstance(k, str) for k in keys):
            raise MalformedRecord("field 'keys' holds a non-string")
        revision = typed_field(data, "revision", int, 0)
        if isinstance(revision, bool) or revision < 0:
            raise MalformedRecord("field 'revision' is not a revision")
        return cls(
            AuditVerb(verb),
            float(when),
            _cut(typed_field(data, "user", str, None)),
            _cut(typed_field(data, "local_user", str, "")) or "",
            _cut(typed_field(data, "host", str, "")) or "",
            None if content is None else check_content_hash(content),
            None if desired is None else parse_desired(desired),
            tuple(_cut(k) or "" for k in keys[:MAX_KEYS]),
            _cut(typed_field(data, "origin", str, None)),
            _cut(typed_field(data, "detail", str, "")) or "",
            revision,
        )


_COUNT = re.compile(r"([0-9]{1,9}) machines?")


def _machines(count: int) -> str:
    return f"{count} machine" if count == 1 else f"{count} machines"


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:MAX_FIELD_CHARS]


@dataclass(frozen=True)
class AuditTrail:
    """A unit's last AUDIT_KEPT entries, oldest first, and the revision of its key (0:
    there is none yet): the guard of the transaction that appends to it."""

    unit: str
    entries: tuple[AuditEntry, ...] = ()
    revision: int = 0

    def appended(self, entry: AuditEntry) -> AuditTrail:
        """The trail with ENTRY last (the oldest dropped beyond AUDIT_KEPT); the entry that
        was last gets the revision its change was written at (the key's, as read)."""
        entries = list(self.entries)
        if entries and entries[-1].revision == 0:
            entries[-1] = replace(entries[-1], revision=self.revision)
        entries.append(entry)
        return AuditTrail(self.unit, tuple(entries[-AUDIT_KEPT:]), self.revision)

    def stepped(self, entry: AuditEntry, machines: int) -> AuditTrail:
        """A roll or restart step over MACHINES more machines: counted into the last
        entry when the same client's run of the same steps on the same version goes on,
        else appended."""
        last = self.entries[-1] if self.entries else None
        same = last is not None and (
            (last.verb, last.user, last.local_user, last.host, last.hash)
            == (entry.verb, entry.user, entry.local_user, entry.host, entry.hash)
        )
        counted = _COUNT.fullmatch(last.detail) if last is not None and same else None
        if counted is None:
            return self.appended(replace(entry, detail=_machines(machines)))
        total = int(counted.group(1)) + machines
        return replace(self, entries=(*self.entries[:-1], replace(entry, detail=_machines(total))))

    def to_json(self) -> str:
        return versioned_json({"entries": [e.to_data() for e in self.entries]})

    @classmethod
    def from_json(cls, unit: str, raw: bytes, revision: int = 0) -> AuditTrail:
        data = read_record(raw)
        items = typed_field(data, "entries", list, [])
        entries = [AuditEntry.from_data(item) for item in items[-AUDIT_KEPT:]]
        if entries and entries[-1].revision == 0:
            entries[-1] = replace(entries[-1], revision=revision)
        return cls(check_unit_name(unit), tuple(entries), revision)

    def unrecorded(self, unit_revision: int | None) -> bool:
        """Whether the unit's record (its mod_revision, None: no record) was last written
        by someone who left no entry here: fleetpy writes the record and the trail in one
        transaction, so both carry the same revision (and a destroy is the last such
        entry). Roll and restart steps write the global entry, not the record."""
        written = [e for e in self.entries if e.verb in RECORD_VERBS]
        last = written[-1] if written else None
        if unit_revision is None:
            return last is not None and last.verb is not AuditVerb.DESTROY
        return last is None or last.revision != unit_revision


def verb_of(
    before_hash: str | None,
    before_desired: DesiredState | None,
    before_signature: str | None,
    after_hash: str,
    after_desired: DesiredState,
    after_signature: str | None,
) -> AuditVerb:
    """The verb of a change of a unit's record (before_hash None: it had none)."""
    if before_hash is None:
        if after_desired is DesiredState.LAUNCHED:
            return AuditVerb.START
        if after_desired is DesiredState.LOADED:
            return AuditVerb.LOAD
        return AuditVerb.SUBMIT
    if before_hash != after_hash:
        return AuditVerb.REPLACE
    if before_desired != after_desired:
        if after_desired is DesiredState.LAUNCHED:
            return AuditVerb.START
        if after_desired is DesiredState.INACTIVE:
            return AuditVerb.UNLOAD
        return AuditVerb.STOP if before_desired is DesiredState.LAUNCHED else AuditVerb.LOAD
    if before_signature != after_signature:
        return AuditVerb.RESIGN
    return AuditVerb.ORIGIN


__all__ = [
    "AUDIT_KEPT",
    "RECORD_VERBS",
    "TRAIL_BYTES",
    "AuditEntry",
    "AuditTrail",
    "AuditVerb",
    "verb_of",
]
