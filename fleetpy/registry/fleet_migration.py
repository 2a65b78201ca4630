"""A migration from fleet (fleetpy.fleet_import has the plan): what fleetpy holds that the
plan depends on, read at one revision, and the plan written.

Written as fleet had it: contents, unit records, global entries, and the schedule entries
of the units fleet placed, on fleet's machines, with operators' metadata overlays and the
hand-over holds (maintenance cordons under one lease). The schedule is otherwise the
engine's alone, and the engine does not watch it: every transaction is guarded on no
engine leading (P/engine/leader absent), so an engine that starts later reads the
migrated placements in its first full read, and none places a migrated unit a second
time. With etcd's RBAC that takes a user allowed to write P/schedule (root or the engine's:
fleetpy-operator may not).

Units go in transactions of at most 30 (etcd's --max-txn-ops): a unit is written whole
(content, record, placement) or not at all, and the plan computed again from what is there
finishes an interrupted migration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import PartialWriteError, RegistryError
from ..fleet_import import ENGINE_LEADS, FleetpySide, ImportedUnit, MigrationPlan
from ..model.audit import AuditTrail, AuditVerb
from ..model.codecs import Newer, overlay_to_json
from ..model.cordons import CordonRecord
from ..model.records import ScheduleEntry, UnitRecord
from .audit import AuditKeys
from .base import MAX_TXN_OPS, partial_message, sized_chunks
from .transport import prefix_range_end

# Per unit: its content, record, placement and audit trail (four puts) and three guards.
UNITS_PER_TXN = MAX_TXN_OPS // 5


class FleetMigrationKeys(AuditKeys):
    """Read what a migration plan needs; write a plan."""

    def migration_side(self) -> FleetpySide:
        kinds = ("unit", "machines", "metadata", "cordon")
        starts = [self._prefix(kind) for kind in kinds]
        gets = [self.txn.get(start, prefix_range_end(start)) for start in starts]
        layout = [] if self._layout_checked else self._layout_gets()
        leader = [self.txn.get(self.key("engine", "leader"))]
        _, responses, _ = self._txn([], gets + leader + layout)
        if layout:
            self._check_layout(responses[len(gets) + 1 :])
        found: list[dict[str, Any]] = []
        for kind, start, kvs in zip(kinds, starts, responses):
            records: dict[str, Any] = {}
            for value, meta in kvs:
                item = self._found(kind, start, meta.key, value, meta.mod_revision)
                if item is not None:
                    records[item[0]] = item[1]
            found.append(records)
        units, machines, overlays, cordons = found
        return FleetpySide(
            units={n: r.hash for n, r in units.items() if isinstance(r, UnitRecord)},
            newer_units=frozenset(n for n, r in units.items() if isinstance(r, Newer)),
            registered=frozenset(machines),
            overlays={m: o for m, o in overlays.items() if isinstance(o, dict)},
            cordoned=frozenset(cordons),
            engine_leads=bool(responses[len(gets)]),
        )

    def write_migration(
        self, plan: MigrationPlan, holds: Sequence[CordonRecord], window: int
    ) -> list[str]:
        """Write PLAN; returns the units written. HOLDS: the hand-over holds of the plan's
        machines, the cordons of a maintenance window of WINDOW seconds (one lease)."""
        self.ensure_layout()
        leader = self.txn.version(self.key("engine", "leader"), 0)
        if holds or plan.metadata:
            self._write_machines(plan, holds, window, leader)
        written: list[str] = []
        for chunk in sized_chunks(plan.units, UNITS_PER_TXN, lambda u: 2 * len(u.text) + 512):
            compares: list[Any] = [leader]
            ops: list[Any] = []
            contents: set[str] = set()
            # A name used before keeps its trail (audit.py): the migration appends to it.
            trails = self.unit_histories([unit.name for unit in chunk])
            for unit in chunk:
                compares.extend(self._unit_writes(unit, ops, contents, trails[unit.name]))
            try:
                self._guarded_write(compares, ops)
            except RegistryError as exc:
                if not written:
                    raise
                rest = [u.name for u in plan.units if u.name not in set(written)]
                raise PartialWriteError(partial_message(written, rest, exc)) from None
            written.extend(unit.name for unit in chunk)
        return written

    def _write_machines(
        self, plan: MigrationPlan, holds: Sequence[CordonRecord], window: int, leader: Any
    ) -> None:
        lease = self._etcd.lease_grant(window).id if holds else 0
        items: list[tuple[str, str, int]] = [
            (self.key("cordon", record.machine), record.to_json(), lease) for record in holds
        ]
        items += [
            (self.key("metadata", machine), overlay_to_json(metadata), 0)
            for machine, metadata in plan.metadata.items()
        ]
        for chunk in sized_chunks(items, MAX_TXN_OPS, lambda item: len(item[1])):
            self._guarded_write(
                [leader, *(self.txn.version(key, 0) for key, _, _ in chunk)],
                [self.txn.put(key, value, lease=lease_id) for key, value, lease_id in chunk],
            )

    def _unit_writes(
        self, unit: ImportedUnit, ops: list[Any], contents: set[str], trail: AuditTrail
    ) -> list[Any]:
        """The unit's puts (appended to OPS), and its guards; its audit trail says where
        it came from, in the same transaction, as every change of a unit does."""
        if unit.hash not in contents:
            contents.add(unit.hash)
            ops.append(self.txn.put(self.key("content", unit.hash), unit.text))
        record = UnitRecord(unit.name, unit.hash, unit.desired, unit.is_global)
        unit_key = self.key("unit", unit.name)
        ops.append(self.txn.put(unit_key, record.to_json()))
        guards = [self.txn.version(unit_key, 0)]
        where = f"from fleet, on machine {unit.machine}" if unit.machine else "from fleet"
        audit_guard, audit_put = self._audit_append(
            trail, self._audit_entry(AuditVerb.MIGRATE, record, where)
        )
        guards.append(audit_guard)
        ops.append(audit_put)
        entry = ScheduleEntry(unit.name, unit.hash, unit.desired, unit.text)
        if unit.is_global:
            placed = self.key("global", unit.name)
        elif unit.machine is not None:
            placed = self.key("schedule", unit.machine, unit.name)
        else:
            return guards
        ops.append(self.txn.put(placed, entry.to_json()))
        guards.append(self.txn.version(placed, 0))
        return guards

    def _guarded_write(self, compares: Sequence[Any], ops: Sequence[Any]) -> None:
        if self._txn(compares, ops)[0]:
            return
        if self._get(self.key("engine", "leader")) is not None:
            raise RegistryError(ENGINE_LEADS)
        raise RegistryError(
            "another client wrote the same units or machines meanwhile; run migrate again "
            "(it writes only what is still missing)"
        )
