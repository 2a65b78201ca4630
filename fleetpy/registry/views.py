"""The cluster read at one revision: units, machines, schedule, reasons and states."""

from __future__ import annotations

from dataclasses import replace

from ..metadata import Overlay
from ..model.codecs import Newer
from ..model.records import (
    ClusterView,
    MachineRecord,
    ScheduleEntry,
    UnitRecord,
    UnitState,
    with_overlays,
)
from .base import RegistryBase
from .transport import prefix_range_end


class Views(RegistryBase):
    """ClusterView reads."""

    def read_view(self, *, with_states: bool = True, with_text: bool = True) -> ClusterView:
        """Read units, machines, schedule, reasons (and states) at ONE revision."""
        prefixes = ["unit", "machines", "metadata", "schedule", "reason"]
        prefixes += ["state"] if with_states else []
        gets = []
        for name in prefixes:
            start = self._prefix(name)
            gets.append(self.txn.get(start, prefix_range_end(start)))
        _, responses, revision = self._txn([], gets)
        units: dict[str, UnitRecord] = {}
        machines: dict[str, MachineRecord] = {}
        overlays: dict[str, Overlay] = {}
        schedule: dict[str, tuple[str, ScheduleEntry]] = {}
        reasons: dict[str, str] = {}
        states: dict[str, dict[str, UnitState]] = {}
        newer: dict[str, dict[str, str]] = {"unit": {}, "schedule": {}, "machines": {}}
        newer["metadata"] = newer["machines"]  # a machine the engine must leave as it is
        for name, kvs in zip(prefixes, responses):
            start = self._prefix(name)
            for value, meta in kvs:
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
        )
