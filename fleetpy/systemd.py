"""systemd over D-Bus (dbus-python): the real agent's unit manager.

Unit files are written to a runtime directory (default /run/fleetpy/units) and linked
into /run/systemd/system, so `systemctl status NAME` shows them like any other unit.
States come from systemd's signals for the units this agent owns (PropertiesChanged
of units' objects, one match for all of them; JobRemoved, UnitRemoved) — no polling of
every unit.

A batch of actions costs no round trip per unit: its calls (StartUnit, ResetFailedUnit,
GetAll of a written unit not started) are sent and none of their answers is waited for,
so systemd queues every start job at once and the next batch follows at once (only
stops are waited out: a unit file goes after its stop job ended); a unit's object path
is computed from its name (systemd's bus label escaping), not asked for with LoadUnit.
New unit files need no daemon-reload (systemd looks again when its unit directories
changed); one reload per batch when a file systemd may have loaded changed or went away.

Threading: one GLib thread owns the bus connection and runs every D-Bus call; the
agent's thread hands work to it with GLib.idle_add and waits for the result.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

from .capacity import services_usage
from .errors import FleetpyError
from .log import log_event, stamp
from .states import JOB_PENDING, JOB_REFUSED, RUNNING_STATES
from .unitfile.unit import content_hash
from .unitmanager import (
    Action,
    ObservedUnit,
    RemoveUnit,
    RestartUnit,
    StartUnit,
    StateListener,
    StopUnit,
    WriteUnit,
    unit_file_path,
)

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
RUNTIME_UNIT_DIR = Path("/run/systemd/system")
STOP_TIMEOUT = 120.0
MAX_START_BATCHES = 64
# Calls sent and not yet answered, at most: dbus-daemon's system bus refuses more than 128
# pending calls per connection (max_replies_per_connection); the rest is for the blocking
# calls (one at a time) and headroom.
MAX_IN_FLIGHT = 96

T = TypeVar("T")

# JobRemoved results that mean the job did its work (skipped: a condition was not met).
_JOB_OK = frozenset(("done", "skipped"))

DBusCallObserver = Callable[[str, float], None]  # (method, seconds)
JobFailureObserver = Callable[[str], None]  # (JobRemoved result, or "error": refused)


class SystemdError(FleetpyError):
    """systemd could not be reached over D-Bus."""


_NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
_UNIT_PATH = SYSTEMD_PATH + "/unit/"
_LABEL_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def unit_object_path(name: str) -> str:
    """The D-Bus object path systemd gives unit NAME (bus_label_escape: every byte but
    [A-Za-z0-9], and a leading digit, as _xx in lowercase hex)."""
    escaped = "".join(
        chr(byte)
        if byte in _LABEL_CHARS and not (i == 0 and chr(byte).isdigit())
        else f"_{byte:02x}"
        for i, byte in enumerate(name.encode())
    )
    return _UNIT_PATH + (escaped or "_")


def _load_failed(exc: Any) -> dict[str, Any]:
    """A unit's properties when reading them failed: not loaded, why."""
    return {
        "LoadState": "error",
        "ActiveState": "inactive",
        "SubState": "dead",
        "LoadError": ("", exc.get_dbus_message() or str(exc)),
    }


class _Batch:
    """Calls sent together (GLib thread); stops wait for their answers, starts do not."""

    __slots__ = ("pending", "retry_missing")

    def __init__(self, retry_missing: Set[str] = frozenset()) -> None:
        self.pending = 0  # calls not answered yet
        self.retry_missing = (
            retry_missing  # units whose start refused as not found a reload may cure
        )


class _StartBatch:
    """Starts issued together, until every one's job ended (logged: start_jobs_done)."""

    __slots__ = ("answered", "failed", "starting", "starts")

    def __init__(self) -> None:
        self.starts = 0
        self.starting: set[str] = set()
        self.failed = 0
        self.answered = ""  # when systemd answered the last of its StartUnit calls


class SystemdUnitManager:
    def __init__(
        self,
        unit_dir: str | os.PathLike[str],
        link_dir: str | os.PathLike[str] = RUNTIME_UNIT_DIR,
        on_dbus_call: DBusCallObserver | None = None,
        on_job_failed: JobFailureObserver | None = None,
    ) -> None:
        # Metrics hooks, called on the GLib thread: D-Bus round trips and failed jobs.
        self._on_dbus_call = on_dbus_call
        self._on_job_failed = on_job_failed
        self.unit_dir = Path(unit_dir)
        self.link_dir = Path(link_dir)
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        self.link_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Condition()
        self._units: dict[str, ObservedUnit] = {}  # owned units, states from signals
        # Object path -> owned unit, for signals' dispatch (a unit's path is a function
        # of its name: unit_object_path).
        self._names: dict[str, str] = {}
        self._jobs_done: dict[str, str] = {}  # job path -> result (may precede the reply)
        # unit -> the path of the start job we asked for (None until StartUnit answered:
        # its JobRemoved may come first); its result becomes the unit's `job`.
        self._starts: dict[str, str | None] = {}
        self._start_batches: list[_StartBatch] = []  # batches whose start jobs are not all done
        # Asynchronous calls (GLib thread only): waiting to be sent, and sent unanswered.
        self._outbox: collections.deque[Callable[[], None]] = collections.deque()
        self._in_flight = 0
        self._missing: set[str] = set()  # units whose start was refused as not found
        self._listener: StateListener | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run_loop, name="systemd-dbus", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise SystemdError(f"cannot talk to systemd over D-Bus: {self._error}")
        self._on_loop(self._adopt)

    # -- the GLib thread

    def _run_loop(self) -> None:
        try:
            DBusGMainLoop(set_as_default=True)
            self._context_loop = GLib.MainLoop()
            self._bus = dbus.SystemBus()
            self._manager = dbus.Interface(
                self._bus.get_object(SYSTEMD, SYSTEMD_PATH), MANAGER_IFACE
            )
            self._manager.Subscribe()
            self._bus.add_signal_receiver(
                self._on_job_removed,
                signal_name="JobRemoved",
                dbus_interface=MANAGER_IFACE,
                bus_name=SYSTEMD,
                path=SYSTEMD_PATH,
            )
            self._bus.add_signal_receiver(
                self._on_unit_removed,
                signal_name="UnitRemoved",
                dbus_interface=MANAGER_IFACE,
                bus_name=SYSTEMD,
                path=SYSTEMD_PATH,
            )
            # One match for every unit's PropertiesChanged of the Unit interface (arg0): a
            # match per unit cost an AddMatch round trip each. Units not ours are dropped
            # by their path (a host runs few units besides ours).
            self._bus.add_signal_receiver(
                self._on_unit_properties,
                signal_name="PropertiesChanged",
                dbus_interface=PROPS_IFACE,
                bus_name=SYSTEMD,
                path_keyword="path",
                arg0=UNIT_IFACE,
            )
            self._bus.add_signal_receiver(
                self._on_reloading,
                signal_name="Reloading",
                dbus_interface=MANAGER_IFACE,
                bus_name=SYSTEMD,
                path=SYSTEMD_PATH,
            )
        except Exception as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._context_loop.run()

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run fn on the GLib thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: dict[str, Any] = {}

        def task() -> bool:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            done.set()
            return False

        GLib.idle_add(task)
        if not done.wait(STOP_TIMEOUT):
            raise SystemdError("systemd did not answer in time")
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def _on_job_removed(self, job_id: Any, job_path: Any, unit: Any, result: Any) -> None:
        name, path = str(unit), str(job_path)
        started: tuple[ObservedUnit, ObservedUnit] | None = None
        with self._lock:
            old = self._units.get(name)
            if old is None:
                return  # other units' jobs (timers, the agent itself) are none of ours
            if name in self._starts and self._starts[name] in (None, path):
                # Our start's job (before its reply, the only job of the unit: a stop
                # issued since dropped it from _starts): how it ended is reported.
                del self._starts[name]
                started = old, replace(old, job=str(result))
                self._units[name] = started[1]
            else:
                self._jobs_done[path] = str(result)
            self._lock.notify_all()
        if started is not None:
            self._start_settled(name, str(result))
            self._notify(*started)
        if self._on_job_failed is not None and str(result) not in _JOB_OK:
            self._on_job_failed(str(result))

    def _start_settled(self, name: str, result: str) -> None:
        """A start of a batch ended (its job's result, refused, or cancelled by a stop):
        once all of a batch's have, say when (the breakdown of bench/bench_hosts.py)."""
        for batch in list(self._start_batches):
            if name not in batch.starting:
                continue
            batch.starting.discard(name)
            if result not in _JOB_OK:
                batch.failed += 1
            if not batch.starting:
                self._start_batches.remove(batch)
                log_event(
                    "start_jobs_done",
                    units=batch.starts,
                    failed=batch.failed,
                    answered=batch.answered or None,
                    at=stamp(),
                )

    def _call(self, method: str, *args: Any) -> Any:
        """A call of systemd's Manager interface (GLib thread), timed for metrics."""
        started = time.perf_counter()
        try:
            return getattr(self._manager, method)(*args)
        finally:
            if self._on_dbus_call is not None:
                self._on_dbus_call(method, time.perf_counter() - started)

    def _call_async(
        self,
        batch: _Batch,
        method: str,
        signature: str,
        args: tuple[Any, ...],
        path: str = SYSTEMD_PATH,
        interface: str = MANAGER_IFACE,
        answered: Callable[[Any], object] = lambda _reply: None,
        refused: Callable[[Any], object] = lambda _exc: None,
    ) -> None:
        """(GLib thread) A call sent without waiting: its answer runs ANSWERED or REFUSED
        on the GLib thread, then counts against BATCH (which a stop waits out). Sent
        at once unless MAX_IN_FLIGHT calls are unanswered: then queued, and sent as
        answers come (the system bus refuses a connection's 129th pending call)."""
        with self._lock:
            batch.pending += 1

        def send() -> None:
            started = time.perf_counter()

            def done(handler: Callable[[Any], object], value: Any) -> None:
                self._in_flight -= 1
                self._answered(method, started)
                try:
                    handler(value)
                finally:
                    with self._lock:
                        batch.pending -= 1
                        self._lock.notify_all()
                    self._pump()

            self._in_flight += 1
            try:
                self._bus.call_async(
                    SYSTEMD,
                    path,
                    interface,
                    method,
                    signature,
                    args,
                    reply_handler=lambda *reply: done(answered, reply[0] if reply else None),
                    error_handler=lambda exc: done(refused, exc),
                )
            except dbus.DBusException as exc:  # not sent (disconnected): an answer too
                done(refused, exc)

        self._outbox.append(send)
        self._pump()

    def _pump(self) -> None:
        while self._outbox and self._in_flight < MAX_IN_FLIGHT:
            self._outbox.popleft()()

    def _answered(self, method: str, started: float) -> None:
        if self._on_dbus_call is not None:
            self._on_dbus_call(method, time.perf_counter() - started)

    def _on_unit_removed(self, unit: Any, path: Any) -> None:
        # systemd dropped an inactive, unreferenced unit from memory. Asking for its
        # state would load it again and systemd would drop it again, in a busy loop:
        # record it as stopped instead (its file is still there to start it). A running
        # unit is never dropped: its UnitRemoved comes from a daemon-reload, which sends
        # one for every unit (and UnitNew after); it is read again when the reload ends.
        name = str(unit)
        with self._lock:
            old = self._units.get(name)
            if old is None or old.active in RUNNING_STATES:
                return
            new = replace(old, active="inactive", sub="dead")
            self._units[name] = new
        self._notify(old, new)

    def _on_reloading(self, active: Any) -> None:
        if bool(active):
            return
        # The reload is over: read the running units again (their states may have moved
        # meanwhile); stopped ones stay as recorded (reading them would load them again).
        with self._lock:
            names = [name for name, unit in self._units.items() if unit.active in RUNNING_STATES]
        for name in names:
            self._refresh_later(name)

    def _refresh_later(self, name: str) -> None:
        # Never make a blocking D-Bus call from inside a signal handler: libdbus holds
        # the dispatch lock there and the reply never arrives. An asynchronous one is
        # fine: nobody waits for it, its answer updates the unit.
        self._refresh_async(_Batch(), name)

    def _refresh_async(
        self, batch: _Batch, name: str, then: Callable[[], object] = lambda: None
    ) -> None:
        """Read NAME's state without waiting; THEN once it is recorded."""

        def read(props: dict[str, Any]) -> None:
            self._apply_properties(name, props)
            then()

        self._call_async(
            batch,
            "GetAll",
            "s",
            (UNIT_IFACE,),
            path=unit_object_path(name),
            interface=PROPS_IFACE,
            answered=lambda props: read(dict(props)),
            refused=lambda exc: read(_load_failed(exc)),
        )

    def _watch_unit(self, name: str) -> None:
        """Signals about NAME's object are ours from now on (no D-Bus call: its path is
        a function of its name; the one PropertiesChanged match covers every unit)."""
        self._names[unit_object_path(name)] = name

    def _unwatch_unit(self, name: str) -> None:
        self._names.pop(unit_object_path(name), None)

    def _on_unit_properties(
        self, iface: Any, changed: Any, invalidated: Any, path: Any = None
    ) -> None:
        name = self._names.get(str(path))
        if name is not None:
            self._on_properties(name, str(iface), changed, invalidated)

    def _on_properties(self, name: str, iface: str, changed: Any, invalidated: Any) -> None:
        if iface != UNIT_IFACE or name not in self._units:
            return
        keys = {"LoadState", "ActiveState", "SubState"}
        if keys & set(map(str, invalidated)):
            self._refresh_later(name)
            return
        if not keys & set(map(str, changed)):
            return
        with self._lock:
            unit = self._units.get(name)
            if unit is None:
                return
            new = replace(
                unit,
                load=str(changed.get("LoadState", unit.load)),
                active=str(changed.get("ActiveState", unit.active)),
                sub=str(changed.get("SubState", unit.sub)),
            )
            self._units[name] = new
        self._notify(unit, new)

    def _notify(self, old: ObservedUnit | None, new: ObservedUnit) -> None:
        if old is not None and old.state("") == new.state(""):
            return
        if new.active == "failed" and (old is None or old.active != "failed"):
            log_event("unit_state", unit=new.name, active=new.active, sub=new.sub)
        if self._listener is not None:
            self._listener(new)

    def _properties(self, name: str) -> dict[str, Any]:
        path = unit_object_path(name)
        started = time.perf_counter()
        try:
            # A direct call: get_object() would introspect (XML) every unit object first.
            # GetAll on a unit's path loads the unit, as LoadUnit would.
            return dict(
                self._bus.call_blocking(SYSTEMD, path, PROPS_IFACE, "GetAll", "s", (UNIT_IFACE,))
            )
        finally:
            self._answered("GetAll", started)

    def _refresh(self, name: str) -> ObservedUnit | None:
        try:
            props = self._properties(name)
        except dbus.DBusException as exc:
            props = _load_failed(exc)
        return self._apply_properties(name, props)

    def _apply_properties(self, name: str, props: dict[str, Any]) -> ObservedUnit | None:
        with self._lock:
            unit = self._units.get(name)
            if unit is None:
                return None
            load_error = props.get("LoadError") or ("", "")
            message = str(load_error[1]) if str(props.get("LoadState")) != "loaded" else ""
            new = replace(
                unit,
                load=str(props.get("LoadState", "")),
                active=str(props.get("ActiveState", "")),
                sub=str(props.get("SubState", "")),
                message=message or (unit.message if unit.active == "failed" else ""),
            )
            self._units[name] = new
        self._notify(unit, new)
        return new

    def _adopt(self) -> None:
        """After a restart: every unit file in unit_dir is ours; keep what runs running.
        After a reboot a unit_dir on disk still holds its files but their links in
        link_dir (/run) are gone: they are linked again, so the units can start."""
        relinked = False
        adopted: list[str] = []
        for path in sorted(self.unit_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            paths = self._paths_of(path.name)
            if paths is None:
                continue  # not a unit name: not ours to start, stop or remove
            relinked = _link(*paths) or relinked
            digest = content_hash(path.read_text())
            with self._lock:
                self._units[path.name] = ObservedUnit(path.name, digest)
            adopted.append(path.name)
        if relinked:
            self._call("Reload")  # systemd may have looked for these names already
        for name in adopted:
            self._watch_unit(name)
            unit = self._refresh(name)
            if unit is not None:
                with self._lock:
                    launched = unit.active in RUNNING_STATES or unit.active == "failed"
                    self._units[name] = replace(unit, launched=launched)
                log_event("unit_adopted", unit=name, active=unit.active, sub=unit.sub)

    # -- UnitManager interface (agent thread)

    def set_listener(self, listener: StateListener) -> None:
        self._listener = listener

    def observe(self) -> dict[str, ObservedUnit]:
        with self._lock:
            return dict(self._units)

    def usage(self) -> tuple[int, int] | None:
        """Memory (bytes) and CPU time (ns) systemd accounts to this agent's running
        services (fleetpy.capacity.AccountsUsage): their MemoryCurrent, CPUUsageNSec."""
        names = [n for n, u in self.observe().items() if u.active in RUNNING_STATES]

        def get(name: str, prop: str) -> int | None:
            path, args = unit_object_path(name), (SERVICE_IFACE, prop)
            try:
                return int(self._bus.call_blocking(SYSTEMD, path, PROPS_IFACE, "Get", "ss", args))
            except dbus.DBusException:
                return None  # gone meanwhile

        return self._on_loop(lambda: services_usage(names, get))

    def execute(self, actions: Sequence[Action]) -> None:
        stops = [a.name for a in actions if isinstance(a, StopUnit)]
        removes = [a.name for a in actions if isinstance(a, RemoveUnit)]
        writes = [a for a in actions if isinstance(a, WriteUnit)]
        starts = [a.name for a in actions if isinstance(a, StartUnit)]
        restarts = [a.name for a in actions if isinstance(a, RestartUnit)]
        times = {"begun": stamp()}
        if stops:
            self._stop_all(stops)
            times["stopped"] = stamp()
        if restarts:  # the health monitor's, alone in their batch: no file changes
            self._on_loop(lambda: self._start_all(_Batch(), restarts, "RestartUnit"))
        if not (removes or writes or starts):
            return
        reloads = self._on_loop(lambda: self._files(removes, writes))
        times["written"] = stamp()
        # Every call of the round is sent, and none of their answers awaited: systemd
        # queues all the start jobs at once, states follow as signals, and the agent's
        # next round (a second placement transaction) is sent while systemd still
        # answers this one. A start refused as not found is retried after one reload
        # (_retry_missing), if this round did not reload already.
        batch = _Batch(retry_missing=frozenset() if reloads else {a.name for a in writes})
        self._on_loop(lambda: self._issue(batch, [a.name for a in writes], starts))
        times["issued"] = stamp()
        log_event(
            "actions_executed",
            stops=len(stops),
            removes=len(removes),
            writes=len(writes),
            starts=len(starts),
            reloads=reloads,
            **times,
        )

    def _issue(self, batch: _Batch, written: list[str], starts: list[str]) -> None:
        """(GLib thread) Start STARTS and read the state of the WRITTEN units that are not
        started, all calls sent at once. A started unit's state comes from the signals
        of its start (a GetAll, ~100 properties, each cost systemd, the bus and us more
        than the start itself); if systemd refuses the start, it is read then."""
        starting = set(starts)
        for name in written:
            if unit_object_path(name) in self._names and name not in starting:
                self._refresh_async(batch, name)
        self._start_all(batch, starts)

    def _stop_all(self, names: list[str]) -> None:
        # Issue every stop, then wait for all their jobs together: unit files may only
        # be removed after the stop finished, or a clean stop is recorded as failed.
        batch = _Batch()
        jobs: list[str] = []
        self._on_loop(lambda: self._issue_stops(batch, names, jobs))
        with self._lock:
            self._lock.wait_for(
                lambda: batch.pending <= 0 and all(j in self._jobs_done for j in jobs),
                timeout=STOP_TIMEOUT,
            )
            # Finished jobs of ours that nobody waits for (starts) must not pile up.
            self._jobs_done.clear()

    def _issue_stops(self, batch: _Batch, names: list[str], jobs: list[str]) -> None:
        for name in names:
            with self._lock:
                unit = self._units.get(name)
                if unit is not None:
                    self._units[name] = replace(unit, launched=False, message="", job="")
                cancelled = self._starts.pop(name, "") != ""  # a start job still running
            if cancelled:
                self._start_settled(name, "canceled")

            def refused(exc: Any, name: str = name) -> None:
                self._record_error(name, exc.get_dbus_message() or str(exc))

            self._call_async(
                batch,
                "StopUnit",
                "ss",
                (name, "replace"),
                answered=lambda job: jobs.append(str(job)),
                refused=refused,
            )

    def _start_all(self, batch: _Batch, names: list[str], method: str = "StartUnit") -> None:
        # Starts are pipelined: nobody waits for their jobs, states arrive as signals.
        jobs = _StartBatch()
        for name in names:
            with self._lock:
                unit = self._units.get(name)
                if unit is None:
                    continue
                failed = unit.active == "failed"
                self._units[name] = replace(unit, launched=True, message="", job=JOB_PENDING)
                self._starts[name] = None
            jobs.starting.add(name)
            jobs.starts += 1
            if failed:
                # NoSuchUnit / not loaded: nothing to reset (systemd 252); ignored.
                self._call_async(batch, "ResetFailedUnit", "s", (name,))
            self._call_async(
                batch,
                method,
                "ss",
                (name, "replace"),
                answered=functools.partial(self._start_answered, jobs, name),
                refused=functools.partial(self._start_refused, batch, jobs, name),
            )
        if jobs.starts:
            # Bounded: a start whose end was never seen must not keep batches forever.
            del self._start_batches[:-MAX_START_BATCHES]
            self._start_batches.append(jobs)

    def _start_answered(self, jobs: _StartBatch, name: str, job: Any) -> None:
        jobs.answered = stamp()
        with self._lock:
            if name in self._starts and self._starts[name] is None:
                self._starts[name] = str(job)  # its JobRemoved is still to come

    def _start_refused(self, batch: _Batch, jobs: _StartBatch, name: str, exc: Any) -> None:
        jobs.answered = stamp()
        with self._lock:
            self._starts.pop(name, None)
        if name in batch.retry_missing and exc.get_dbus_name() == _NO_SUCH_UNIT:
            # systemd had cached the name as missing and did not look again: started
            # again after one reload (for every such unit of the moment), still pending.
            if not self._missing:
                GLib.idle_add(self._retry_missing)
            self._missing.add(name)
            return
        self._start_settled(name, "refused")
        message = exc.get_dbus_message() or str(exc)
        # Its load state and systemd's reason (a bad setting, not found) first, then the
        # refusal, as a start of a unit read beforehand would show them.
        self._refresh_async(
            batch, name, then=lambda: self._record_error(name, message, JOB_REFUSED)
        )

    def _retry_missing(self) -> bool:
        """(GLib thread, idle) One reload, then the starts refused as not found again,
        of the units still to start (a stop since cancelled a unit's)."""
        names, self._missing = sorted(self._missing), set()
        with self._lock:
            names = [
                name
                for name in names
                if (unit := self._units.get(name)) is not None
                and unit.launched
                and unit.job == JOB_PENDING
            ]
        if names:
            try:
                self._call("Reload")
            except dbus.DBusException as exc:
                log_event("reload_failed", error=exc.get_dbus_message() or str(exc))
            log_event("units_not_found_reloaded", units=len(names))
            self._start_all(_Batch(), names)
        return False  # once

    def _record_error(self, name: str, message: str, job: str | None = None) -> None:
        """systemd refused a job for the unit (StartUnit/StopUnit answered an error)."""
        if self._on_job_failed is not None:
            self._on_job_failed("error")
        log_event("unit_error", unit=name, message=message)
        with self._lock:
            unit = self._units.get(name)
            if unit is None:
                return
            new = replace(unit, message=message, job=unit.job if job is None else job)
            self._units[name] = new
        self._notify(unit, new)

    def _files(self, removes: list[str], writes: list[WriteUnit]) -> int:
        """(GLib thread) Remove and write unit files; the daemon-reloads it took (0 or 1).
        The written units' states are read by the caller (_issue), with their starts."""
        # A daemon-reload costs ~0.2 s and re-announces every unit: only needed when a
        # file systemd may have loaded changed or went away. Brand-new files are found
        # by systemd's unit path cache on loading (GetAll on the unit's path).
        paths = {
            name: found
            for name in {*removes, *(a.name for a in writes)}
            if (found := self._paths_of(name)) is not None
        }
        removes = [name for name in removes if name in paths]
        writes = [action for action in writes if action.name in paths]
        with self._lock:
            reload = bool(removes) or any(a.name in self._units for a in writes)
        for name in removes:
            target, link = paths[name]
            for path in (link, target):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
        for action in writes:
            target, link = paths[action.name]
            tmp = target.with_name(f".{action.name}.tmp")
            tmp.write_text(action.text)
            os.replace(tmp, target)
            _link(target, link)
        if reload:
            self._call("Reload")
        for name in removes:
            with self._lock:
                self._units.pop(name, None)
                cancelled = self._starts.pop(name, "") != ""
            if cancelled:
                self._start_settled(name, "canceled")
            self._unwatch_unit(name)
            try:
                self._call("ResetFailedUnit", name)
            except dbus.DBusException:
                pass
        for action in writes:
            with self._lock:
                previous = self._units.get(action.name)
                self._units[action.name] = ObservedUnit(
                    action.name, action.hash, launched=bool(previous and previous.launched)
                )
            self._watch_unit(action.name)
        return int(reload)

    def _paths_of(self, name: str) -> tuple[Path, Path] | None:
        """(unit file, its link) for a valid unit name; None, with a warning, otherwise.
        Both stay inside their directories whatever the name (see unit_file_path)."""
        try:
            return unit_file_path(self.unit_dir, name), unit_file_path(self.link_dir, name)
        except FleetpyError as exc:
            log_event("unit_name_refused", error=str(exc))
            return None

    def close(self) -> None:
        def quit_loop() -> None:
            self._context_loop.quit()

        try:
            GLib.idle_add(quit_loop)
            self._thread.join(timeout=5)
        except Exception:
            pass


def _link(target: Path, link: Path) -> bool:
    """LINK points at TARGET afterwards; True if it had to be made (or mended)."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return False
    try:
        link.unlink()
    except FileNotFoundError:
        pass
    link.symlink_to(target)
    return True
