"""Rolling updates of global units (fleetpy.model.global_rolls): the roll lives in the
unit's global entry, P/global/<name>; a client moves it on one step per transaction."""

from __future__ import annotations

from ..model.audit import AuditVerb
from ..model.global_rolls import stepped
from ..model.records import DeploymentSession, ScheduleEntry, UnitRecord
from .audit import AuditKeys
from .deployments import DeploymentKeys


class GlobalRollKeys(DeploymentKeys, AuditKeys):
    """A global unit's entry as agents read it, and the steps of its roll."""

    def get_global(self, name: str) -> tuple[ScheduleEntry, int] | None:
        """The global entry of NAME and its mod revision; None if it has none (or one
        this fleetpy cannot read: said once)."""
        meta = self._get(self.key("global", name))
        if meta is None:
            return None
        item = self._decoded("global", self._prefix("global"), meta.key, meta.value)
        return None if item is None else (item[1], int(meta.mod_revision))

    def step_global_roll(
        self,
        name: str,
        move: frozenset[str] = frozenset(),
        stop: frozenset[str] = frozenset(),
        start: frozenset[str] = frozenset(),
        session: DeploymentSession | None = None,
    ) -> ScheduleEntry | None:
        """One step of NAME's roll in one transaction (model.global_rolls.stepped), guarded
        by the entry as read (a concurrent change of the unit is not lost: read again) and
        by SESSION's deployment record, and counted in the unit's audit trail (a roll when
        machines MOVE, else a restart). The entry as written; None if the unit has none."""

        def attempt() -> ScheduleEntry | None:
            found = self.get_global(name)
            if found is None:
                return None
            entry, revision = found
            new = ScheduleEntry(
                entry.name,
                entry.hash,
                entry.desired,
                entry.text,
                entry.signature,
                stepped(entry.roll, move, stop, start),
            )
            if new == entry:
                return entry
            key = self.key("global", name)
            trail = self.unit_histories([name])[name]
            verb = AuditVerb.ROLL if move else AuditVerb.RESTART
            written = UnitRecord(name, entry.hash, entry.desired, True, signature=entry.signature)
            step = trail.stepped(self._audit_entry(verb, written), len(move or stop))
            guard, put = self._audit_write(trail, step)
            self._guarded(
                [self.txn.mod(key, revision), guard],
                [self.txn.put(key, new.to_json()), put],
                session,
            )
            return new

        return self._retry(attempt)


__all__ = ["GlobalRollKeys"]
