"""Machines (P/machines, under their agents' leases) and the unit states agents report
(P/state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import RegistryError
from ..model.codecs import MalformedRecord
from ..model.records import MachineRecord, UnitState, with_overlays
from ..states import RUNNING_STATES
from .base import CONFLICT_RETRIES, MAX_TXN_OPS, RegistryBase, chunks
from .transport import EtcdPermissionDenied, TxnOp, prefix_range_end


class MachineIdInUse(RegistryError):
    """Another agent holds this machine id: a host cloned with the same /etc/machine-id."""

    def __init__(self, holder: MachineRecord) -> None:
        self.holder = holder
        where = ", ".join(
            part for part in (holder.hostname and f"host {holder.hostname}", holder.ip) if part
        )
        super().__init__(
            f"machine id {holder.id} is in use by another agent ({where or 'unknown host'}): "
            "a cloned image? give this host its own /etc/machine-id "
            "(rm /etc/machine-id; systemd-machine-id-setup); waiting until that one is gone"
        )


class MachineKeys(RegistryBase):
    """Leases, machine records and unit states."""

    def grant_lease(self, ttl: int) -> int:
        return self._etcd.lease_grant(int(ttl)).id

    def refresh_lease(self, lease_id: int) -> int:
        """Keep a lease alive; returns the remaining TTL (<= 0 if it expired)."""
        return self._etcd.lease_keepalive_once(lease_id)

    def revoke_lease(self, lease_id: int) -> None:
        self._etcd.lease_revoke(lease_id)

    def register_machine(
        self, machine: MachineRecord, lease_id: int, states: Sequence[UnitState] = ()
    ) -> None:
        """Write the machine's record under the agent's lease, unless another agent
        (another instance) holds its id: then MachineIdInUse, and nothing is written.
        STATES (what runs there now) go with the record, in its transaction as far as
        they fit: whoever sees the machine join also sees what it runs (a restore's
        adoption relies on it)."""
        key = self.key("machines", machine.id)
        state_ops = self._state_puts(states, lease_id)
        with_record, rest = state_ops[: MAX_TXN_OPS - 1], state_ops[MAX_TXN_OPS - 1 :]
        for _ in range(CONFLICT_RETRIES):
            try:
                current = self._etcd.range(key).kvs
            except EtcdPermissionDenied:
                # A role from before agents read their record (cluster up --secure applies
                # the new one): write it as those agents did, unchecked.
                self._etcd.put(key, machine.to_json(), lease=lease_id)
                with_record, rest = [], state_ops
                break
            if current:
                try:
                    holder = MachineRecord.from_json(machine.id, current[0].value)
                except MalformedRecord:
                    holder = None  # unreadable: nobody we could tell apart, take it over
                if holder is not None and holder.instance not in ("", machine.instance):
                    raise MachineIdInUse(holder)
                guard = self.txn.mod(key, current[0].mod_revision)
            else:
                guard = self.txn.version(key, 0)
            put = self.txn.put(key, machine.to_json(), lease_id)
            if self._txn([guard], [put, *with_record])[0]:
                break
        else:
            raise RegistryError(f"machine {machine.id}: its record kept changing while registering")
        self._write_unguarded(rest)

    def list_machines(self) -> dict[str, MachineRecord]:
        """The registered machines, each with its operators' metadata overlay."""
        gets = [
            self.txn.get(p, prefix_range_end(p))
            for p in map(self._prefix, ("machines", "metadata"))
        ]
        _, responses, _ = self._txn([], gets)
        found: list[dict[str, Any]] = []
        for kind, kvs in zip(("machines", "metadata"), responses):
            start = self._prefix(kind)
            items = (self._decoded(kind, start, meta.key, value) for value, meta in kvs)
            found.append(dict(item for item in items if item is not None))
        return with_overlays(found[0], found[1])

    def report_states(
        self, states: Sequence[UnitState], lease_id: int, removed: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Write reported unit states (under the agent's lease) and drop removed ones."""
        ops = self._state_puts(states, lease_id)
        ops += [self.txn.delete(self.key("state", machine, unit)) for unit, machine in removed]
        self._write_unguarded(ops)

    def _state_puts(self, states: Sequence[UnitState], lease_id: int) -> list[TxnOp]:
        return [
            self.txn.put(self.key("state", s.machine, s.name), s.to_json(), lease=lease_id)
            for s in states
        ]

    def _write_unguarded(self, ops: Sequence[TxnOp]) -> None:
        """OPS in as few transactions as etcd takes (each key is the writer's own)."""
        for chunk in chunks(ops, MAX_TXN_OPS):
            self._txn([], chunk)

    def list_states(self) -> dict[str, dict[str, UnitState]]:
        states: dict[str, dict[str, UnitState]] = {}
        for _, state in self._read_kind("state"):
            states.setdefault(state.name, {})[state.machine] = state
        return states

    def running_units(self) -> dict[str, tuple[str, str]]:
        """unit -> (machine, content hash) of the units agents report running
        (RUNNING_STATES) on one machine; a unit reported running on several is
        left out (nothing to prefer)."""
        found: dict[str, tuple[str, str]] = {}
        for name, by_machine in self.list_states().items():
            running = [s for s in by_machine.values() if s.active in RUNNING_STATES]
            if len(running) == 1:
                found[name] = (running[0].machine, running[0].hash)
        return found
