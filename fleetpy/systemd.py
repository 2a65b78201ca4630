"""systemd over D-Bus (dbus-python): the real agent's unit manager.

Unit files are written to a runtime directory (default /run/fleetpy/units) and linked
into /run/systemd/system, so `systemctl status NAME` shows them like any other unit.
States come from systemd's signals for the units this agent owns (PropertiesChanged
on each unit's object, JobRemoved, UnitRemoved) — no polling of every unit.

Threading: one GLib thread owns the bus connection and runs every D-Bus call; the
agent's thread hands work to it with GLib.idle_add and waits for the result.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

from .errors import FleetpyError
from .log import log_event
from .states import JOB_PENDING, JOB_REFUSED, RUNNING_STATES
from .unitfile.unit import content_hash
from .unitmanager import (
    Action,
    ObservedUnit,
    RemoveUnit,
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
PROPS_IFACE = "org.freedesktop.DBus.Properties"
RUNTIME_UNIT_DIR = Path("/run/systemd/system")
STOP_TIMEOUT = 120.0

T = TypeVar("T")

# JobRemoved results that mean the job did its work (skipped: a condition was not met).
_JOB_OK = frozenset(("done", "skipped"))

DBusCallObserver = Callable[[str, float], None]  # (method, seconds)
JobFailureObserver = Callable[[str], None]  # (JobRemoved result, or "error": refused)


class SystemdError(FleetpyError):
    """systemd could not be reached over D-Bus."""


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
        self._paths: dict[str, str] = {}  # unit -> D-Bus object path
        self._matches: dict[str, Any] = {}  # unit -> signal match (removed with the unit)
        self._jobs_done: dict[str, str] = {}  # job path -> result (may precede the reply)
        # unit -> the path of the start job we asked for (None until StartUnit answered:
        # its JobRemoved may come first); its result becomes the unit's `job`.
        self._starts: dict[str, str | None] = {}
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
            self._notify(*started)
        if self._on_job_failed is not None and str(result) not in _JOB_OK:
            self._on_job_failed(str(result))

    def _call(self, method: str, *args: Any) -> Any:
        """A call of systemd's Manager interface (GLib thread), timed for metrics."""
        started = time.perf_counter()
        try:
            return getattr(self._manager, method)(*args)
        finally:
            if self._on_dbus_call is not None:
                self._on_dbus_call(method, time.perf_counter() - started)

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
        # the dispatch lock there and the reply never arrives. Defer to the idle queue.
        def task() -> bool:
            self._refresh(name)
            return False

        GLib.idle_add(task)

    def _watch_unit(self, name: str) -> None:
        path = str(self._call("LoadUnit", name))
        if self._paths.get(name) == path and name in self._matches:
            return
        old = self._matches.pop(name, None)
        if old is not None:
            old.remove()
        self._paths[name] = path
        self._matches[name] = self._bus.add_signal_receiver(
            lambda iface, changed, invalidated, name=name: self._on_properties(
                name, str(iface), changed, invalidated
            ),
            # One match per owned unit's object path, so the bus only sends us our units.
            # No bus_name: it would cost a GetNameOwner and an extra match per unit, and
            # only systemd owns these paths anyway.
            signal_name="PropertiesChanged",
            dbus_interface=PROPS_IFACE,
            path=path,
        )

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
        path = self._paths.get(name) or str(self._call("LoadUnit", name))
        started = time.perf_counter()
        try:
            # A direct call: get_object() would introspect (XML) every unit object first.
            return dict(
                self._bus.call_blocking(SYSTEMD, path, PROPS_IFACE, "GetAll", "s", (UNIT_IFACE,))
            )
        finally:
            self._answered("GetAll", started)

    def _refresh(self, name: str) -> ObservedUnit | None:
        try:
            props = self._properties(name)
        except dbus.DBusException as exc:
            props = {
                "LoadState": "error",
                "ActiveState": "inactive",
                "SubState": "dead",
                "LoadError": ("", exc.get_dbus_message()),
            }
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

    def execute(self, actions: Sequence[Action]) -> None:
        stops = [a.name for a in actions if isinstance(a, StopUnit)]
        removes = [a.name for a in actions if isinstance(a, RemoveUnit)]
        writes = [a for a in actions if isinstance(a, WriteUnit)]
        starts = [a.name for a in actions if isinstance(a, StartUnit)]
        if stops:
            self._stop_all(stops)
        if removes or writes:
            self._on_loop(lambda: self._files(removes, writes))
        if starts:
            self._on_loop(lambda: self._start_all(starts))

    def _stop_all(self, names: list[str]) -> None:
        # Issue every stop, then wait for all their jobs together: unit files may only
        # be removed after the stop finished, or a clean stop is recorded as failed.
        jobs = self._on_loop(lambda: self._issue_stops(names))
        with self._lock:
            self._lock.wait_for(
                lambda: all(j in self._jobs_done for j in jobs if j), timeout=STOP_TIMEOUT
            )
            # Finished jobs of ours that nobody waits for (starts) must not pile up.
            self._jobs_done.clear()

    def _issue_stops(self, names: list[str]) -> list[str]:
        jobs: list[str] = []
        for name in names:
            with self._lock:
                unit = self._units.get(name)
                if unit is not None:
                    self._units[name] = replace(unit, launched=False, message="", job="")
                self._starts.pop(name, None)  # a start job still running is cancelled
            try:
                jobs.append(str(self._call("StopUnit", name, "replace")))
            except dbus.DBusException as exc:
                jobs.append("")
                self._record_error(name, exc.get_dbus_message() or str(exc))
        return jobs

    def _start_all(self, names: list[str]) -> None:
        # Starts are pipelined: nobody waits for their jobs, states arrive as signals.
        for name in names:
            with self._lock:
                unit = self._units.get(name)
                if unit is None:
                    continue
                failed = unit.active == "failed"
                self._units[name] = replace(unit, launched=True, message="", job=JOB_PENDING)
                self._starts[name] = None
            if failed:
                try:
                    self._call("ResetFailedUnit", name)
                except dbus.DBusException:
                    pass  # NoSuchUnit / not loaded: nothing to reset (systemd 252)
            started = time.perf_counter()
            self._bus.call_async(
                SYSTEMD,
                SYSTEMD_PATH,
                MANAGER_IFACE,
                "StartUnit",
                "ss",
                (name, "replace"),
                reply_handler=lambda job, name=name, started=started: self._start_answered(
                    name, job, started
                ),
                error_handler=lambda exc, name=name, started=started: self._start_refused(
                    name, exc, started
                ),
            )

    def _start_answered(self, name: str, job: Any, started: float) -> None:
        self._answered("StartUnit", started)
        with self._lock:
            if name in self._starts and self._starts[name] is None:
                self._starts[name] = str(job)  # its JobRemoved is still to come

    def _start_refused(self, name: str, exc: Any, started: float) -> None:
        self._answered("StartUnit", started)
        with self._lock:
            self._starts.pop(name, None)
        self._record_error(name, exc.get_dbus_message() or str(exc), JOB_REFUSED)

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

    def _files(self, removes: list[str], writes: list[WriteUnit]) -> None:
        # A daemon-reload costs ~0.2 s and re-announces every unit: only needed when a
        # file systemd may have loaded changed or went away. Brand-new files are found
        # by systemd's unit path cache on LoadUnit.
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
                self._starts.pop(name, None)
            match = self._matches.pop(name, None)
            if match is not None:
                match.remove()
            self._paths.pop(name, None)
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
            unit = self._refresh(action.name)
            if unit is not None and unit.load == "not-found" and not reload:
                # systemd had cached the name as missing: make it look again, once.
                self._call("Reload")
                reload = True
                for other in writes:
                    self._refresh(other.name)

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
