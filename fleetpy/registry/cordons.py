"""Operators' cordons of machines (P/cordon/<machine>; fleetpy.drain has the rules), and
the few unit states the engine reads while it drains a machine."""

from __future__ import annotations

from collections.abc import Iterable

from ..model.cordons import CordonRecord
from ..model.records import UnitState
from .base import RegistryBase
from .transport import EtcdPermissionDenied


class CordonKeys(RegistryBase):
    """Cordons: written by operators, read and watched by the engine."""

    def cordons(self) -> dict[str, CordonRecord]:
        """Every machine's cordon, by machine id (a malformed one is skipped, said once)."""
        return dict(self._read_kind("cordon"))

    def put_cordon(self, record: CordonRecord, window: int = 0) -> int:
        """Cordon a machine, or change its cordon (drain, maintenance); etcd's revision
        after it. One key: a second operator's write is the one that stays. With a
        WINDOW (seconds), the record lives under an etcd lease of that length: etcd
        drops it when the window ends."""
        self.ensure_layout()
        lease = self._etcd.lease_grant(window).id if window > 0 else 0
        key = self.key("cordon", record.machine)
        _, _, revision = self._txn([], [self.txn.put(key, record.to_json(), lease=lease)])
        return revision

    def agent_cordon(self, machine_id: str) -> tuple[int, CordonRecord | None] | None:
        """The machine's own cordon (its agent stops global units a drain includes) and
        the revision it was read at; None when the agent's etcd role may not read it (a
        role from before cordons: `ensure_access` again grants it)."""
        key = self.key("cordon", machine_id)
        try:
            _, responses, revision = self._txn([], [self.txn.get(key)])
        except EtcdPermissionDenied:
            return None
        for value, meta in responses[0]:
            item = self._decoded("cordon", self._prefix("cordon"), meta.key, value)
            if item is not None:
                return revision, item[1]
        return revision, None

    def remove_cordon(self, machine: str) -> bool:
        """Uncordon a machine: whether it was cordoned."""
        _, responses, _ = self._txn([], [self.txn.delete(self.key("cordon", machine))])
        return bool(getattr(responses[0], "deleted", 0))

    def unit_states(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], UnitState]:
        """The states of these (machine, unit) pairs that agents report, in one read:
        the engine reads only the units it moved off a draining machine, never P/state/."""
        keys = list(dict.fromkeys(pairs))
        if not keys:
            return {}
        _, responses, _ = self._txn([], [self.txn.get(self.key("state", m, u)) for m, u in keys])
        found: dict[tuple[str, str], UnitState] = {}
        start = self._prefix("state")
        for pair, kvs in zip(keys, responses):
            for value, meta in kvs:
                item = self._decoded("state", start, meta.key, value)
                if item is not None:
                    found[pair] = item[1]
        return found
