"""Watches: typed events; the key layout stays in here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..log import log_event
from ..model import events
from ..model.codecs import Newer
from ..model.cordons import CordonEvent
from ..model.events import E, WatchBatch
from ..model.failures import FailureEvent, FailureRecord
from ..model.records import ScheduleEntry, UnitState
from .base import RegistryBase
from .layout import ADOPT, FORCE_RESCHEDULE
from .transport import EtcdPermissionDenied, EventKind, WatchEnded, WatchResponse, prefix_range_end


class Watches(RegistryBase):
    """Watches of each key family."""

    def _watch(
        self,
        kind: str,
        event: Callable[[str, Any], E | None],
        callback: Callable[[WatchBatch[E]], None],
        start_revision: int | None,
        sub: str | None = None,
        exact: bool = False,
    ) -> Callable[[], None]:
        """Watch P/<kind>/[<sub>/], or with `exact` the one key P/<kind>/<sub> (a
        client allowed that key only may not watch a range): `event(relative key, record
        or None)` makes each typed event (None: not ours, skip). An error batch (etcd gone,
        revision compacted) ends the watch and tells the caller to resync."""
        start = self._prefix(kind, sub) if sub else self._prefix(kind)
        kind_start = self._prefix(kind)
        range_end: bytes | None = prefix_range_end(start)
        if exact and sub:
            start, range_end = self.key(kind, sub), None

        def on_response(response: WatchResponse | WatchEnded) -> None:
            if isinstance(response, WatchEnded):
                callback(WatchBatch((), 0, error=response.error, compacted=response.compacted))
                return
            found: list[E] = []
            for change in response.events:
                rel = change.key.decode("utf-8", "replace")[len(kind_start) :]
                record = None
                if change.kind is EventKind.PUT:
                    item = self._found(
                        kind, kind_start, change.key, change.value, change.mod_revision
                    )
                    record = None if item is None else item[1]
                if isinstance(record, Newer):
                    made = event(rel, None)
                    if made is not None and hasattr(made, "newer"):
                        found.append(replace(made, newer=record.version))  # type: ignore[type-var]
                    continue
                made = event(rel, record)
                if made is not None:
                    found.append(made)
            callback(WatchBatch(tuple(found), response.revision))

        return self._etcd.watch(start, range_end, start_revision, on_response)

    def watch_units(
        self,
        callback: Callable[[WatchBatch[events.UnitEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        return self._watch(
            "unit", lambda rel, record: events.UnitEvent(rel, record), callback, start_revision
        )

    def watch_machines(
        self,
        callback: Callable[[WatchBatch[events.MachineEvent]], None],
        start_revision: int | None = None,
        machine: str | None = None,
    ) -> Callable[[], None]:
        """Every machine's record, or with MACHINE only that one (an agent's own; an
        agent whose etcd role predates reading it gets no such watch, said once)."""
        try:
            return self._watch(
                "machines",
                lambda rel, record: events.MachineEvent(rel, record),
                callback,
                start_revision,
                sub=machine,
                exact=machine is not None,
            )
        except EtcdPermissionDenied as exc:
            if machine is None:
                raise
            log_event("machine_watch_refused", machine=machine, error=str(exc))
            return lambda: None

    def watch_metadata(
        self,
        callback: Callable[[WatchBatch[events.MetadataEvent]], None],
        start_revision: int | None = None,
        machine: str | None = None,
    ) -> Callable[[], None]:
        """Operators' metadata overlays: every machine's, or only `machine`'s (its agent
        may read that one key and nothing else of P/metadata)."""
        return self._watch(
            "metadata",
            lambda rel, overlay: events.MetadataEvent(rel, overlay),
            callback,
            start_revision,
            machine,
            exact=True,
        )

    def watch_contents(
        self,
        callback: Callable[[WatchBatch[events.ContentEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        return self._watch(
            "content", lambda rel, text: events.ContentEvent(rel, text), callback, start_revision
        )

    def watch_schedule(
        self,
        callback: Callable[[WatchBatch[events.ScheduleEvent]], None],
        start_revision: int | None = None,
        machine: str | None = None,
    ) -> Callable[[], None]:
        """Every machine's schedule, or only `machine`'s (an agent wakes only for its own)."""

        def event(rel: str, entry: ScheduleEntry | None) -> events.ScheduleEvent:
            owner, _, unit = rel.partition("/")
            return events.ScheduleEvent(owner, unit, entry)

        return self._watch("schedule", event, callback, start_revision, machine)

    def watch_globals(
        self,
        callback: Callable[[WatchBatch[events.ScheduleEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        return self._watch(
            "global",
            lambda rel, entry: events.ScheduleEvent("", rel, entry),
            callback,
            start_revision,
        )

    def watch_reasons(
        self,
        callback: Callable[[WatchBatch[events.ReasonEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        """Why the engine could not place units (what list-unit-files and the API show)."""
        return self._watch(
            "reason", lambda rel, text: events.ReasonEvent(rel, text), callback, start_revision
        )

    def watch_states(
        self,
        callback: Callable[[WatchBatch[events.StateEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        def event(rel: str, state: UnitState | None) -> events.StateEvent:
            machine, _, unit = rel.partition("/")
            return events.StateEvent(unit, machine, state)

        return self._watch("state", event, callback, start_revision)

    def watch_deployments(
        self,
        callback: Callable[[WatchBatch[events.DeploymentEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        """What `fleetpy apply` records of each deployment (commit, applying, message)."""
        return self._watch(
            "deploy",
            lambda rel, record: events.DeploymentEvent(rel, record),
            callback,
            start_revision,
        )

    def watch_engine(
        self,
        callback: Callable[[WatchBatch[events.EngineEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        """The leader key and operators' requests to the engine."""

        def event(rel: str, value: str | None) -> events.EngineEvent | None:
            if rel == "leader":
                return events.EngineEvent(leader=value, leader_changed=True)
            if rel == FORCE_RESCHEDULE:
                return events.EngineEvent(force_reschedule=value is not None)
            if rel == ADOPT:
                return events.EngineEvent(adopt=value is not None)
            return None

        return self._watch("engine", event, callback, start_revision)

    def watch_failures(
        self,
        callback: Callable[[WatchBatch[FailureEvent]], None],
        start_revision: int | None = None,
    ) -> Callable[[], None]:
        """Units' repeated failures on machines (the engine's, for RescheduleOnFailure=)."""

        def event(rel: str, record: FailureRecord | None) -> FailureEvent:
            machine, _, unit = rel.partition("/")
            return FailureEvent(machine, unit, record)

        return self._watch("failure", event, callback, start_revision)

    def watch_cordons(
        self,
        callback: Callable[[WatchBatch[CordonEvent]], None],
        start_revision: int | None = None,
        machine: str | None = None,
    ) -> Callable[[], None]:
        """Operators' cordons of machines (drains, maintenance windows): every machine's,
        or only `machine`'s (its agent may read that one key)."""
        return self._watch(
            "cordon",
            lambda rel, record: CordonEvent(rel, record),
            callback,
            start_revision,
            machine,
            exact=True,
        )
