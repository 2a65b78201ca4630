"""Operators' metadata overlays of machines (P/metadata; fleetpy.metadata has the rules)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import MetadataError
from ..metadata import MetadataChange, Overlay, apply_changes
from ..model.codecs import MACHINE_ID, MalformedRecord, overlay_from_json, overlay_to_json
from .base import MAX_TXN_OPS, RegistryBase, TxnConflict
from .layout import LAYOUT_KEY, LAYOUT_VALUE
from .transport import Compare, EtcdPermissionDenied, TxnOp


class MetadataKeys(RegistryBase):
    """Operators' metadata overlays."""

    def machine_overlay(self, machine_id: str) -> tuple[int, Overlay]:
        """One machine's operators' overlay and the revision it was read at (its agent
        watches from there)."""
        _, responses, revision = self._txn([], [self.txn.get(self.key("metadata", machine_id))])
        for value, meta in responses[0]:
            item = self._decoded("metadata", self._prefix("metadata"), meta.key, value)
            if item is not None:
                return revision, item[1]
        return revision, {}

    def agent_overlay(self, machine_id: str) -> tuple[int, Overlay] | None:
        """machine_overlay for the machine's own agent; None when its etcd role may not
        read the key (a role made before operators' metadata existed: `ensure_access`
        again grants it), so an upgraded agent keeps running on its own metadata."""
        try:
            return self.machine_overlay(machine_id)
        except EtcdPermissionDenied:
            return None

    def change_metadata(self, changes: Sequence[MetadataChange]) -> int:
        """Apply operators' metadata changes, all in one transaction guarded by the
        overlays it read (a racing change makes it re-read and retry). A machine need not
        be registered: its overlay waits for it. Returns etcd's revision after it."""
        by_machine: dict[str, list[MetadataChange]] = {}
        for change in changes:
            if not MACHINE_ID.fullmatch(change.machine):
                raise MetadataError(f"invalid machine id {change.machine!r}")
            by_machine.setdefault(change.machine, []).append(change)
        if len(by_machine) > MAX_TXN_OPS // 2:
            raise MetadataError(
                f"{len(by_machine)} machines in one change; at most {MAX_TXN_OPS // 2}"
            )
        if not by_machine:
            return 0
        if not self._layout_checked:
            _, responses, _ = self._txn([], self._layout_gets())
            self._check_layout(responses)

        def attempt() -> int:
            keys = {m: self.key("metadata", m) for m in by_machine}
            _, responses, _ = self._txn([], [self.txn.get(k) for k in keys.values()])
            compares: list[Compare] = []
            ops: list[TxnOp] = []
            for (machine, key), kvs in zip(keys.items(), responses):
                current: Overlay = {}
                if kvs:
                    value, meta = kvs[0]
                    compares.append(self.txn.mod(key, meta.mod_revision))
                    try:
                        current = overlay_from_json(machine, value)
                    except MalformedRecord as exc:
                        self._skip(key, str(exc))  # replaced by what the operator says now
                else:
                    compares.append(self.txn.version(key, 0))
                ops.append(
                    self.txn.put(key, overlay_to_json(apply_changes(current, by_machine[machine])))
                )
            marking = self._layout_unmarked
            if marking:  # a first write to this prefix marks it, in the same transaction
                ops.append(self.txn.put(self.key(LAYOUT_KEY), LAYOUT_VALUE))
            ok, _, revision = self._txn(compares, ops)
            if not ok:
                raise TxnConflict()
            if marking:
                self._layout_unmarked = False
            return revision

        return self._retry(attempt)
