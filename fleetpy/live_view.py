"""One watch-fed view of the cluster: read once, then kept current by the registry's watches.

The CLI's blocking wait (client.waiting.wait_for) and the API server (fleetpy.api) both read the
cluster through this, so there is one way of following it. Events patch the view in place of
re-reading everything (a full read carries every unit, state and placement); a full read
happens only at start, after a watch broke (etcd gone, revision compacted), or when a caller
asks for one as a backstop, and then the watches restart from that read's revision.

Views are shared snapshots: an update builds new dicts and never mutates a published view,
so a reader may hold one while the next is being made.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from .errors import FleetpyError
from .log import log_event
from .model.cordons import CordonEvent
from .model.events import (
    MachineEvent,
    MetadataEvent,
    ReasonEvent,
    ScheduleEvent,
    StateEvent,
    UnitEvent,
    WatchBatch,
)
from .model.records import ClusterView
from .registry.roles import ClusterReader

# Coalesce a burst of watch events into one update.
SETTLE_SECONDS = 0.05
# After a failed re-read (etcd down), try again this often; the last view stays served.
RETRY_SECONDS = 1.0

ViewEvent = (
    UnitEvent
    | ReasonEvent
    | StateEvent
    | ScheduleEvent
    | MachineEvent
    | MetadataEvent
    | CordonEvent
)


@dataclass(frozen=True)
class Touched:
    """What one update may have changed: the units whose record, reason, placement or
    states, and the machines whose record, metadata or units, an event named."""

    units: frozenset[str]
    machines: frozenset[str]


# Called after every change with what it touched; None after a full read (anything may have).
Listener = Callable[[ClusterView, Touched | None], None]


class LiveView:
    """A ClusterView (without schedule texts) kept current from watch events.

    `update()` applies the events received so far; `follow()` does that in a thread of its
    own for a long-lived reader (the API server), whose readers call `current()` and never
    touch etcd. With `contents=True` it also keeps the text of every unit's contents (by
    hash; contents never change under a hash, so each is read once).
    """

    def __init__(self, registry: ClusterReader, *, contents: bool = False) -> None:
        self.registry = registry
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.pending: list[WatchBatch[Any]] = []
        self.touched: set[tuple[str, str]] = set()  # (unit, machine) reported since we began
        self.broken = False
        self.cancels: list[Callable[[], None]] = []
        # Watches of an earlier read still deliver for a moment after a resync cancels them;
        # their batches carry the generation they were started in and are dropped.
        self.generation = 0
        self.with_contents = contents
        self.texts: dict[str, str] = {}  # content hash -> unit text
        self.resyncs = 0  # full reads, for tests and logs
        self._changed = threading.Condition()
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.view = self.resync()

    # -- following

    def _on(self, generation: int, batch: WatchBatch[Any]) -> None:
        with self.lock:
            if generation != self.generation:
                return
            if batch.error is not None:
                self.broken = True
            self.pending.append(batch)
            self.touched.update(
                (e.unit, e.machine) for e in batch.events if isinstance(e, StateEvent)
            )
        self.wake.set()

    def resync(self) -> ClusterView:
        """A full read, and the watches restarted from its revision."""
        self._cancel()
        view = self.registry.read_view(with_text=False, piecewise=True)
        with self.lock:
            self.pending.clear()
            self.broken = False
            self.generation += 1
            on = functools.partial(self._on, self.generation)
        after = view.revision + 1
        self.cancels = [
            self.registry.watch_units(on, after),
            self.registry.watch_reasons(on, after),
            self.registry.watch_states(on, after),
            self.registry.watch_schedule(on, after),
            self.registry.watch_machines(on, after),
            self.registry.watch_metadata(on, after),
            self.registry.watch_cordons(on, after),
        ]
        self.resyncs += 1
        if self.with_contents:
            wanted = {r.hash for r in view.units.values()}
            self.texts = {h: t for h, t in self.texts.items() if h in wanted}
            self._fetch_texts(view)
        self._publish(view, None)
        return view

    def update(self) -> ClusterView:
        """Apply the events received so far (a full re-read if a watch broke)."""
        with self.lock:
            batches, self.pending = self.pending, []
            broken = self.broken
        if broken:
            return self.resync()
        view = self.view
        # Every watch starts after the read, so each batch is new, whatever its revision:
        # the watches progress independently, and one may lag behind another.
        batches = [b for b in batches if b.events]
        if not batches:
            if self.with_contents:
                self._fetch_texts(view)  # retry texts a failed read left out
            return view
        events = [e for b in batches for e in b.events]
        view = apply_events(view, events)
        view = replace(view, revision=max(view.revision, *(b.revision for b in batches)))
        if self.with_contents:
            self._fetch_texts(view)
        self._publish(view, touched(events))
        return view

    def _fetch_texts(self, view: ClusterView) -> None:
        missing = sorted({r.hash for r in view.units.values()} - self.texts.keys())
        if missing:
            try:
                self.texts.update(self.registry.get_contents(missing))
            except FleetpyError as exc:  # the next update tries again
                log_event("view_contents_failed", missing=len(missing), error=exc)

    def _publish(self, view: ClusterView, changed: Touched | None) -> None:
        with self._changed:
            self.view = view
            self._changed.notify_all()
        for listener in list(self._listeners):
            try:
                listener(view, changed)
            except Exception as exc:  # one reader's bug must not stop the view for all
                log_event("view_listener_failed", listener=listener, error=repr(exc))

    def fresh(self, unit: str, machine: str) -> bool:
        """Whether `machine` reported `unit` since this view began."""
        with self.lock:
            return (unit, machine) in self.touched

    # -- for long-lived readers

    def current(self) -> ClusterView:
        return self.view

    def text(self, content_hash: str) -> str | None:
        return self.texts.get(content_hash)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(view, touched)` after every change (in the following thread)."""
        self._listeners.append(listener)

    def wait_revision(self, revision: int, timeout: float) -> bool:
        """Block until the view includes `revision` (a write just made): read-your-writes."""
        return self.wait_until(lambda view: view.revision >= revision, timeout)

    def wait_until(self, done: Callable[[ClusterView], bool], timeout: float) -> bool:
        """Block until `done(view)` holds for the current view, or `timeout` passed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.view):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def follow(self) -> LiveView:
        """Keep the view current in a thread of its own until close()."""
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        run_coalesced(self.wake, self._stop, self.update, self._failed)

    def _failed(self, error: FleetpyError) -> None:
        log_event("view_resync_failed", error=error)
        with self.lock:
            self.broken = True

    def _cancel(self) -> None:
        for cancel in self.cancels:
            cancel()
        self.cancels = []

    def close(self) -> None:
        self._stop.set()
        self.wake.set()
        # Joined first: a resync under way would start watches after an earlier cancel.
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._cancel()


def run_coalesced(
    wake: threading.Event,
    stop: threading.Event,
    step: Callable[[], object],
    failed: Callable[[FleetpyError], None],
) -> None:
    """Run `step` after each `wake` (a burst of wake-ups settles into one step) until
    `stop`; a step that failed (`failed` is told) runs again RETRY_SECONDS later. An
    unexpected exception is a failure too, so a bug in one step never ends the thread
    (readers would be served a stale view for ever)."""
    while not stop.is_set():
        wake.wait()
        if stop.is_set():
            return
        time.sleep(SETTLE_SECONDS)
        wake.clear()
        try:
            step()
        except Exception as exc:
            if not isinstance(exc, FleetpyError):
                exc = FleetpyError(f"unexpected {type(exc).__name__}: {exc}")
            failed(exc)
            stop.wait(RETRY_SECONDS)
            wake.set()


def apply_events(view: ClusterView, events: list[ViewEvent]) -> ClusterView:
    """`view` with `events` applied, in order; the dicts it shares are never changed. A
    dict no event touches is shared with `view` (copied on the first write to it): at
    100,000 units a state report copies the states, not the units too, and a reader that
    keeps something per `view.units` keeps it while no unit record changes."""
    copied: dict[str, dict[str, Any]] = {}

    def own(name: str) -> dict[str, Any]:
        found = copied.get(name)
        if found is None:
            found = copied[name] = dict(getattr(view, name))
        return found

    for event in events:
        if isinstance(event, StateEvent):
            states = own("states")
            by_machine = dict(states.get(event.unit, {}))
            if event.state is not None:
                by_machine[event.machine] = event.state
            else:
                by_machine.pop(event.machine, None)
            if by_machine:
                states[event.unit] = by_machine
            else:
                states.pop(event.unit, None)
        elif isinstance(event, MachineEvent):
            record = event.record
            overlays = copied.get("overlays", view.overlays)
            if record is not None and event.machine in overlays:
                record = replace(record, operator_metadata=overlays[event.machine])
            _set(own("machines"), event.machine, record)
        elif isinstance(event, MetadataEvent):
            _set(own("overlays"), event.machine, event.overlay)
            machines = own("machines")
            if event.machine in machines:
                machines[event.machine] = replace(
                    machines[event.machine], operator_metadata=event.overlay or {}
                )
        elif isinstance(event, CordonEvent):
            _set(own("cordons"), event.machine, event.record)
        elif isinstance(event, UnitEvent):
            _set(own("units"), event.name, event.record)
        elif isinstance(event, ReasonEvent):
            _set(own("reasons"), event.unit, event.reason)
        elif event.entry is not None:
            own("schedule")[event.unit] = (event.machine, replace(event.entry, text=""))
        elif copied.get("schedule", view.schedule).get(event.unit, ("",))[0] == event.machine:
            del own("schedule")[event.unit]
    return replace(view, **cast(dict[str, Any], copied)) if copied else view


def touched(events: list[ViewEvent]) -> Touched:
    """The units and machines `events` name."""
    units: set[str] = set()
    machines: set[str] = set()
    for event in events:
        if isinstance(event, (StateEvent, ScheduleEvent)):
            units.add(event.unit)
            machines.add(event.machine)
        elif isinstance(event, (MachineEvent, MetadataEvent, CordonEvent)):
            machines.add(event.machine)
        elif isinstance(event, UnitEvent):
            units.add(event.name)
        else:
            units.add(event.unit)
    return Touched(frozenset(units), frozenset(machines))


def _set(into: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        into.pop(key, None)
    else:
        into[key] = value


__all__ = ["LiveView", "Touched", "apply_events", "run_coalesced", "touched"]
