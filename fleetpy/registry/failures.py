"""Units' repeated failures by machine (P/failure/<machine>/<unit>): an agent writes its
own machine's, the engine reads and watches them (and deletes those whose backoff ended,
in its fenced writes), an operator's `fleetpy force-reschedule UNIT` deletes a unit's."""

from __future__ import annotations

from collections.abc import Sequence

from ..log import log_event
from ..model.failures import FailureRecord
from .base import MAX_TXN_OPS, RegistryBase, sized_chunks
from .transport import EtcdPermissionDenied, prefix_range_end


class FailureKeys(RegistryBase):
    """Failure records: written by agents, judged by the engine (watched: watches.py)."""

    def report_failure(self, record: FailureRecord) -> None:
        """An agent's report (no lease: it outlives the agent, the engine deletes it). An
        etcd role made before failure records existed may not write it: said, and dropped
        (`ensure_access` again grants it), so the agent does not retry it forever."""
        try:
            self._etcd.put(self.key("failure", record.machine, record.unit), record.to_json())
        except EtcdPermissionDenied as exc:
            log_event("failure_report_refused", unit=record.unit, error=str(exc))

    def read_failures(self) -> tuple[int, list[FailureRecord]]:
        """Every failure record, and the revision they were read at."""
        start = self._prefix("failure")
        _, responses, revision = self._txn([], [self.txn.get(start, prefix_range_end(start))])
        found = []
        for value, meta in responses[0]:
            item = self._decoded("failure", start, meta.key, value)
            if item is not None:
                found.append(item[1])
        return revision, found

    def forget_failures(self, units: Sequence[str]) -> dict[str, list[str]]:
        """Delete the failure records of UNITS on every machine: {unit: machines it had
        failed on}. One transaction (a few, for very many)."""
        wanted = set(units)
        start = self._prefix("failure")
        keys: list[str] = []
        found: dict[str, list[str]] = {unit: [] for unit in units}
        for _, meta in self._range(start, keys_only=True):
            rel = meta.key.decode("utf-8", "replace")[len(start) :]
            machine, _, unit = rel.partition("/")
            if unit in wanted:
                found[unit].append(machine)
                keys.append(meta.key.decode("utf-8", "replace"))
        for chunk in sized_chunks(keys, MAX_TXN_OPS, len):
            self._txn([], [self.txn.delete(key) for key in chunk])
        return {unit: sorted(machines) for unit, machines in found.items()}
