"""The engine: reconciling desired state into per-machine schedules, while it leads (election.py).

Any number of engines run; one leads, through a key under its etcd lease. The leader
keeps an in-memory model fed by watches on units and machines (resumed from the
revision of its last full read), calls the pure `scheduler.plan_placements(snapshot)`, and writes
the changes in batched transactions, each conditioned on still holding leadership
(fencing). The leader is the only writer of schedule and reason keys, so its model of
them is exact while it leads; any failed write or lost watch triggers a fresh read.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from . import scheduler
from .compaction import CompactionSchedule
from .config import AgentSettings, EngineSettings
from .dependencies import Dependencies
from .drain import Drains
from .election import Election, LostLeadership
from .errors import FleetpyError
from .failures import FailureBook
from .log import log_event
from .machine_loss import Verdict, Witness, judge
from .metadata import Overlay
from .model.changes import (
    ClearAdoptionRequest,
    ClearForceReschedule,
    EngineWrite,
    ForgetFailure,
    PlaceUnit,
    StoreReason,
    UnplaceUnit,
)
from .model.cordons import CordonEvent
from .model.events import ContentEvent, EngineEvent, MachineEvent, MetadataEvent, WatchBatch
from .model.failures import FailureEvent
from .model.records import MachineRecord, ScheduleEntry, UnitRecord
from .registry.roles import EngineRegistry
from .states import DesiredState
from .unitfile.unit import FleetOptions, UnitFile, fleet_options, parse_unit


@dataclass
class EngineStats:
    passes: int = 0
    full_reads: int = 0
    transactions: int = 0
    placements: int = 0  # Schedule + Move changes written
    changes: int = 0
    became_leader: int = 0


@dataclass
class _Model:
    """What the leader knows: etcd's state as of `revision`, plus its own writes."""

    revision: int = 0
    records: dict[str, UnitRecord] = field(default_factory=dict)
    specs: dict[str, scheduler.UnitSpec] = field(default_factory=dict)
    machines: dict[str, scheduler.Machine] = field(default_factory=dict)
    schedule: dict[str, scheduler.Scheduled] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # unit -> why its content is unusable
    # Units a newer fleetpy wrote (their record; their schedule entry, until a fresh read
    # reads it): the engine neither places, moves nor unschedules them.
    newer_units: set[str] = field(default_factory=set)
    newer_entries: set[str] = field(default_factory=set)

    def left_alone(self) -> set[str]:
        return self.newer_units | self.newer_entries


V = TypeVar("V")


def _without(units: Mapping[str, V], names: set[str]) -> Mapping[str, V]:
    return {n: v for n, v in units.items() if n not in names} if names else units


# Agents' TTL when no machine has said its own (their default); and what is added to the
# longest TTL seen to make the grace period (an agent's reconnect and re-registration).
DEFAULT_AGENT_TTL = AgentSettings().ttl
GRACE_MARGIN = 2.0
MAX_RETRY_BACKOFF = 1.0  # an etcd back after an outage is used within about a second
# After a restore, units without a schedule entry are placed where agents report them
# running for this long (a large restore writes its units in several transactions).
ADOPT_WINDOW = 60.0


class Engine:
    """Places units. Never moves a unit because of a gap in its own view of etcd:

    - after it (re)gains leadership, or re-reads after a lost watch or an unreachable
      etcd, machines missing from its view are held for a grace period (the longest
      agent TTL seen plus a margin, or `machine_grace`) before their units move;
    - when more than `mass_loss_fraction` of the machines hosting units (or all of
      them) are missing at once, rescheduling pauses until they return or an operator
      runs `fleetpy force-reschedule`.
    """

    def __init__(
        self,
        registry: EngineRegistry,
        settings: EngineSettings,
        *,
        candidate: str | None = None,
        on_pass: Callable[[float, float], None] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        # Only the leader compacts; its samples start afresh with each leadership (the
        # interval is kept: compaction refused once stays off).
        self._compaction = CompactionSchedule(settings.compaction_interval)
        # Told (plan seconds, whole pass seconds) after each reconcile pass: metrics.
        self._on_pass = on_pass
        self._blind_until = 0.0  # monotonic end of the current grace period
        # Machines found missing when the engine had not been watching (or still away
        # when a pause ended): the grace period is for them. A machine seen going away
        # live, by the watch, is judged at once: its agent had a whole TTL to renew.
        self._grace_for: set[str] = set()
        self._paused = False  # rescheduling paused by a mass loss
        self._force = False  # an operator asked to reschedule despite a pause or grace
        self._adopt_until = 0.0  # monotonic end of a restore's adoption window
        self._adopt_requested = False  # the restore's request key is still to be cleared
        self._ttls: dict[str, int] = {}  # machine -> the TTL its agent registered with
        self._lost_at: dict[str, float] = {}  # machine -> when it stopped reporting
        self._next_judgement: float | None = None  # when a hold (grace, settle) ends
        self._machines: dict[str, MachineRecord] = {}  # last record seen per machine
        self._overlays: dict[str, Overlay] = {}  # operators' metadata, by machine id
        self._failures = FailureBook()  # RescheduleOnFailure=: agents' failure records
        self._drains = Drains()  # operators' cordons, drains and maintenance windows
        self._deps = Dependencies()  # Requires=/BindsTo=: the states of units required
        self.candidate = candidate or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stats = EngineStats()
        self.is_leader = threading.Event()
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        # Whether etcd answered while machines' leases ran out (machine_loss.judge).
        self._witness = Witness(lambda: self.registry.leader(), self.is_leader.is_set, self._stop)
        self._texts: dict[str, str] = {}  # content hash -> text (immutable, so cacheable)
        self._parsed: dict[tuple[str, str], FleetOptions | str] = {}
        self._files: dict[str, UnitFile | str] = {}  # content hash -> parsed unit
        self._thread: threading.Thread | None = None
        self._cancels: list[Callable[[], None]] = []
        self._generation = 0
        self._election = Election(registry, self.candidate, settings.lease_ttl, self._stop)

    # -- lifecycle

    def start(self) -> Engine:
        self._thread = threading.Thread(target=self.run, name="engine", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the engine's thread to end (stop() was called); True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._cancel_watches()
        self._election.resign()

    def run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if self._campaign():
                    backoff = 0.2
                    self._lead()
            except LostLeadership as exc:
                log_event("leadership_lost", engine=self.candidate, reason=str(exc))
            except Exception as exc:
                # etcd away (or a bug): retry soon, from a fresh read; the grace period
                # that follows covers whatever was missed meanwhile.
                log_event(
                    "engine_retry",
                    engine=self.candidate,
                    error=str(exc) if isinstance(exc, FleetpyError) else repr(exc),
                    retry_in=f"{backoff:.1f}s",
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_RETRY_BACKOFF)
            finally:
                self.is_leader.clear()
                self._cancel_watches()

    # -- election

    def _campaign(self) -> bool:
        """Wait until this candidate leads (True) or the engine is stopped (False)."""
        won = self._election.campaign()
        if won:
            self.stats.became_leader += 1
        return won is not None

    # -- leading

    def _cancel_watches(self) -> None:
        for cancel in self._cancels:
            cancel()
        self._cancels = []

    def _lead(self) -> None:
        self.is_leader.set()
        with self._election.kept():
            self._lead_pass_by_pass()

    def _lead_pass_by_pass(self) -> None:
        model = self._full_read(blind=True)  # new leadership: we saw nothing until now
        self._witness.start()  # leading: the witness keeps what etcd answered from now on
        last_full = time.monotonic()
        self._compaction = CompactionSchedule(self._compaction.interval)
        dirty = True
        while not self._stop.is_set():
            if dirty:  # idle clusters cost nothing but the lease keepalive
                self._reconcile(model)
            now = time.monotonic()
            self._compaction.observe(now, model.revision)
            self._compact(now)
            settings = self.settings
            timeout = max(
                0.05, min(settings.lease_ttl / 3, last_full + settings.reconcile_interval - now)
            )
            judgement = self._next_judgement
            if judgement is not None:
                timeout = max(0.01, min(timeout, judgement - now + 0.01))
            looks = min(self._deps.wait(now), self._drains.wait(now))
            resync, dirty = self._wait_for_events(model, min(timeout, looks))
            dirty = self._deps.changed(model.schedule, self.registry.unit_states) or dirty
            # Units moved off a draining machine: a pass once one of them has arrived.
            dirty = self._drains.changed(model.reasons, self.registry.unit_states) or dirty
            self._election.keep_alive()
            if judgement is not None and time.monotonic() >= judgement:
                dirty = True  # a hold ended: machines still missing are judged again
            if resync or time.monotonic() - last_full >= self.settings.reconcile_interval:
                model = self._full_read(blind=resync)
                self._collect_garbage(model)
                last_full = time.monotonic()
                dirty = True

    def _compact(self, now: float) -> None:
        """Compact etcd's history when the schedule says so. A failure is not the
        leader's business (it is retried at the next pass); a refusal (this engine's
        etcd user may not compact) turns compaction off, said once."""
        target = self._compaction.due(now)
        if target is None:
            return
        try:
            permitted = self.registry.compact_history(target)
        except FleetpyError as exc:
            log_event("compaction_failed", engine=self.candidate, revision=target, error=str(exc))
            self._compaction.failed(now)
            return
        if not permitted:
            log_event("compaction_off", engine=self.candidate, reason="etcd permission denied")
            self._compaction.interval = 0
            return
        self._compaction.done(target)
        log_event("history_compacted", engine=self.candidate, revision=target)

    # -- machines out of touch

    def grace_seconds(self) -> float:
        if self.settings.machine_grace is not None:
            return self.settings.machine_grace
        return max(self._ttls.values(), default=DEFAULT_AGENT_TTL) + GRACE_MARGIN

    def _remember_machine(self, record: MachineRecord) -> None:
        self._machines[record.id] = record
        if record.ttl > 0:
            self._ttls[record.id] = record.ttl

    def _window(self) -> float:
        return float(max(self._ttls.values(), default=DEFAULT_AGENT_TTL))

    def _held(self, model: _Model) -> dict[str, str]:
        """Missing machines whose units stay where they are for now, and why."""
        now = time.monotonic()
        alive = model.machines.keys()
        hosting = {entry.machine for entry in model.schedule.values()}
        for machine in list(self._lost_at):
            # Back, or gone long ago and hosting nothing: no longer a recent loss.
            if machine in alive or (
                now - self._lost_at[machine] > self._window() and machine not in hosting
            ):
                del self._lost_at[machine]
        stranded = sorted(hosting - alive)
        for machine in stranded:
            self._lost_at.setdefault(machine, now)
        self._next_judgement = None
        if not stranded or self._force:
            if self._paused:
                self._paused = False
                log_event("rescheduling_resumed", engine=self.candidate, forced=self._force or None)
            return {}
        # Machines lost within one TTL (moved already or not) against the cluster as it
        # was: a large share gone together is an outage of etcd or the network, not of
        # the machines; moving everything would only stop every unit.
        lost = len(self._lost_at)
        known = len(alive | self._lost_at.keys())
        if lost == known or lost > self.settings.mass_loss_fraction * known:
            why = (
                f"{lost} of {known} machines stopped reporting together; rescheduling "
                "is paused until they return (or `fleetpy force-reschedule`)"
            )
            if not self._paused:
                self._paused = True
                log_event(
                    "rescheduling_paused",
                    engine=self.candidate,
                    missing=lost,
                    machines=known,
                    threshold=self.settings.mass_loss_fraction,
                    sample=",".join(sorted(self._lost_at)[:5]),
                )
            return dict.fromkeys(stranded, why)
        if self._paused:
            # Some came back: the rest are likely on their way (agents re-register one by
            # one after an outage), so they get a grace period as after the engine's own.
            self._paused = False
            self._blind_until = max(self._blind_until, now + self.grace_seconds())
            self._grace_for.update(stranded)
            log_event(
                "rescheduling_resumed",
                engine=self.candidate,
                missing=lost,
                grace=f"{self.grace_seconds():g}s",
            )
        self._grace_for &= set(stranded)
        settling: dict[str, float] = {}  # machine -> when to judge it again
        rounds = self._witness.rounds()
        for machine in stranded:
            if machine in self._grace_for:
                continue
            lost_at = self._lost_at[machine]
            seen = judge(lost_at, self._ttls.get(machine, DEFAULT_AGENT_TTL), rounds, now)
            if seen.verdict is Verdict.SETTLING and seen.until is not None:
                settling[machine] = seen.until
            elif seen.verdict is Verdict.DOUBTFUL:
                # etcd was silent while its lease ran out: it may have been revoked for
                # that, and its agent is registering again; held as after our own gap.
                self._grace_for.add(machine)
                self._blind_until = max(self._blind_until, lost_at + self.grace_seconds())
                log_event(
                    "machine_loss_doubtful",
                    engine=self.candidate,
                    machine=machine,
                    etcd_silent=f"{seen.silence:.2f}s",
                    grace=f"{self.grace_seconds():g}s",
                )
        held: dict[str, str] = {}
        if now < self._blind_until and self._grace_for:
            why = (
                f"the engine had lost sight of it; waiting up to "
                f"{self._blind_until - now:.0f}s more for its agent to report"
            )
            held = dict.fromkeys(sorted(self._grace_for), why)
            self._next_judgement = self._blind_until
        held.update((machine, "") for machine in settling if machine not in held)
        if settling:
            settled = min(settling.values())
            self._next_judgement = min(self._next_judgement or settled, settled)
        return held

    def _snapshot(self, model: _Model) -> scheduler.Snapshot:
        machines: dict[str, scheduler.Machine] = dict(model.machines)
        held = self._held(model) | self._drains.holds(model.schedule, machines.keys())
        for machine, why in held.items():
            last = self._machines.get(machine)
            machines[machine] = scheduler.Machine(
                machine, dict(last.metadata) if last is not None else {}, held=why
            )
        for machine in self._drains.records.keys() & machines.keys():
            machines[machine] = replace(machines[machine], cordoned=True)
        # Units held loaded for their dependencies: a drain moves them as loaded ones.
        specs, waiting = self._deps.pass_plan(
            model.specs, model.schedule, machines, self.registry.unit_states, model.invalid
        )
        drain = self._drains.pass_plan(
            model.schedule, specs, model.reasons, model.machines.keys(), self.registry.unit_states
        )
        invalid = {
            name: scheduler.InvalidUnit(name, model.records[name].desired, why)
            for name, why in model.invalid.items()
        }
        alone = model.left_alone()
        policies = self._failures.policies(model.specs)
        expiry = self._failures.next_expiry(policies)
        if expiry is not None:
            self._next_judgement = min(self._next_judgement or expiry, expiry)
        return scheduler.Snapshot(
            _without(specs, alone),
            machines,
            _without(model.schedule, alone),
            _without(model.reasons, alone),
            _without(invalid, alone),
            _without(self._running(model), alone),
            _without(self._failures.avoidances(policies, time.monotonic()), alone),
            _without(drain.evict, alone),
            _without(waiting | drain.notes, alone),
        )

    def _start_adopting(self) -> None:
        self._adopt_until = time.monotonic() + ADOPT_WINDOW
        self._adopt_requested = True
        log_event("adoption_requested", engine=self.candidate, window=f"{ADOPT_WINDOW:g}s")

    def _running(self, model: _Model) -> dict[str, str]:
        """Within a restore's adoption window: unscheduled units that agents report
        running, with the contents they should run, by machine. Read from etcd only
        then (the engine never watches states)."""
        if time.monotonic() >= self._adopt_until:
            return {}
        waiting = {
            name
            for name, spec in model.specs.items()
            if name not in model.schedule and scheduler.is_placeable(spec)
        }
        if not waiting:
            return {}
        return {
            name: machine
            for name, (machine, content_hash) in self.registry.running_units().items()
            if name in waiting and content_hash == model.specs[name].hash
        }

    def _full_read(self, blind: bool) -> _Model:
        """Read everything and restart the watches. `blind`: this read follows a gap in
        the engine's view (new leadership, a lost watch, etcd unreachable), so machines
        missing from it get a grace period before their units move."""
        self._cancel_watches()
        view = self.registry.read_view(with_states=False)
        self._overlays = dict(view.overlays)
        for record in view.machines.values():
            self._remember_machine(record)
        if blind:
            # Machines missing from this read went away while we were not watching.
            hosting = {machine for machine, _ in view.schedule.values()}
            self._grace_for = hosting - view.machines.keys()
            self._blind_until = time.monotonic() + self.grace_seconds()
        self._force = self.registry.force_reschedule_requested()
        self._failures.load(self.registry.read_failures()[1], time.monotonic())
        self._drains.reset(view.cordons)
        if self.registry.adoption_requested():
            self._start_adopting()
        model = _Model(
            revision=view.revision,
            records=dict(view.units),
            machines={m.id: scheduler.Machine.of(m) for m in view.machines.values()},
            schedule={
                unit: scheduler.Scheduled(machine, entry.desired, entry.hash, entry.signature)
                for unit, (machine, entry) in view.schedule.items()
            },
            reasons=dict(view.reasons),
            newer_units=set(view.newer_units),
            newer_entries=set(view.newer_schedule),
        )
        for machine in view.newer_machines:
            # Its record (or operators' overlay) is a newer fleetpy's: its units stay, and
            # nothing new goes there while this engine cannot tell what it offers.
            model.machines[machine] = scheduler.Machine(machine, {}, held="")
        for _unit, (_, entry) in view.schedule.items():
            self._texts.setdefault(entry.hash, entry.text)
        self._load_texts({r.hash for r in model.records.values()})
        for unit_record in model.records.values():
            self._set_spec(model, unit_record)
        # Events queued by earlier watches are already in this read: tag batches with a
        # generation and drop the stale ones.
        self._generation += 1
        generation = self._generation
        # Content comes with its unit record in one transaction: watching it saves the
        # engine a read per new unit file (a unit event seen first still falls back to one).
        watches: tuple[Callable[..., Callable[[], None]], ...] = (
            self.registry.watch_units,
            self.registry.watch_machines,
            self.registry.watch_metadata,
            self.registry.watch_contents,
            self.registry.watch_engine,
            self.registry.watch_failures,
            self.registry.watch_cordons,
        )
        for watch in watches:
            self._cancels.append(
                watch(
                    lambda batch: self._queue.put(("batch", (generation, batch))), view.revision + 1
                )
            )
        self.stats.full_reads += 1
        log_event(
            "engine_synced",
            engine=self.candidate,
            revision=view.revision,
            units=len(model.records),
            machines=len(model.machines),
        )
        return model

    def _load_texts(self, hashes: set[str]) -> None:
        missing = sorted(h for h in hashes if h not in self._texts)
        if missing:
            self._texts.update(self.registry.get_contents(missing))

    def _set_spec(self, model: _Model, record: UnitRecord) -> None:
        options = self._options(record.name, record.hash)
        if isinstance(options, str):
            model.invalid[record.name] = options
            model.specs.pop(record.name, None)
            return
        model.invalid.pop(record.name, None)
        model.specs[record.name] = scheduler.UnitSpec(
            record.name, record.hash, record.desired, options, record.signature, record.revision
        )

    def _options(self, name: str, content_hash: str) -> FleetOptions | str:
        key = (name, content_hash)
        if key not in self._parsed:
            unit = self._unit_file(content_hash)
            if isinstance(unit, str):
                self._parsed[key] = unit
            else:
                try:
                    self._parsed[key] = fleet_options(unit, name)
                except FleetpyError as exc:
                    self._parsed[key] = str(exc)
        return self._parsed[key]

    def _unit_file(self, content_hash: str) -> UnitFile | str:
        """A content's parsed unit, once per hash (10,000 instances of one template
        are one parse); a string says why there is none."""
        unit = self._files.get(content_hash)
        if unit is None:
            text = self._texts.get(content_hash)
            if text is None:
                return f"content {content_hash[:7]} is missing"
            try:
                unit = parse_unit(text, content_hash[:7])
            except FleetpyError as exc:
                unit = str(exc)
            self._files[content_hash] = unit
        return unit

    def _wait_for_events(self, model: _Model, timeout: float) -> tuple[bool, bool]:
        """Apply queued watch events to the model: (do a full read, anything changed)."""
        try:
            kind, payload = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False, False
        batches: list[WatchBatch[Any]] = []
        while True:
            if kind == "stop":
                return False, False
            generation, batch = payload
            if generation == self._generation:
                batches.append(batch)
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
        new_records: list[UnitRecord] = []
        for batch in batches:
            if batch.error is not None:
                log_event(
                    "watch_lost",
                    engine=self.candidate,
                    compacted=batch.compacted,
                    error=type(batch.error).__name__,
                )
                return True, True
            for event in batch.events:
                if isinstance(event, ContentEvent):
                    if event.text is not None:
                        self._texts[event.hash] = event.text
                elif isinstance(event, EngineEvent):
                    if event.force_reschedule:
                        self._force = True
                        log_event("force_reschedule_requested", engine=self.candidate)
                    if event.adopt:
                        self._start_adopting()
                elif isinstance(event, MachineEvent):
                    self._machine_event(model, event)
                elif isinstance(event, MetadataEvent):
                    self._metadata_event(model, event)
                elif isinstance(event, FailureEvent):
                    self._failures.apply(event, time.monotonic())
                    if event.record is not None:
                        log_event("unit_failures_reported", unit=event.unit, machine=event.machine)
                elif isinstance(event, CordonEvent):
                    self._drains.event(event)
                elif event.record is None:
                    model.records.pop(event.name, None)
                    model.specs.pop(event.name, None)
                    model.invalid.pop(event.name, None)
                    if event.newer:
                        model.newer_units.add(event.name)
                    else:
                        model.newer_units.discard(event.name)
                else:
                    model.newer_units.discard(event.name)
                    model.records[event.name] = event.record
                    new_records.append(event.record)
            model.revision = max(model.revision, batch.revision)
        self._load_texts({r.hash for r in new_records})
        for record in new_records:
            if model.records.get(record.name) is record:
                self._set_spec(model, record)
        return False, True

    def _machine_event(self, model: _Model, event: MachineEvent) -> None:
        record = event.record
        if event.newer:
            model.machines[event.machine] = scheduler.Machine(event.machine, {}, held="")
            return
        if record is None:
            if model.machines.pop(event.machine, None) is not None:
                self._lost_at.setdefault(event.machine, time.monotonic())
                self._witness.poke()  # a round that began after the loss confirms it
            log_event("machine_gone", machine=event.machine)
            return
        record = replace(record, operator_metadata=self._overlays.get(record.id, {}))
        self._remember_machine(record)
        if event.machine not in model.machines:
            log_event("machine_joined", machine=event.machine)
        model.machines[event.machine] = scheduler.Machine.of(record)

    def _metadata_event(self, model: _Model, event: MetadataEvent) -> None:
        """Operators changed a machine's metadata: units are placed by the new one (the
        pass that follows may move units that no longer fit, or place waiting ones)."""
        overlay = event.overlay or {}
        if overlay:
            self._overlays[event.machine] = overlay
        else:
            self._overlays.pop(event.machine, None)
        record = self._machines.get(event.machine)
        if record is not None:
            record = replace(record, operator_metadata=overlay)
            self._remember_machine(record)
            if event.machine in model.machines:
                model.machines[event.machine] = scheduler.Machine.of(record)
        log_event("machine_metadata_changed", machine=event.machine, keys=len(overlay))

    # -- reconcile

    def _reconcile(self, model: _Model) -> None:
        self.stats.passes += 1
        started = time.perf_counter()
        forced = self._force
        snapshot = self._snapshot(model)
        changes = list(scheduler.plan_placements(snapshot))
        planned = time.perf_counter()
        if changes:
            self._execute(model, changes)
            counts: dict[str, int] = {}
            for change in changes:
                counts[type(change).__name__.lower()] = (
                    counts.get(type(change).__name__.lower(), 0) + 1
                )
            adopted = sum(
                1
                for c in changes
                if isinstance(c, scheduler.Schedule) and snapshot.running.get(c.unit) == c.machine
            )
            log_event("engine_pass", engine=self.candidate, **counts, adopted=adopted or None)
        # Operators' one-shot requests are cleared once this pass is written, in one
        # fenced transaction. The adoption window lives on in this engine; its key only
        # carried the request here.
        clears: list[EngineWrite] = []
        if forced:
            clears.append(ClearForceReschedule())
        if self._adopt_requested:
            clears.append(ClearAdoptionRequest())
        # Failure records whose backoff ended (or whose unit went): deleted by the leader.
        expired = self._failures.expired(self._failures.policies(model.specs), time.monotonic())
        groups = [clears] if clears else []
        groups += [[ForgetFailure(machine, unit)] for machine, unit in expired]
        if groups:
            if not self.registry.engine_write(self.candidate, groups):
                raise LostLeadership("a fenced write was refused")
            self._adopt_requested = False
        for machine, unit in expired:
            self._failures.forgotten(machine, unit)
            log_event("unit_failures_forgotten", unit=unit, machine=machine)
        if forced:
            self._force = False
            log_event("force_reschedule_done", engine=self.candidate)
        if self._on_pass is not None:
            self._on_pass(planned - started, time.perf_counter() - started)

    def _execute(self, model: _Model, planned: list[scheduler.Change]) -> None:
        changes = scheduler.grouped_by_machine(planned)

        def written(start: int, end: int) -> None:
            self.stats.transactions += 1
            for change in changes[start:end]:
                self._apply_to_model(model, change)

        groups = [self._writes(change) for change in changes]
        if not self.registry.engine_write(
            self.candidate, groups, written, before_each=self._election.keep_alive
        ):
            raise LostLeadership("a fenced write was refused")
        self.stats.changes += len(changes)

    def _entry(
        self, unit: str, desired: DesiredState, content_hash: str, signature: str | None
    ) -> ScheduleEntry:
        text = self._texts.get(content_hash, "")
        return ScheduleEntry(unit, content_hash, desired, text, signature)

    def _writes(self, change: scheduler.Change) -> list[EngineWrite]:
        """The registry writes of one change: written together, in one transaction."""
        if isinstance(change, scheduler.Move):
            # Off the old machine and onto the new at once; never on both.
            return [
                UnplaceUnit(change.from_machine, change.unit),
                PlaceUnit(
                    change.to_machine,
                    self._entry(change.unit, change.desired, change.hash, change.signature),
                ),
            ]
        if isinstance(change, (scheduler.Schedule, scheduler.Retarget)):
            return [
                PlaceUnit(
                    change.machine,
                    self._entry(change.unit, change.desired, change.hash, change.signature),
                )
            ]
        if isinstance(change, scheduler.Unschedule):
            return [UnplaceUnit(change.machine, change.unit)]
        return [StoreReason(change.unit, change.reason)]

    def _apply_to_model(self, model: _Model, change: scheduler.Change) -> None:
        if isinstance(change, (scheduler.Schedule, scheduler.Move, scheduler.Retarget)):
            machine = change.to_machine if isinstance(change, scheduler.Move) else change.machine
            model.schedule[change.unit] = scheduler.Scheduled(
                machine, change.desired, change.hash, change.signature
            )
            if not isinstance(change, scheduler.Retarget):
                self.stats.placements += 1
            if isinstance(change, scheduler.Move):
                log_event(
                    "unit_moved", unit=change.unit, machine=machine, moved_from=change.from_machine
                )
        elif isinstance(change, scheduler.Unschedule):
            model.schedule.pop(change.unit, None)
        elif isinstance(change, scheduler.SetReason):
            if change.reason is None:
                model.reasons.pop(change.unit, None)
            else:
                model.reasons[change.unit] = change.reason
                log_event("unit_unplaceable", unit=change.unit, reason=change.reason)

    def _collect_garbage(self, model: _Model) -> None:
        """Delete content blobs no unit refers to (destroy leaves them behind), and
        forget cached texts and parsed options of units that are gone."""
        used = {r.hash for r in model.records.values()}
        scheduled = {s.hash for s in model.schedule.values()}
        self._texts = {h: t for h, t in self._texts.items() if h in used or h in scheduled}
        self._files = {h: f for h, f in self._files.items() if h in used}
        self._parsed = {
            key: v
            for key, v in self._parsed.items()
            if key[0] in model.records and model.records[key[0]].hash == key[1]
        }
        if model.newer_units:
            return  # which content a newer fleetpy's unit records name is not known here
        unused = {
            h: rev
            for h, rev in self.registry.list_content().items()
            if h not in used and rev <= model.revision
        }
        if unused:
            self.registry.delete_content(unused)
