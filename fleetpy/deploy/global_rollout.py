"""Rolling updates of global units: `apply` (a new version) and `restart` replace a global
unit a few machines at a time (--max-unavailable), each step waiting until the unit is
active on the step's machines before the next.

The roll lives in the unit's global entry (fleetpy.model.global_rolls), so a killed
client leaves it where it stood: agents not yet moved keep the previous version, a
machine that joins runs the new one, and the next `apply` (or `restart`) goes on from
there. Each step is one transaction. What a step's machines report is judged by `judge`,
a pure function of the cluster view.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from enum import StrEnum

from ..client.waiting import machine_label, started
from ..errors import DeploymentError
from ..health import Health
from ..live_view import LiveView
from ..model.records import ClusterView, DeploymentSession, ScheduleEntry
from ..registry.roles import OperatorRegistry
from ..states import RUNNING_STATES, ActiveState


class Phase(StrEnum):
    STARTED = "active"  # the step's version started (a new version, or a restart's start)
    STOPPED = "stopped"  # a rolling restart's stop


class Status(StrEnum):
    WAITING = "waiting"
    DONE = "done"
    # Not registered: waited for like WAITING (etcd may be back in a moment, and the agent
    # with it); a machine still gone at the next step is moved without a wait.
    GONE = "gone"
    FAILED = "failed"


@dataclass(frozen=True)
class MachineProgress:
    machine: str
    status: Status
    detail: str


@dataclass(frozen=True)
class RollOptions:
    max_unavailable: int = 1  # machines replaced at once
    min_ready: float = 0.0  # seconds each step's machines must stay active
    timeout: float = 120.0  # seconds a step may take


# (step, detail, machines done, machines in all), for display.
Report = Callable[[str, str, int, int], None]


def next_batch(
    waiting: Set[str], alive: Set[str], size: int
) -> tuple[frozenset[str], frozenset[str]]:
    """(the next step's machines, the waiting machines that left the cluster): the step
    takes up to SIZE live machines in id order; gone ones are moved with it, costing
    nothing (they run nothing now, and run the new version if they come back)."""
    live = sorted(m for m in waiting if m in alive)
    return frozenset(live[: max(1, size)]), frozenset(m for m in waiting if m not in alive)


def judge(
    view: ClusterView, unit: str, want: Mapping[str, str], phase: Phase
) -> list[MachineProgress]:
    """Where each of a step's machines stands: WANT maps each to the content hash it must
    run (STARTED) or have stopped (STOPPED)."""
    result: list[MachineProgress] = []
    states = view.states.get(unit, {})
    for machine, content_hash in sorted(want.items()):
        where = machine_label(view, machine)
        state = states.get(machine)
        if machine not in view.machines:
            result.append(MachineProgress(machine, Status.GONE, f"{where} left the cluster"))
            continue
        if phase is Phase.STOPPED:
            if state is None or state.active not in RUNNING_STATES:
                result.append(MachineProgress(machine, Status.DONE, f"stopped on {where}"))
            else:
                shown = f"{state.active}/{state.sub}"
                result.append(MachineProgress(machine, Status.WAITING, f"{where} reports {shown}"))
            continue
        if state is None:
            # The agent removed it: this version does not select the machine (metadata,
            # Conflicts=); nothing runs there to wait for.
            result.append(MachineProgress(machine, Status.DONE, f"no longer runs on {where}"))
            continue
        shown = f"{state.load}/{state.active}/{state.sub}"
        if state.message:
            shown += f": {state.message}"
        if state.hash != content_hash:
            result.append(
                MachineProgress(machine, Status.WAITING, f"{where} still runs the previous version")
            )
        elif state.active == ActiveState.REJECTED:
            result.append(MachineProgress(machine, Status.FAILED, f"rejected on {where}: {shown}"))
        elif state.active == ActiveState.FAILED or started(state) is False:
            why = f" (start job {state.job})" if state.job and started(state) is False else ""
            result.append(
                MachineProgress(machine, Status.FAILED, f"failed on {where}: {shown}{why}")
            )
        elif started(state) and state.health == Health.UNHEALTHY:
            # Active once its start's health wait passed, unhealthy since: not done (its
            # agent restarts it in place; the step's timeout says so if it stays).
            result.append(MachineProgress(machine, Status.WAITING, f"unhealthy on {where}"))
        elif started(state):
            result.append(MachineProgress(machine, Status.DONE, f"active on {where}"))
        else:
            result.append(MachineProgress(machine, Status.WAITING, f"{where} reports {shown}"))
    return result


def still_active(view: ClusterView, unit: str, want: Mapping[str, str]) -> list[MachineProgress]:
    """After min-ready: the step's machines whose unit did not stay active (and healthy)."""
    problems = []
    for progress in judge(view, unit, want, Phase.STARTED):
        state = view.states.get(unit, {}).get(progress.machine)
        if progress.status is Status.FAILED or (
            progress.status is not Status.GONE
            and state is not None
            and (state.active != ActiveState.ACTIVE or state.health == Health.UNHEALTHY)
        ):
            where = machine_label(view, progress.machine)
            shown = "no state" if state is None else f"{state.active}/{state.sub}"
            if state is not None and state.health == Health.UNHEALTHY:
                shown += ", unhealthy"
            problems.append(
                MachineProgress(
                    progress.machine, Status.FAILED, f"did not stay active on {where} ({shown})"
                )
            )
    return problems


def settle(
    live: LiveView,
    unit: str,
    want: Callable[[ClusterView], Mapping[str, str]],
    phase: Phase,
    timeout: float,
) -> str | None:
    """Wait until each machine of WANT(view) (machine -> the content hash it must run or
    have stopped) reached PHASE, or failed. None when each did; else why not, in one line:
    the failures, or else what the timeout left waiting."""
    progress: list[MachineProgress] = []

    def settled(view: ClusterView) -> bool:
        nonlocal progress
        progress = judge(view, unit, want(view), phase)
        return all(p.status in (Status.DONE, Status.FAILED) for p in progress)

    live.wait_until(settled, timeout)
    failed = [p for p in progress if p.status is Status.FAILED]
    waiting = [p for p in progress if p.status in (Status.WAITING, Status.GONE)]
    if failed:
        return "; ".join(p.detail for p in failed)
    if waiting:
        return f"timed out after {timeout:g}s waiting for it to be {phase}: " + "; ".join(
            p.detail for p in waiting
        )
    return None


def wait_everywhere(
    registry: OperatorRegistry, name: str, content_hash: str, timeout: float
) -> str | None:
    """None once every registered machine that reports NAME runs CONTENT_HASH, started;
    else why not, in one line. A rollback's wait: each machine it moved back must run the
    previous version, not only one of them (which a wait for "launched" is content with)."""

    def reporting(view: ClusterView) -> dict[str, str]:
        machines = view.states.get(name, {}).keys() & view.machines.keys()
        return dict.fromkeys(machines, content_hash)

    live = LiveView(registry).follow()
    try:
        return settle(live, name, reporting, Phase.STARTED, timeout)
    finally:
        live.close()


class _Roll:
    """One client's roll of one global unit: its steps and their waits."""

    def __init__(
        self,
        registry: OperatorRegistry,
        name: str,
        options: RollOptions,
        report: Report,
        session: DeploymentSession | None,
    ) -> None:
        self.registry = registry
        self.name = name
        self.options = options
        self.report = report
        self.session = session
        self.live = LiveView(registry).follow()
        self.done = 0

    def close(self) -> None:
        self.live.close()

    def entry(self) -> ScheduleEntry:
        found = self.registry.get_global(self.name)
        if found is None:
            raise DeploymentError(f"{self.name} was destroyed during its rolling update")
        return found[0]

    def wait(self, want: Mapping[str, str], phase: Phase, total: int) -> None:
        """Until every machine of WANT reached PHASE; DeploymentError saying which did
        not, and why, when one failed or the step's timeout ran out."""
        why = settle(self.live, self.name, lambda view: want, phase, self.options.timeout)
        if why is not None:
            raise self.stopped(why, total)
        if phase is Phase.STARTED and self.options.min_ready > 0:
            self.report("ready", f"{self.options.min_ready:g}s", self.done, total)
            time.sleep(self.options.min_ready)
            problems = still_active(self.live.current(), self.name, want)
            if problems:
                raise self.stopped("; ".join(p.detail for p in problems), total)

    def stopped(self, why: str, total: int) -> DeploymentError:
        return DeploymentError(
            f"{why} ({self.done} of {total} machines done; the others keep what they run; "
            "run the command again to go on)"
        )


def roll_version(
    registry: OperatorRegistry,
    name: str,
    options: RollOptions,
    report: Report = lambda step, detail, done, total: None,
    session: DeploymentSession | None = None,
) -> int:
    """Move NAME's machines that still run its previous version to the entry's, a step of
    max_unavailable machines at a time. Returns how many machines were moved."""
    roll = _Roll(registry, name, options, report, session)
    try:
        entry = roll.entry()
        total = len(entry.roll.waiting) if entry.roll is not None else 0
        while entry.roll is not None and entry.roll.previous is not None and entry.roll.waiting:
            batch, gone = next_batch(
                entry.roll.waiting, roll.live.current().machines.keys(), options.max_unavailable
            )
            roll.report("roll", _machines(batch), roll.done, total)
            # Moved and let run: what a killed restart left stopped there starts too.
            moved = batch | gone
            entry = registry.step_global_roll(name, moved, start=moved, session=session) or entry
            roll.wait(dict.fromkeys(batch, entry.hash), Phase.STARTED, total)
            roll.done += len(batch) + len(gone)
            entry = roll.entry()
        return roll.done
    finally:
        roll.close()


def restart_global(
    registry: OperatorRegistry,
    name: str,
    options: RollOptions,
    report: Report = lambda step, detail, done, total: None,
) -> int:
    """Restart NAME where it runs, max_unavailable machines at a time: stop it there, wait
    until it stopped, start it again, wait until it is active, then the next machines.
    Machines a killed restart left stopped are started first. Returns how many machines
    were restarted."""
    roll = _Roll(registry, name, options, report, None)
    try:
        entry = roll.entry()
        if entry.roll is not None and entry.roll.stopped:
            left = entry.roll.stopped
            roll.report("start", _machines(left), 0, len(left))
            entry = registry.step_global_roll(name, start=left) or entry
            roll.wait({m: entry.for_machine(m).hash for m in left}, Phase.STARTED, len(left))
        view = roll.live.current()
        machines = sorted(m for m in view.states.get(name, {}) if m in view.machines)
        total = len(machines)
        for first in range(0, total, max(1, options.max_unavailable)):
            batch = frozenset(machines[first : first + max(1, options.max_unavailable)])
            roll.report("restart", _machines(batch), roll.done, total)
            entry = registry.step_global_roll(name, stop=batch) or entry
            want = {m: entry.for_machine(m).hash for m in batch}
            roll.wait(want, Phase.STOPPED, total)
            entry = registry.step_global_roll(name, start=batch) or entry
            roll.wait(want, Phase.STARTED, total)
            roll.done += len(batch)
        return roll.done
    finally:
        roll.close()


def _machines(machines: Set[str]) -> str:
    shown = ", ".join(m[:8] for m in sorted(machines)[:4])
    return (
        "machine"
        + ("s " if len(machines) != 1 else " ")
        + shown
        + (" ..." if len(machines) > 4 else "")
    )


def rolling_machines(view: ClusterView, name: str) -> frozenset[str]:
    """The machines a new version of global unit NAME rolls over: those that report it."""
    return frozenset(m for m in view.states.get(name, {}) if m in view.machines)


__all__ = [
    "MachineProgress",
    "Phase",
    "RollOptions",
    "Status",
    "judge",
    "next_batch",
    "restart_global",
    "roll_version",
    "rolling_machines",
    "still_active",
]
