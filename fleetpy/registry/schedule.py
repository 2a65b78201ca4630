"""The schedule and the engine's keys: placements and reasons (only the engine writes
them, fenced on its leader key), an agent's schedule, the leader, operators' requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..model.changes import (
    ClearAdoptionRequest,
    EngineWrite,
    ForgetFailure,
    PlaceUnit,
    StoreReason,
    UnplaceUnit,
)
from ..model.codecs import Newer
from ..model.records import MachineSchedule, ScheduleEntry
from .base import MAX_TXN_BYTES, MAX_TXN_OPS, RegistryBase
from .layout import ADOPT, FORCE_RESCHEDULE
from .transport import PutOp, TxnOp, prefix_range_end


class ScheduleKeys(RegistryBase):
    """The schedule, reasons, the leader key and requests to the engine."""

    def read_machine_schedule(self, machine_id: str) -> MachineSchedule:
        """An agent's desired units at one revision: (revision, placed, global, newer)."""
        own = self._prefix("schedule", machine_id)
        glob = self._prefix("global")
        gets = [self.txn.get(p, prefix_range_end(p)) for p in (own, glob)]
        _, responses, revision = self._txn([], gets)
        found: list[dict[str, ScheduleEntry]] = [{}, {}]
        newer: set[str] = set()
        for kind, start, kvs, entries in zip(
            ("schedule", "global"), (self._prefix("schedule"), glob), responses, found
        ):
            for value, meta in kvs:
                item = self._found(kind, start, meta.key, value)
                if item is None:
                    continue
                if isinstance(item[1], Newer):
                    newer.add(item[0].rpartition("/")[2])
                else:
                    entries[item[1].name] = item[1]
        return MachineSchedule(revision, found[0], found[1], frozenset(newer))

    def campaign(self, candidate: str, lease_id: int) -> bool:
        """Become leader if nobody is: create-if-absent under the candidate's lease."""
        key = self.key("engine", "leader")
        ok, _, _ = self._txn(
            [self.txn.version(key, 0)], [self.txn.put(key, candidate, lease=lease_id)]
        )
        return bool(ok)

    def leader(self) -> str | None:
        meta = self._get(self.key("engine", "leader"))
        return None if meta is None else meta.value.decode("utf-8", "replace")

    def engine_write(
        self,
        candidate: str,
        groups: Sequence[Sequence[EngineWrite]],
        written: Callable[[int, int], None] = lambda start, end: None,
        before_each: Callable[[], None] = lambda: None,
    ) -> bool:
        """Write the engine's changes while `candidate` leads (every transaction is
        fenced on the leader key: a deposed leader writes nothing).

        Each group is written in one transaction (a move: off one machine, onto another,
        never on both); groups are packed into as few transactions as etcd's limits allow.
        After each, `written(start, end)` gets the range of groups it held. Returns False
        when a transaction was refused because `candidate` no longer leads.
        """
        guard = self.txn.value(self.key("engine", "leader"), candidate)
        ops: list[TxnOp] = []
        size = 0
        first = 0
        for index, group in enumerate(groups):
            group_ops = [self._engine_op(write) for write in group]
            group_size = sum(self.op_size(op) for op in group_ops)
            if ops and (
                len(ops) + len(group_ops) > MAX_TXN_OPS or size + group_size > MAX_TXN_BYTES
            ):
                before_each()
                if not self._txn([guard], ops)[0]:
                    return False
                written(first, index)
                ops, size, first = [], 0, index
            ops.extend(group_ops)
            size += group_size
        if ops:
            before_each()
            if not self._txn([guard], ops)[0]:
                return False
            written(first, len(groups))
        return True

    def _engine_op(self, write: EngineWrite) -> TxnOp:
        if isinstance(write, PlaceUnit):
            return self.txn.put(
                self.key("schedule", write.machine, write.entry.name), write.entry.to_json()
            )
        if isinstance(write, UnplaceUnit):
            return self.txn.delete(self.key("schedule", write.machine, write.unit))
        if isinstance(write, StoreReason):
            if write.reason is None:
                return self.txn.delete(self.key("reason", write.unit))
            return self.txn.put(self.key("reason", write.unit), write.reason)
        if isinstance(write, ForgetFailure):
            return self.txn.delete(self.key("failure", write.machine, write.unit))
        if isinstance(write, ClearAdoptionRequest):
            return self.txn.delete(self.key("engine", ADOPT))
        return self.txn.delete(self.key("engine", FORCE_RESCHEDULE))

    def request_force_reschedule(self) -> None:
        self.ensure_layout()
        self._etcd.put(self.key("engine", FORCE_RESCHEDULE), str(int(time.time())))

    def force_reschedule_requested(self) -> bool:
        return self._get(self.key("engine", FORCE_RESCHEDULE)) is not None

    def adoption_requested(self) -> bool:
        return self._get(self.key("engine", ADOPT)) is not None

    @staticmethod
    def op_size(op: TxnOp) -> int:
        """Bytes an operation adds to a transaction (its key and value), roughly."""
        return len(op.key) + (len(op.value) if isinstance(op, PutOp) else 0) + 16
