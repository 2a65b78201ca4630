"""The systemd unit manager sends a batch of actions as a batch: every StartUnit before it
waits for any answer, no daemon-reload for new files, no call per unit besides the start,
never more calls pending than the system bus allows one connection. Counted with a
recording bus that answers only when the test says (the real systemd: test_host_batches)."""

from __future__ import annotations

import collections
import threading
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings
from fleetpy.states import JOB_PENDING
from fleetpy.unitmanager import (
    Action,
    ObservedUnit,
    SimulatedUnitManager,
    StartUnit,
    StopUnit,
    WriteUnit,
)

from support.systemd_stub import RecordingBus, stubbed_systemd
from support.waiting import until

TEXT = "[Service]\nExecStart=/bin/sleep 100000\n"


@pytest.fixture
def systemd_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    with stubbed_systemd(monkeypatch) as module:
        yield module


class Reloads:
    """systemd's Manager interface for the few blocking calls: counts them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def Reload(self) -> None:  # systemd's D-Bus method name
        self.calls.append("Reload")


def manager_on(module: types.ModuleType, root: Path, bus: RecordingBus) -> Any:
    """A SystemdUnitManager whose "GLib thread" is the caller's and whose bus records."""
    manager = object.__new__(module.SystemdUnitManager)
    manager.unit_dir = root / "units"
    manager.link_dir = root / "link"
    manager.unit_dir.mkdir()
    manager.link_dir.mkdir()
    manager._lock = threading.Condition()
    manager._units = {}
    manager._paths = {}
    manager._names = {}
    manager._jobs_done = {}
    manager._starts = {}
    manager._start_batches = []
    manager._outbox = collections.deque()
    manager._in_flight = 0
    manager._missing = set()
    manager._listener = None
    manager._on_dbus_call = None
    manager._on_job_failed = None
    manager._manager = Reloads()
    manager._bus = bus
    manager._on_loop = lambda fn: fn()
    return manager


def batch(count: int) -> list[WriteUnit | StartUnit]:
    names = [f"u{i:03d}.service" for i in range(count)]
    return [WriteUnit(n, "h", TEXT) for n in names] + [StartUnit(n) for n in names]


def executing(module: types.ModuleType, root: Path, units: int) -> tuple[RecordingBus, Any]:
    """execute() of a batch of UNITS new units: (the bus, the manager). It returns without
    waiting for a single answer (systemd's are given by the test, later)."""
    bus = RecordingBus()
    manager = manager_on(module, root, bus)
    manager.execute(batch(units))
    return bus, manager


def test_every_start_is_sent_before_any_answer_is_waited_for(
    systemd_module: types.ModuleType, tmp_path: Path
) -> None:
    bus, manager = executing(systemd_module, tmp_path, 60)
    assert [c.method for c in bus.sent] == ["StartUnit"] * 60
    assert [c.args for c in bus.sent] == [(f"u{i:03d}.service", "replace") for i in range(60)]
    # New files need no daemon-reload, and no call but the start: no LoadUnit, no GetAll
    # (the start's signals tell the state), nothing blocking.
    assert manager._manager.calls == [] and bus.blocking == []
    assert {u.job for u in manager.observe().values()} == {JOB_PENDING}
    for i, call in enumerate(bus.sent):
        call.answer(f"/org/freedesktop/systemd1/job/{i}")
    assert manager._starts == {
        f"u{i:03d}.service": f"/org/freedesktop/systemd1/job/{i}" for i in range(60)
    }
    assert sorted(p.name for p in manager.link_dir.iterdir()) == [
        f"u{i:03d}.service" for i in range(60)
    ]
    # Each unit's signals are told apart by its object path, computed from its name.
    assert manager._names[systemd_module.unit_object_path("u007.service")] == "u007.service"


def test_no_more_calls_pending_than_the_system_bus_allows(
    systemd_module: types.ModuleType, tmp_path: Path
) -> None:
    window = systemd_module.MAX_IN_FLIGHT
    assert window < 128  # dbus-daemon's max_replies_per_connection on the system bus
    bus, _manager = executing(systemd_module, tmp_path, 200)
    assert len(bus.sent) == window  # the rest wait for answers
    answered = 0
    while answered < len(bus.sent):
        bus.sent[answered].answer(f"/job/{answered}")
        answered += 1
        assert len(bus.sent) - answered <= window
    assert answered == len(bus.sent) == 200
    assert [c.args[0] for c in bus.sent] == [f"u{i:03d}.service" for i in range(200)]


def test_a_refused_start_is_read_and_recorded(
    systemd_module: types.ModuleType, tmp_path: Path
) -> None:
    bus, manager = executing(systemd_module, tmp_path, 2)
    refusal = systemd_module.dbus.DBusException("Unit u001.service has a bad unit file setting.")
    refusal.get_dbus_message = lambda: str(refusal.args[0])
    refusal.get_dbus_name = lambda: "org.freedesktop.systemd1.BadUnitSetting"
    bus.sent[0].answer("/job/0")
    bus.sent[1].refuse(refusal)
    (read,) = bus.sent[2:]
    assert (read.method, read.path) == ("GetAll", systemd_module.unit_object_path("u001.service"))
    read.answer({"LoadState": "bad-setting", "ActiveState": "inactive", "SubState": "dead"})
    unit = manager.observe()["u001.service"]
    assert (unit.load, unit.job) == ("bad-setting", "refused")
    assert "bad unit file setting" in unit.message


class Calls(SimulatedUnitManager):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def execute(self, actions: Sequence[Action]) -> None:
        self.batches.append([f"{type(a).__name__}:{a.name}" for a in actions])
        super().execute(actions)


def test_the_agent_hands_a_whole_round_to_its_unit_manager() -> None:
    """One call for a round's actions (no longer 16 units at a time): the unit manager
    can send them all before it waits, and keeps their order (stops first)."""
    manager = Calls()
    agent = Agent(object(), manager, AgentSettings(machine_id="m1"))  # type: ignore[arg-type]
    actions: list[Action] = [StopUnit("old.service"), *batch(50)]
    agent._execute(actions)
    assert manager.batches == [[f"{type(a).__name__}:{a.name}" for a in actions]]


class Reports:
    """The registry side of state reports: records each one."""

    def __init__(self) -> None:
        self.reports: list[dict[str, str]] = []

    def report_states(self, states: Sequence[Any], lease: int, removed: Sequence[Any]) -> None:
        self.reports.append({s.name: s.active for s in states})


class Host(SimulatedUnitManager):
    """Units whose states the test sets, one signal at a time."""

    def set(self, unit: ObservedUnit) -> None:
        with self._lock:
            self._units[unit.name] = unit
        if self._listener:
            self._listener(unit)


def reporting(coalesce: float) -> tuple[Agent, Host, Reports, threading.Thread]:
    registry, host = Reports(), Host()
    agent = Agent(registry, host, AgentSettings(machine_id="m1"))  # type: ignore[arg-type]
    agent.report_coalesce = coalesce
    agent._lease = 1
    host.set_listener(lambda unit: agent._states_changed.set())
    thread = threading.Thread(target=agent._reporter, daemon=True)
    thread.start()
    return agent, host, registry, thread


def test_a_batch_of_starts_is_reported_once_its_jobs_ended() -> None:
    agent, host, registry, thread = reporting(coalesce=60.0)
    names = [f"u{i:02d}.service" for i in range(50)]
    try:
        for name in names:
            host.set(ObservedUnit(name, "h", launched=True, job=JOB_PENDING))
        for name in names:  # signals over ~0.25 s, as systemd sends a batch's
            host.set(ObservedUnit(name, "h", "loaded", "active", "running", True, job="done"))
            time.sleep(0.005)
        until(lambda: len(registry.reports) >= 2, 10, "two reports")
        time.sleep(0.2)  # a third report would have come by now
        # The batch's start at once (its first units may be active), then nothing until
        # every job ended: one report of the rest, not one per 20 ms burst of signals.
        first, last = registry.reports
        assert set(first) == set(names) and "inactive" in first.values()
        assert last == {name: "active" for name in names if first[name] != "active"}
        assert agent.stats.reports == 2
    finally:
        agent.stop(revoke=False)
        thread.join(5)


def test_units_still_starting_do_not_hold_back_the_others_longer_than_the_window() -> None:
    agent, host, registry, thread = reporting(coalesce=0.3)
    try:
        host.set(ObservedUnit("slow.service", "h", launched=True, job=JOB_PENDING))
        host.set(ObservedUnit("fast.service", "h", "loaded", "active", "running", True, job="done"))
        until(lambda: registry.reports, 10, "a report while slow.service still starts")
        assert registry.reports[0]["fast.service"] == "active"
    finally:
        agent.stop(revoke=False)
        thread.join(5)
