"""Waiting for the cluster: where each unit stands against what a verb waits for
(evaluate, pure), and the blocking wait on the watch-fed view (wait_for)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ..states import (
    JOB_PENDING,
    JOB_REFUSED,
    JOB_STARTED,
    RUNNING_STATES,
    ActiveState,
    LoadState,
)

if TYPE_CHECKING:  # the records and the store: this module's WaitTarget is imported by
    # every CLI verb's table (client.verbs), its waits only by the verbs that wait
    from ..registry import ClusterView, UnitRecord, UnitState
    from ..registry.roles import OperatorRegistry

# Re-read the whole view this often even without watch events (a lost watch must not hang us).
BACKSTOP_SECONDS = 10.0
# A failed state seen before we started waiting may be stale (the agent has not yet
# restarted the unit); it counts once re-reported or after this long.
STALE_FAILED_GRACE = 3.0


class WaitTarget(StrEnum):
    """What a blocking verb waits for."""

    LAUNCHED = "launched"  # running (start)
    LOADED = "loaded"  # loaded and not running (load)
    STOPPED = "stopped"  # running nowhere, which a never-placed unit already is (stop)
    UNLOADED = "inactive"  # reported nowhere (unload)


@dataclass(frozen=True)
class UnitProgress:
    name: str
    status: str  # "waiting" | "done" | "failed"
    detail: str  # e.g. "launched on 0123abcd/10.0.0.1", "not placed: no machines are alive"


@dataclass(frozen=True)
class WaitResult:
    target: WaitTarget
    units: tuple[UnitProgress, ...]
    elapsed: float
    timed_out: bool
    attempts: int

    @property
    def ok(self) -> bool:
        return all(u.status == "done" for u in self.units)

    def error_message(self) -> str | None:
        """One line explaining every unit that did not reach the target, or None."""
        failed = [u for u in self.units if u.status == "failed"]
        waiting = [u for u in self.units if u.status == "waiting"]
        parts = [f"{u.name} {u.detail}" for u in failed]
        if waiting:
            head = f"timed out after {self.attempts}s waiting for "
            if len(waiting) == 1:
                unit = waiting[0]
                parts.append(f"{head}{unit.name} to be {self.target} ({unit.detail})")
            else:
                items = "; ".join(f"{u.name} ({u.detail})" for u in waiting)
                parts.append(f"{head}{len(waiting)} units to be {self.target}: {items}")
        return "; ".join(parts) or None


def machine_label(view: ClusterView, machine_id: str, full: bool = False) -> str:
    """fleetctl's MACHINE column: short id and IP."""
    machine = view.machines.get(machine_id)
    shown = machine_id if full else machine_id[:8]
    return f"{shown}/{machine.ip}" if machine is not None and machine.ip else shown


def _state_text(state: UnitState) -> str:
    text = f"{state.load}/{state.active}/{state.sub}"
    return f"{text}: {state.message}" if state.message else text


def _pending_detail(view: ClusterView, name: str, record: UnitRecord, no_engine: bool) -> str:
    placed = view.schedule.get(name)
    states = view.states.get(name, {})
    if placed is not None:
        machine = placed[0]
        state = states.get(machine)
        where = machine_label(view, machine)
        shown = (
            f"placed on {where}, reports {_state_text(state)}"
            if state is not None
            else f"placed on {where}, no state reported yet"
        )
        # Placed but held by the engine (a Requires= dependency not active): say why.
        held = view.reasons.get(name)
        return f"{shown}; {held}" if held else shown
    if record.is_global:
        if not view.machines:
            from ..scheduler import NO_MACHINES  # the engine's own words

            return NO_MACHINES
        if states:
            return "reported as " + ", ".join(
                f"{_state_text(s)} on {machine_label(view, m)}" for m, s in sorted(states.items())
            )
        return "no machine has reported it yet"
    if no_engine:
        return "no engine is running"
    reason = view.reasons.get(name)
    return f"not placed: {reason}" if reason else "not placed yet"


def started(state: UnitState) -> bool | None:
    """Whether a unit started on a machine: True, False (its start failed), or None (not
    known yet). fleetpy's rule is systemd's, `systemctl start`'s: a unit started when its
    start job ended "done" (or "skipped": a Condition= did not hold). That is at fork for
    Type=simple (a program that exits at once is started, then failed), once the program
    runs for Type=exec, when it exited successfully for a oneshot (never "active" without
    RemainAfterExit=), at READY=1 for notify. Only a state whose agent did not start the
    unit itself (adopted after an agent restart) is judged by its ActiveState instead."""
    if state.job in JOB_STARTED:
        return True
    if state.job == JOB_PENDING:
        return None
    if state.job:
        return False
    if state.active == ActiveState.ACTIVE:
        return True
    return False if state.active == ActiveState.FAILED else None


def _failed(target: WaitTarget, state: UnitState, fresh: Callable[[str, str], bool]) -> bool:
    """Whether `state` ends a wait for `target` as a failure."""
    if target is WaitTarget.LAUNCHED and state.job and started(state) is False:
        return True  # systemd's start job failed: never stale (see evaluate)
    if target not in (WaitTarget.LAUNCHED, WaitTarget.LOADED):
        return False
    if not fresh(state.name, state.machine):
        return False
    # A machine refused to run it (no valid signature): waiting cannot help.
    return state.active == ActiveState.REJECTED or (
        target is WaitTarget.LAUNCHED and started(state) is False
    )


def evaluate(
    view: ClusterView,
    names: Sequence[str],
    target: WaitTarget,
    fresh: Callable[[str, str], bool] = lambda unit, machine: True,
    no_engine: bool = False,
) -> list[UnitProgress]:
    """Where each unit stands relative to the target desired state (`started` for launched).

    `fresh(unit, machine)` says whether a reported state is new enough to trust a
    failure its ActiveState shows (a stale failure from before the command is not one).
    A failed start job needs no such care: the agent starts a unit anew only after it
    stopped it, which clears the job it reports.
    """
    target = WaitTarget(target)  # also from a caller's plain string
    result: list[UnitProgress] = []
    for name in names:
        record = view.units.get(name)
        states = view.states.get(name, {})
        if target is WaitTarget.UNLOADED:
            if not states:
                result.append(UnitProgress(name, "done", "unloaded"))
            else:
                where = ", ".join(
                    f"{machine_label(view, m)} ({_state_text(s)})"
                    for m, s in sorted(states.items())
                )
                result.append(UnitProgress(name, "waiting", f"still reported on {where}"))
            continue
        if record is None:
            result.append(UnitProgress(name, "failed", "was destroyed while waiting"))
            continue
        current = {m: s for m, s in states.items() if s.hash == record.hash}
        if target is WaitTarget.STOPPED:
            if any(s.active in RUNNING_STATES for s in current.values()):
                pass  # still running somewhere: fall through to "waiting"
            elif current:
                where = ", ".join(machine_label(view, m) for m in sorted(current))
                result.append(UnitProgress(name, "done", f"stopped on {where}"))
                continue
            elif not states and name not in view.schedule:
                result.append(UnitProgress(name, "done", "stopped (not placed)"))
                continue
        if target is WaitTarget.LAUNCHED:
            reached = [m for m, s in sorted(current.items()) if started(s)]
        elif target is WaitTarget.LOADED:
            reached = [
                m
                for m, s in sorted(current.items())
                if s.load == LoadState.LOADED and s.active not in RUNNING_STATES
            ]
        else:
            reached = []
        if reached:
            where = ", ".join(machine_label(view, m) for m in reached)
            # Started, and no longer running (a oneshot done, a program that exited): say so.
            now = [
                _state_text(current[m]) for m in reached if current[m].active != ActiveState.ACTIVE
            ]
            since = f" (now {', '.join(now)})" if now else ""
            result.append(UnitProgress(name, "done", f"{target} on {where}{since}"))
            continue
        failed = [(m, s) for m, s in sorted(current.items()) if _failed(target, s, fresh)]
        if failed:
            machine, state = failed[0]
            what = "rejected" if state.active == ActiveState.REJECTED else "failed"
            why = ""
            if state.job == JOB_REFUSED:
                why = " (systemd refused to start it)"
            elif state.job:
                why = f" (start job {state.job})"  # systemd's result: failed, timeout, ...
            where = machine_label(view, machine)
            detail = f"{what} on {where}: {_state_text(state)}{why}"
            result.append(UnitProgress(name, "failed", detail))
            continue
        result.append(UnitProgress(name, "waiting", _pending_detail(view, name, record, no_engine)))
    return result


def wait_for(
    registry: OperatorRegistry,
    names: Sequence[str],
    target: WaitTarget,
    attempts: int = 60,
    on_progress: Callable[[list[UnitProgress]], None] | None = None,
) -> WaitResult:
    """Block until every unit reaches `target` as reported by the cluster.

    Each attempt is one second of waiting; attempts=0 waits forever. Wakes on
    watch events (states, schedule, machines), with a slow full re-read as backstop.
    Failed units end their wait at once instead of running out the clock.
    """
    from ..live_view import SETTLE_SECONDS, LiveView

    started = time.monotonic()
    deadline = None if attempts == 0 else started + attempts
    live = LiveView(registry)
    last_full_read = started

    def fresh(unit: str, machine: str) -> bool:
        # A failed state from before we began may be stale: trust it once re-reported,
        # or once the agent had time to act on our change.
        return live.fresh(unit, machine) or time.monotonic() - started >= STALE_FAILED_GRACE

    try:
        view = live.view
        while True:
            progress = evaluate(view, names, target, fresh)
            if on_progress is not None:
                on_progress(progress)
            now = time.monotonic()
            if all(p.status != "waiting" for p in progress):
                return WaitResult(target, tuple(progress), now - started, False, attempts)
            if deadline is not None and now >= deadline:
                # Explain the wait with the freshest facts, including a missing engine.
                view = registry.read_view(with_text=False)
                no_engine = registry.leader() is None
                progress = evaluate(view, names, target, fresh, no_engine)
                return WaitResult(
                    target,
                    tuple(progress),
                    now - started,
                    any(p.status == "waiting" for p in progress),
                    attempts,
                )
            timeout = BACKSTOP_SECONDS - (now - last_full_read)
            if deadline is not None:
                timeout = min(timeout, deadline - now)
            if now - started < STALE_FAILED_GRACE:  # look again when stale failures count
                timeout = min(timeout, STALE_FAILED_GRACE - (now - started) + 0.01)
            if live.wake.wait(max(timeout, 0.0)):
                time.sleep(SETTLE_SECONDS)  # let a burst of events arrive together
            live.wake.clear()
            if time.monotonic() - last_full_read >= BACKSTOP_SECONDS:
                view, last_full_read = live.resync(), time.monotonic()
            else:
                view = live.update()
    finally:
        live.close()
