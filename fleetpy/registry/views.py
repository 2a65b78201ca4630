"""The cluster read at one revision: units, machines, schedule, reasons, cordons and states."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from ..errors import RegistryError
from ..metadata import Overlay
from ..model.codecs import MACHINE_ID, Newer
from ..model.cordons import CordonRecord
from ..model.records import (
    ClusterView,
    MachineRecord,
    ScheduleEntry,
    UnitRecord,
    UnitState,
    with_overlays,
)
from .base import RegistryBase
from .transport import EtcdCompacted, GetOp, KeyValue, prefix_range_end


class Listing(NamedTuple):
    """What the listings show, read at one revision: only the families asked for are
    filled, the others are empty. At 100,000 units each family read costs about a second
    of CPU (the values' decoding and checks), so a listing reads only what it shows."""

    revision: int
    units: dict[str, UnitRecord]
    placed: dict[str, str]  # unit -> machine it is scheduled on (the schedule's keys alone)
    reasons: dict[str, str]
    states: dict[str, dict[str, UnitState]]  # unit -> machine -> state
    machines: dict[str, MachineRecord]  # without operators' overlays


class Views(RegistryBase):
    """ClusterView reads."""

    def read_listing(
        self,
        *,
        units: bool = False,
        placed: bool = False,
        reasons: bool = False,
        states: bool = False,
        machines: bool = False,
    ) -> Listing:
        """The families asked for, in one transaction. Placements are the schedule's keys
        (P/schedule/<machine>/<unit>): their values, the unit texts, are never read. A
        key naming no unit record is never shown (callers look names up from records),
        and one whose machine part is no machine id is skipped."""
        wanted = [
            name
            for name, asked in (
                ("unit", units),
                ("schedule", placed),
                ("reason", reasons),
                ("state", states),
                ("machines", machines),
            )
            if asked
        ]
        gets = []
        for name in wanted:
            start = self._prefix(name)
            end = prefix_range_end(start)
            gets.append(GetOp(start.encode(), end, keys_only=name == "schedule"))
        _, responses, revision = self._txn([], gets)
        found = Listing(revision, {}, {}, {}, {}, {})
        for name, kvs in zip(wanted, responses):
            start = self._prefix(name)
            if name == "schedule":
                _placements(found.placed, len(start), kvs)
                continue
            for value, meta in kvs:
                item = self._decoded(name, start, meta.key, value, meta.mod_revision)
                if item is None:
                    continue
                rel, record = item
                if name == "unit":
                    found.units[rel] = record
                elif name == "reason":
                    found.reasons[rel] = record
                elif name == "state":
                    found.states.setdefault(record.name, {})[record.machine] = record
                else:
                    found.machines[rel] = record
        return found

    def read_view(
        self, *, with_states: bool = True, with_text: bool = True, piecewise: bool = False
    ) -> ClusterView:
        """Read units, machines, schedule, reasons (and states) at ONE revision.

        `piecewise`: each family is read by a request of its own at the first one's
        revision, and decoded before the next is read: the same view, at a fraction of the
        peak memory of one response holding them all (a long-lived reader, the API server,
        keeps that peak as its RSS). etcd compacting that revision in between: read again.
        """
        for attempt in range(3):
            try:
                return self._read_view(with_states, with_text, piecewise)
            except EtcdCompacted:
                if attempt == 2:
                    raise RegistryError("etcd compacted its history during 3 reads") from None
        raise AssertionError("unreachable")

    def _read_view(self, with_states: bool, with_text: bool, piecewise: bool) -> ClusterView:
        prefixes = ["unit", "machines", "metadata", "schedule", "reason", "cordon"]
        prefixes += ["state"] if with_states else []
        revision = 0
        responses: list[list[tuple[bytes, KeyValue]]] = []
        if not piecewise:
            gets = []
            for name in prefixes:
                start = self._prefix(name)
                gets.append(self.txn.get(start, prefix_range_end(start)))
            _, responses, revision = self._txn([], gets)

        def read(index: int) -> list[tuple[bytes, KeyValue]]:
            nonlocal revision
            if not piecewise:
                kvs, responses[index] = responses[index], []  # decoded: let it go
                return kvs
            start = self._prefix(prefixes[index])
            result = self._etcd.range(start, prefix_range_end(start), revision=revision)
            revision = revision or result.revision
            return [(kv.value, kv) for kv in result.kvs]

        units: dict[str, UnitRecord] = {}
        machines: dict[str, MachineRecord] = {}
        overlays: dict[str, Overlay] = {}
        schedule: dict[str, tuple[str, ScheduleEntry]] = {}
        reasons: dict[str, str] = {}
        cordons: dict[str, CordonRecord] = {}
        states: dict[str, dict[str, UnitState]] = {}
        newer: dict[str, dict[str, str]] = {"unit": {}, "schedule": {}, "machines": {}}
        newer["metadata"] = newer["machines"]  # a machine the engine must leave as it is
        for index, name in enumerate(prefixes):
            start = self._prefix(name)
            for value, meta in read(index):
                item = self._found(name, start, meta.key, value, meta.mod_revision)
                if item is None:
                    continue
                rel, record = item
                if isinstance(record, Newer):
                    if name in newer:
                        machine, _, unit = rel.rpartition("/")
                        newer[name][unit] = machine
                    continue
                if name == "unit":
                    units[rel] = record
                elif name == "machines":
                    machines[rel] = record
                elif name == "metadata":
                    overlays[rel] = record
                elif name == "schedule":
                    entry = record if with_text else replace(record, text="")
                    schedule[entry.name] = (rel.partition("/")[0], entry)
                elif name == "reason":
                    reasons[rel] = record
                elif name == "cordon":
                    cordons[rel] = record
                else:
                    states.setdefault(record.name, {})[record.machine] = record
        machines = with_overlays(machines, overlays)
        return ClusterView(
            revision,
            units,
            machines,
            schedule,
            reasons,
            states,
            overlays,
            frozenset(newer["unit"]),
            newer["schedule"],
            frozenset(newer["machines"]),
            cordons,
        )


def _placements(into: dict[str, str], skip: int, kvs: list[tuple[bytes, KeyValue]]) -> None:
    """unit -> machine from schedule keys (P/schedule/<machine>/<unit>)."""
    machines: dict[str, bool] = {}  # each machine id checked once, not once per unit
    for _, meta in kvs:
        machine, _, unit = meta.key[skip:].decode("utf-8", "replace").partition("/")
        good = machines.get(machine)
        if good is None:
            good = machines[machine] = MACHINE_ID.fullmatch(machine) is not None
        if good and unit:
            into[unit] = machine
