"""test_view.py's tests that need no etcd and no process (README "Tests"); what the module
covers as a whole: tests/integration/test_view.py."""

from __future__ import annotations

import threading

from fleetpy.live_view import Touched, ViewEvent, apply_events, run_coalesced, touched
from fleetpy.model.events import MachineEvent, ReasonEvent, ScheduleEvent, StateEvent
from fleetpy.model.records import ClusterView, MachineRecord, ScheduleEntry, UnitRecord, UnitState
from fleetpy.states import DesiredState


def test_an_unexpected_error_in_a_step_is_a_failure_and_retried() -> None:
    wake, stop = threading.Event(), threading.Event()
    calls: list[int] = []
    failures: list[str] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("a bug")
        stop.set()

    wake.set()
    thread = threading.Thread(
        target=run_coalesced, args=(wake, stop, step, lambda e: failures.append(str(e)))
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(calls) == 2
    assert failures == ["unexpected TypeError: a bug"]


def test_events_copy_only_what_they_change_and_name_what_they_touched() -> None:
    """apply_events shares with the old view every dict no event wrote (readers key their
    caches on `view.units`), never changes the old view, and touched() names the units
    and machines for the dashboard's deltas."""
    unit = UnitRecord("a.service", "1" * 64, DesiredState.LAUNCHED)
    old = ClusterView(1, {"a.service": unit}, {"m1": MachineRecord("m1")}, {}, {}, {})
    state = UnitState("a.service", "m1", "loaded", "active", "running")
    events: list[ViewEvent] = [StateEvent("a.service", "m1", state)]
    new = apply_events(old, events)
    assert new.units is old.units and new.machines is old.machines
    assert new.states == {"a.service": {"m1": state}} and old.states == {}
    assert touched(events) == Touched(frozenset({"a.service"}), frozenset({"m1"}))
    entry = ScheduleEntry("a.service", "1" * 64, DesiredState.LAUNCHED, "[Service]\n")
    events = [ScheduleEvent("m1", "a.service", entry), ScheduleEvent("m1", "a.service", None)]
    placed = apply_events(new, events[:1])
    assert placed.schedule["a.service"][1].text == "" and new.schedule == {}
    assert apply_events(placed, events[1:]).schedule == {}
    assert apply_events(new, [ScheduleEvent("m2", "a.service", None)]) is new
    events = [MachineEvent("m2", MachineRecord("m2")), ReasonEvent("b.service", "no room")]
    assert touched(events) == Touched(frozenset({"b.service"}), frozenset({"m2"}))
