"""The host agent: runs the units the engine placed on this machine, plus matching globals.

The agent's decisions are fleetpy.agent_plan's pure functions: which
units it refuses (`screen`: only with trusted keys configured) and the actions for the
rest (`plan_actions`). The Agent class only gathers inputs (etcd watches on this
machine's own schedule prefix and the global prefix, state changes from its unit
manager) and executes actions. The real agent and the simulated host differ only in
the UnitManager they are given.
"""

from __future__ import annotations

import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .accepted_versions import AcceptedVersions
from .agent_plan import DesiredUnit, Policy, plan, select_globals
from .capacity import CapacityReport
from .config import AgentSettings, OnRevoke
from .errors import FleetpyError, UnitNameError
from .failure_count import FailureCounter
from .health import HealthMonitor, HealthSource
from .host_trust import FixedTrust, HostTrust, trust_source
from .log import log_event, stamp
from .machine_orders import MachineOrders
from .metadata import effective
from .model.cordons import CordonEvent
from .model.events import MachineEvent, MetadataEvent, ScheduleEvent, WatchBatch
from .model.records import MachineRecord, ScheduleEntry, UnitState, entries_for
from .registry import MachineIdInUse
from .registry.roles import AgentRegistry
from .resources import Resources
from .states import (
    JOB_PENDING,
    PLACED_STATES,
    ActiveState,
    DesiredState,
    LoadState,
)
from .unitfile.signing import Rejection, TrustedKeys, Verdict
from .unitmanager import (
    Action,
    ObservedUnit,
    StartUnit,
    UnitManager,
    check_unit_file_name,
)

# ----------------------------------------------------------------------------- the agent


# What an agent watches: its schedule, the global units, its operators' metadata.
_AgentEvent = ScheduleEvent | MetadataEvent | MachineEvent | CordonEvent


@dataclass
class AgentStats:
    wakeups: int = 0  # watch responses received on this machine's prefixes
    empty_wakeups: int = 0  # responses with no event for this machine (should stay 0)
    reconciles: int = 0
    actions: int = 0
    resyncs: int = 0
    reports: int = 0  # state reports written (a transaction per 128 states)


REPORT_RETRY = 1.0  # seconds before a state report etcd refused is tried again
# Seconds a report waits for more of a batch's start jobs to end (the first units of a
# big batch are reported within it; the last job's end at once).
REPORT_COALESCE = 0.2


def _starting(observed: Mapping[str, ObservedUnit]) -> bool:
    """Some unit's start job has not ended yet."""
    return any(unit.job == JOB_PENDING for unit in observed.values())


RESTORE_GRACE = 10.0  # seconds a restored prefix's engine gets to place (it takes well under 1)


# The holder has this host's name: most likely this host before a reboot that lost its
# instance token, rather than a clone (whose name usually differs).
_OWN_NAME_HINT = (
    "the holder has this host's name: if it is this host's previous boot, its instance "
    "token (/var/lib/fleetpy) was not kept; it registers when that boot's lease ends "
    "(at most {ttl} s; its units may move meanwhile)"
)


class _DataMissing(Exception):
    """etcd has no fleetpy marker under the prefix while units run here."""


def _rewrites_only(batch: WatchBatch[_AgentEvent]) -> bool:
    """A batch of the agent's own machine record that neither deletes it nor breaks."""
    return (
        batch.error is None
        and bool(batch.events)
        and all(isinstance(e, MachineEvent) and e.record is not None for e in batch.events)
    )


def agent_instance(path: os.PathLike[str] | str) -> str:
    """This agent's instance id: the host's name and a token kept in PATH (on disk, so the
    same across the agent's restarts and the host's reboots: a rebooted host takes its
    registration back at once, before the engine would move its units). A host cloned with
    this file still differs by its name. Made on first use; unwritable: one for this
    process only."""
    host = socket.gethostname()
    try:
        with open(path, encoding="ascii") as existing:
            found = existing.read().strip()
        if found:
            return f"{host}/{found}"
    except (OSError, ValueError):
        pass
    token = secrets.token_hex(8)
    try:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", mode=0o755, exist_ok=True)
        with open(path, "w", encoding="ascii") as new:
            new.write(token + "\n")
    except OSError:
        log_event("agent_instance_not_kept", path=str(path))
    return f"{host}/{token}"


class Agent:
    """One machine's agent. start() returns; work happens on the agent's own threads."""

    def __init__(
        self,
        registry: AgentRegistry,
        manager: UnitManager,
        settings: AgentSettings,
        *,
        trusted: TrustedKeys | HostTrust | FixedTrust | None = None,
        hostname: str | None = None,
        instance: str | None = None,
        health: HealthSource | None = None,
        capacity: Resources | None = None,
        versions: AcceptedVersions | None = None,
    ) -> None:
        """SETTINGS with the machine id read (config.read_machine_id); TRUSTED: the public
        keys whose signatures this machine accepts, fixed or followed as they change
        (fleetpy.host_trust; None: no check, every unit runs);
        VERSIONS: the signed versions accepted here before (None: kept in memory only);
        INSTANCE tells this agent's registration apart from another host's with the same
        machine id (agent_instance(): kept across the agent's restarts; by default this
        process's); HEALTH: where containers' health comes from (None: not followed);
        CAPACITY: the CPUs and memory it offers (None: this host's, measured)."""
        if settings.machine_id is None:
            raise ValueError("an agent needs its machine id")
        self.registry = registry
        self.manager = manager
        self.settings = settings
        self._machine_id = settings.machine_id
        self._trust = trust_source(trusted)
        self.versions = versions or AcceptedVersions()
        self.hostname = hostname or socket.gethostname()
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.stats = AgentStats()
        self.report_coalesce = REPORT_COALESCE
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lease: int | None = None
        self._placed: dict[str, ScheduleEntry] = {}
        self._globals: dict[str, ScheduleEntry] = {}
        self._newer: set[str] = set()  # units whose entry a newer fleetpy wrote: left alone
        self._orders = MachineOrders(self._machine_id)  # its metadata overlay, its cordon
        self._reported: dict[str, UnitState] = {}
        self._rejected: dict[str, tuple[str, Verdict]] = {}  # replaced whole, never mutated
        self._kept: dict[str, Verdict] = {}  # on_revoke=keep: running, key withdrawn
        self._cancels: list[Callable[[], None]] = []
        self._synced = False
        self._generation = 0  # bumped by every fresh read; older watch events are dropped
        self._resync_pending = threading.Event()
        self._states_changed = threading.Event()
        self._report_lock = threading.Lock()
        self._refused_names: set[str] = set()  # warned about once each
        self.ready = threading.Event()
        self._held = False  # holding units while etcd lost fleetpy's data (_DataMissing)
        self._data_back_at: float | None = None  # when the held data was seen back
        self._health = HealthMonitor(self._machine_id, health, self._health_changed)
        self.resources = CapacityReport(manager, capacity)
        # RescheduleOnFailure=: failures of units placed here; count_failure takes any source's.
        self.failures = FailureCounter(
            self._machine_id,
            lambda name: self._placed.get(name),
            lambda: self._queue.put(("failure", None)),  # written from the loop
            lambda record: self.registry.report_failure(record),
        )

    @property
    def machine_id(self) -> str:
        return self._machine_id

    @property
    def trusted(self) -> TrustedKeys | None:
        """The keys whose signatures count here now (None: units are not verified)."""
        return self._trust.current()

    # -- lifecycle

    def start(self) -> Agent:
        self.manager.set_listener(self._on_state)
        self._trust.start(lambda: self._queue.put(("trust", None)))  # screened again
        self._threads = [
            threading.Thread(target=self._loop, name=f"agent-{self.machine_id[:8]}", daemon=True),
            threading.Thread(
                target=self._keepalive, daemon=True, name=f"lease-{self.machine_id[:8]}"
            ),
            threading.Thread(
                target=self._reporter, daemon=True, name=f"report-{self.machine_id[:8]}"
            ),
            # Its own thread: a systemd slow to answer never delays a lease renewal.
            threading.Thread(target=self._usage, daemon=True, name=f"usage-{self.machine_id[:8]}"),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _on_state(self, unit: ObservedUnit) -> None:
        self.failures.observe(unit.name, unit.active, unit.sub, unit.job, unit.message)
        self._states_changed.set()

    def _reporter(self) -> None:
        """Report state changes as systemd signals them, not after the whole round: a
        change is reported within 20 ms (a burst of signals: one transaction). While
        started units' jobs are still running after that, their changes are gathered
        for up to report_coalesce each (the first units of a big batch show as active
        while the rest start, in a few transactions, not one per 20 ms), and the last
        job's end is reported at once."""
        failing = False  # said once until a report goes through again
        starting = False  # the last report had start jobs still running
        while not self._stop.is_set():
            self._states_changed.wait()  # stop() sets it too: no periodic wake-up
            if self._stop.is_set():
                return
            deadline = time.monotonic() + (self.report_coalesce if starting else 0.0)
            while True:
                time.sleep(0.02)  # coalesce a burst of signals into one transaction
                self._states_changed.clear()
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set() or not _starting(self.manager.observe()):
                    break
                self._states_changed.wait(left)  # the next change, or the deadline
            observed = self.manager.observe()
            starting = _starting(observed)
            try:
                self._report(observed)
                failing = False
            except FleetpyError as exc:
                # etcd away (the loop also resyncs when it is back) or refusing writes
                # (full: NOSPACE), where nothing else would ever report this change.
                if not failing:
                    log_event("report_failed", machine=self.machine_id, error=str(exc))
                failing = True
                if not self._stop.wait(REPORT_RETRY):
                    self._states_changed.set()

    def stop(self, revoke: bool = True) -> None:
        """Stop the agent. Units keep running (a restarted agent adopts them)."""
        self._stop.set()
        self._states_changed.set()
        self._queue.put(("stop", None))
        self._health.close()
        self._trust.close()
        for cancel in self._cancels:
            cancel()
        for thread in self._threads:
            thread.join(timeout=5)
        if revoke and self._lease is not None:
            try:
                self.registry.revoke_lease(self._lease)
            except FleetpyError:
                pass

    def wait(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(1.0)

    # -- etcd side

    def _register(self) -> None:
        lease = self.registry.grant_lease(self.settings.ttl)
        used = self.resources.measure()
        record = self._record(used)
        with self._report_lock:
            # States lived under the old lease: written again, with the record.
            current = self._states(self.manager.observe())
            self.registry.register_machine(record, lease, list(current.values()))
            # Only a lease that carries the machine record counts as registered: if the
            # write failed, the next sync registers again.
            self._lease = lease
            self._reported = current
            self.resources.reported = used
        self._states_changed.set()  # whatever changed since
        log_event(
            "machine_registered",
            machine=self.machine_id,
            lease=f"{self._lease:x}",
            ttl=self.settings.ttl,
        )

    def _record(self, used: Resources | None) -> MachineRecord:
        settings = self.settings
        return MachineRecord(
            self.machine_id,
            settings.public_ip,
            dict(settings.metadata),
            self.hostname,
            settings.ttl,
            self.instance,
            capacity=self.resources.capacity,
            used=used,
        )

    def _keepalive(self) -> None:
        interval = max(0.5, self.settings.ttl / 3)
        while not self._stop.wait(interval):
            if any(v.reason is Rejection.FUTURE for _, v in self._rejected.values()):
                self._queue.put(("health", None))  # screened again as this clock moves on
            lease = self._lease
            if lease is None:
                continue
            try:
                if self.registry.refresh_lease(lease) <= 0:
                    log_event("lease_expired", machine=self.machine_id)
                    self._request_resync()
            except FleetpyError as exc:
                if not self._resync_pending.is_set():
                    log_event("etcd_unreachable", machine=self.machine_id, error=str(exc))
                self._request_resync()

    def _usage(self) -> None:
        """Write the machine record again when its units' usage moved past the threshold
        (fleetpy.capacity), measured as often as the lease is renewed."""
        failing = False  # said once until a write goes through again
        while not self._stop.wait(max(0.5, self.settings.ttl / 3)):
            lease = self._lease
            if lease is None:
                continue
            try:
                used = self.resources.due()
                if used is not None:
                    with self._report_lock:  # the record as registered, its usage now
                        if self._lease == lease:
                            self.registry.register_machine(self._record(used), lease)
                            self.resources.reported = used
                failing = False
            except FleetpyError as exc:  # etcd or systemd away: measured again next time
                if not failing:
                    log_event("usage_not_reported", machine=self.machine_id, error=str(exc))
                failing = True

    def _request_resync(self) -> None:
        # One pending resync is enough however long etcd stays away.
        if not self._resync_pending.is_set():
            self._resync_pending.set()
            self._queue.put(("resync", self._generation))

    def _on_watch(self, batch: WatchBatch[_AgentEvent], kind: str, generation: int) -> None:
        if generation != self._generation:
            return  # a watch from before the last fresh read; its events are stale
        if kind == "machine" and _rewrites_only(batch):
            return  # its own record written again (its usage): only a deletion matters
        self.stats.wakeups += 1
        if batch.error is None and not batch.events:
            self.stats.empty_wakeups += 1
        self._queue.put((kind, (generation, batch)))

    def _sync(self) -> None:
        """Fresh read of this machine's schedule and the globals; (re)start watches."""
        for cancel in self._cancels:
            cancel()
        self._cancels = []
        self._generation += 1
        generation = self._generation
        self._resync_pending.clear()
        if self._lease is None or self.registry.refresh_lease(self._lease) <= 0:
            self._register()
        revision, placed, globals_, newer = self.registry.read_machine_schedule(self.machine_id)
        if not placed and not newer and self.manager.observe():
            if not self.registry.layout_present():
                self._data_back_at = None
                raise _DataMissing()
            if self._held and not self._engine_had_time():
                raise _DataMissing()  # restored: give the engine time to place here again
        self._held = False
        self._placed, self._globals, self._newer = placed, globals_, set(newer)
        self._cancels += self._orders.follow(  # their events go the metadata's way
            self.registry, lambda b: self._on_watch(b, "metadata", generation)
        )
        self._cancels += self._trust.follow(  # the trust record's too
            self.registry, lambda b: self._on_watch(b, "metadata", generation)
        )
        self._cancels.append(
            self.registry.watch_schedule(
                lambda b: self._on_watch(b, "schedule", generation),
                revision + 1,
                machine=self.machine_id,
            )
        )
        self._cancels.append(
            self.registry.watch_globals(
                lambda b: self._on_watch(b, "global", generation), revision + 1
            )
        )
        # Its own record deleted while the lease lives (by hand, or `etcdctl del --prefix`):
        # register again, or the engine would never place anything here.
        self._cancels.append(
            self.registry.watch_machines(
                lambda b: self._on_watch(b, "machine", generation),
                revision + 1,
                machine=self.machine_id,
            )
        )
        self.failures.flush()
        self.stats.resyncs += 1
        self._synced = True

    def _apply_batch(self, kind: str, batch: WatchBatch[_AgentEvent]) -> bool:
        if batch.error is not None:
            log_event(
                "watch_lost",
                machine=self.machine_id,
                kind=kind,
                compacted=batch.compacted,
                error=type(batch.error).__name__,
            )
            return False
        target = self._placed if kind == "schedule" else self._globals
        for event in batch.events:
            if self._orders.apply(event) or self._trust.apply(event):
                continue
            if not isinstance(event, ScheduleEvent):
                continue  # this machine's record: handled in _drain
            if event.entry is None:
                target.pop(event.unit, None)
            else:
                target[event.unit] = event.entry
            if event.newer:
                self._newer.add(event.unit)
            else:
                self._newer.discard(event.unit)
        return True

    # -- the loop

    def _loop(self) -> None:
        backoff = 0.2
        in_use = False  # said once while another agent holds this machine id
        while not self._stop.is_set():
            try:
                if not self._synced:
                    self._sync()
                    self._reconcile()
                    self.ready.set()
                    backoff, in_use = 0.2, False
                self._drain()
            except _DataMissing:
                # etcd lost fleetpy's data: an empty schedule is not an order to stop
                # what runs here. Hold until the data is back (restored or written anew).
                self._synced = False
                if not self._held:
                    # Its machine record went with the data: register anew (the old
                    # lease expires by itself), so the engine can place here again; at
                    # once, with what runs here, for a restore to adopt (else next sync).
                    self._lease = None
                    try:
                        self._register()
                    except FleetpyError:
                        pass
                    log_event(
                        "fleetpy_data_missing",
                        machine=self.machine_id,
                        units=len(self.manager.observe()),
                        action="holding every unit as it runs until the prefix is restored",
                    )
                self._held = True
                if self._stop.wait(1.0):
                    return
            except MachineIdInUse as exc:
                # Another host holds this id: run nothing, say so once, and wait for its
                # registration to end (an earlier boot's lease running out does).
                self._synced = False
                if not in_use:
                    own_name = exc.holder.hostname == self.hostname
                    log_event(
                        "machine_id_in_use",
                        machine=self.machine_id,
                        error=str(exc),
                        hint=_OWN_NAME_HINT.format(ttl=exc.holder.ttl) if own_name else None,
                    )
                in_use = True
                if self._stop.wait(max(1.0, self.settings.ttl / 3)):
                    return
            except Exception as exc:
                # etcd away (or a unit manager hiccup): units keep running; retry with
                # backoff and resync from a fresh read.
                self._synced = False
                log_event(
                    "agent_retry",
                    machine=self.machine_id,
                    error=str(exc) if isinstance(exc, FleetpyError) else repr(exc),
                    retry_in=f"{backoff:.1f}s",
                )
                # Health needs no etcd: an unhealthy container is restarted meanwhile too.
                self._health.restart_unhealthy(self.manager, self._unhealthy_restarted)
                if self._stop.wait(backoff):
                    return
                # At most a second: etcd back after an outage must be used at once, before
                # this machine's lease (restored by etcd with about one TTL) runs out.
                backoff = min(backoff * 2, 1.0)

    def _drain(self) -> None:
        kind, payload = self._queue.get()
        needs_reconcile = False
        while True:
            if kind == "stop":
                return
            if kind == "resync" and payload == self._generation:
                self._synced = False
                return
            if kind == "failure":
                self.failures.flush()
            elif kind == "machine":
                generation, batch = payload
                if generation != self._generation:
                    pass  # a watch from before the last fresh read
                elif batch.error is not None:
                    self._synced = False  # the stream broke: a fresh read, same lease
                    return
                elif any(
                    isinstance(e, MachineEvent) and e.record is None and not e.newer
                    for e in batch.events
                ):
                    log_event("machine_record_gone", machine=self.machine_id)
                    self._lease, self._synced = None, False  # register anew
                    return
            elif kind in ("health", "trust"):
                needs_reconcile = True
            elif kind in ("schedule", "global", "metadata"):
                generation, batch = payload
                before = self._globals_here() if kind == "global" else None
                if generation != self._generation:
                    pass  # queued before the last fresh read: already reflected in it
                elif not self._apply_batch(kind, batch):
                    self._synced = False
                    return
                elif kind == "schedule" and not self._placed and self._gone_with_the_data(batch):
                    self._synced = False  # the fresh read holds every unit (_DataMissing)
                    return
                # A roll's step for other machines changes nothing here: no round.
                needs_reconcile |= before is None or before != self._globals_here()
            try:  # coalesce whatever else is already queued into one round
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
        if needs_reconcile:
            self._reconcile()

    def _engine_had_time(self) -> bool:
        """After fleetpy's data came back (a restore), an empty schedule is believed only
        once the engine has had RESTORE_GRACE to place units here again."""
        now = time.monotonic()
        if self._data_back_at is None:
            self._data_back_at = now
        return now - self._data_back_at >= RESTORE_GRACE

    def _gone_with_the_data(self, batch: WatchBatch[_AgentEvent]) -> bool:
        """The last of this machine's schedule was deleted along with fleetpy's marker
        (`etcdctl del --prefix`): not an unload to carry out."""
        deleted = any(
            isinstance(e, ScheduleEvent) and e.entry is None and not e.newer for e in batch.events
        )
        # Asked as of the batch: a restore may have put the marker back since.
        return deleted and not self.registry.layout_present(batch.revision)

    def desired(self) -> dict[str, DesiredUnit]:
        chosen = dict(self._placed)
        metadata = effective(self.settings.metadata, self._orders.overlay)
        if not self._orders.globals_off:
            chosen.update(select_globals(self._globals_here(), self._placed, metadata))
        return {
            name: DesiredUnit(name, e.hash, DesiredState(e.desired), e.text, e.signature)
            for name, e in chosen.items()
            if e.desired in PLACED_STATES and self._name_allowed(name, e.name)
        }

    def _globals_here(self) -> dict[str, ScheduleEntry]:  # mid-roll: model.global_rolls
        return entries_for(self._globals, self.machine_id)

    def _name_allowed(self, key: str, name: str) -> bool:
        """Only valid unit names become unit files: names come from etcd keys, which
        anyone with write access can set (`../../etc/systemd/system/x.service`). The
        registry skips such keys too; this check does not depend on it."""
        try:
            check_unit_file_name(key)
            if name != key:
                raise UnitNameError(f"schedule entry {key!r} names another unit, {name!r}")
        except UnitNameError as exc:
            if key not in self._refused_names:
                self._refused_names.add(key)
                log_event("unit_name_refused", machine=self.machine_id, error=str(exc))
            return False
        return True

    def _reconcile(self) -> None:
        self.stats.reconciles += 1
        woken = stamp()
        desired = self.desired()
        self._health.follow((u.name, u.hash, u.text) for u in desired.values())
        self.failures.keep(desired.keys())
        policy = Policy(self.versions.get(), self.settings.signatures_required)
        keep = self.settings.on_revoke is OnRevoke.KEEP
        decided = plan(
            desired,
            self.manager.observe(),
            self.trusted,
            self._newer,
            policy=policy,
            keep_withdrawn=keep,
        )
        for name, verdict in sorted(decided.kept.items()):
            if self._kept.get(name) != verdict:
                log_event(
                    "unit_kept",
                    machine=self.machine_id,
                    unit=name,
                    reason=verdict.reason,
                    detail=verdict.detail,
                    action="left running as it runs (on_revoke=keep)",
                )
        self._kept = decided.kept
        for name, (content_hash, verdict) in sorted(decided.rejected.items()):
            if self._rejected.get(name) != (content_hash, verdict):
                log_event(
                    "unit_rejected",
                    machine=self.machine_id,
                    unit=name,
                    hash=content_hash[:12],
                    reason=verdict.reason,
                    detail=verdict.detail,
                )
        self._rejected = decided.rejected
        actions = decided.actions
        try:  # before any unit reaches systemd: an older version is refused from now on
            self.versions.record(decided.versions)
        except FleetpyError as exc:
            log_event("accepted_versions_not_kept", machine=self.machine_id, error=str(exc))
            actions = []  # tried again next round; nothing runs that was not recorded
        if actions:
            self.stats.actions += len(actions)
            counts = dict.fromkeys(("stop", "remove", "write", "start"), 0)
            for action in actions:
                counts[type(action).__name__.removesuffix("Unit").lower()] += 1
            # Its time, for the breakdown of bench/bench_hosts.py (the unit manager
            # logs its own: actions_executed, start_jobs_done).
            log_event(
                "actions_planned",
                machine=self.machine_id,
                **{f"{kind}s": n for kind, n in counts.items()},
                woken=woken,
            )
            for action in actions:
                log_event(
                    "unit_action",
                    machine=self.machine_id,
                    action=type(action).__name__.removesuffix("Unit").lower(),
                    unit=action.name,
                )
            self._execute(actions)
        if self._health.restart_unhealthy(self.manager, self._unhealthy_restarted):
            self._states_changed.set()
        elif any(isinstance(a, StartUnit) for a in actions):
            # Starts are asynchronous: let the reporter write once the units have
            # settled (its coalescing window), instead of "inactive" now and "active"
            # a few milliseconds later.
            self._states_changed.set()
        else:
            self._report(self.manager.observe())

    def _execute(self, actions: Sequence[Action]) -> None:
        """All of a round's actions in one call: the unit manager sends the whole batch
        without waiting for systemd's answers (systemd queues every start job at once),
        so writing units a few at a time no longer gets the first ones running sooner."""
        self.manager.execute(actions)

    def _health_changed(self) -> None:
        self._states_changed.set()  # reported
        self._queue.put(("health", None))  # acted on, by the loop

    def _unhealthy_restarted(self, name: str) -> None:
        """Restarted for being unhealthy: one of NAME's failures here (RescheduleOnFailure=)."""
        log_event("unit_unhealthy_restart", machine=self.machine_id, unit=name)
        self.failures.count_failure(name, "unhealthy: restarted")

    def _report(self, observed: Mapping[str, ObservedUnit]) -> None:
        with self._report_lock:  # the loop and the reporter thread both report
            self._report_locked(observed)

    def _report_locked(self, observed: Mapping[str, ObservedUnit]) -> None:
        if self._lease is None:
            return
        current = self._states(observed)
        changed = [s for name, s in current.items() if self._reported.get(name) != s]
        removed = [(name, self.machine_id) for name in self._reported if name not in current]
        if not changed and not removed:
            return
        self.registry.report_states(changed, self._lease, removed)
        self.stats.reports += 1
        for state in changed:
            # States made by the unit manager's own calls (not signalled): counted here.
            self.failures.observe(state.name, state.active, state.sub, state.job, state.message)
            if state.active == ActiveState.FAILED or (
                state.message
                and state.active != ActiveState.REJECTED
                and state.name not in self._kept
            ):
                log_event(
                    "unit_failed",
                    machine=self.machine_id,
                    unit=state.name,
                    active=state.active,
                    sub=state.sub,
                    message=state.message,
                )
        self._reported = current

    def _states(self, observed: Mapping[str, ObservedUnit]) -> dict[str, UnitState]:
        current = {n: self._health.state(u.state(self.machine_id), u) for n, u in observed.items()}
        # A refused unit is reported as such (also while an older version of it is still
        # being stopped): what the cluster asked for is what did not run.
        for name, (content_hash, verdict) in self._rejected.items():
            current[name] = UnitState(
                name,
                self.machine_id,
                LoadState.NOT_LOADED,
                ActiveState.REJECTED,
                verdict.reason,
                content_hash,
                verdict.detail,
            )
        for name, verdict in self._kept.items():
            if name in current:
                message = f"{verdict.detail}: kept running (on_revoke=keep)"
                current[name] = replace(current[name], message=message)
        return current


__all__ = ["Agent", "AgentStats", "agent_instance"]
