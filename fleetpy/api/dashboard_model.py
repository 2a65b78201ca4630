"""The dashboard's document: the cluster as one JSON-ready dict, a pure function of the
live view, the engine leader and the deployment records (table-tested without a server).

    {"revision": etcd revision of the view,
     "leader": the leading engine's id or null,
     "summary": {"machines": N, "units": N, "phases": {phase: N}},
     "machines": [{"id", "ip", "hostname", "metadata": {k: v}, "units": [names]}],
     "units": [{"name", "desired", "phase", "detail", "machine", "machines", "load",
                "active", "sub", "message", "hash", "global", "owner", "commit", "reason"}],
     "deployments": [{"name", "commit", "applying", "message", "target", "units",
                      "updated", "ready"}]}

A unit's `machine` is where the engine placed it (null: unplaced or global), `machines`
every machine that reports it; LOAD/ACTIVE/SUB are those reported by its placed machine
(else by the first that reports it). `phase` (Phase) sums up where it stands, `detail` says
why in words. A deployment's `target` is the commit it is rolling out (or last finished);
`updated` counts its units whose record carries that commit, `ready` those of them that
also reached their desired state: a rollout is done when both equal `units`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from ..model.records import ClusterView, DeploymentRecord, UnitRecord, UnitState
from ..states import RUNNING_STATES, ActiveState, DesiredState, LoadState


class Phase(StrEnum):
    ACTIVE = "active"  # desired launched, running on its machine
    LOADED = "loaded"  # desired loaded, loaded there and not running
    INACTIVE = "inactive"  # desired inactive (submitted only), running nowhere
    STARTING = "starting"  # placed; its machine has not reported the desired state yet
    MOVING = "moving"  # its machine is gone, or it still runs where it was moved from
    UNPLACED = "unplaced"  # wanted on a machine; the engine found none (see reason)
    FAILED = "failed"  # failed, or refused (signature), on its machine
    STOPPING = "stopping"  # no longer wanted running, still running somewhere


# The phases in which a unit is where its desired state asks (a rollout's "ready").
REACHED = frozenset({Phase.ACTIVE, Phase.LOADED, Phase.INACTIVE})


def _state_text(state: UnitState) -> str:
    return f"{state.load}/{state.active}/{state.sub}"


def _reached(desired: DesiredState, state: UnitState) -> Phase | None:
    if desired is DesiredState.LAUNCHED and state.active == ActiveState.ACTIVE:
        return Phase.ACTIVE
    if (
        desired is DesiredState.LOADED
        and state.load == LoadState.LOADED
        and state.active not in RUNNING_STATES
    ):
        return Phase.LOADED
    return None


def _failed(state: UnitState) -> bool:
    return state.active in (ActiveState.FAILED, ActiveState.REJECTED)


def unit_phase(view: ClusterView, record: UnitRecord) -> tuple[Phase, str]:
    """(phase, detail) of one unit."""
    name = record.name
    states = view.states.get(name, {})
    current = {m: s for m, s in states.items() if s.hash == record.hash}
    running = sorted(m for m, s in states.items() if s.active in RUNNING_STATES)
    reason = view.reasons.get(name)
    if record.desired is DesiredState.INACTIVE:
        if running:
            return Phase.STOPPING, f"still running on {', '.join(running)}"
        return Phase.INACTIVE, ""
    if record.is_global:
        if not current:
            return (
                (Phase.UNPLACED, reason)
                if reason
                else (Phase.STARTING, "no machine reports it yet")
            )
        failed = sorted(m for m, s in current.items() if _failed(s))
        if failed:
            return Phase.FAILED, f"failed on {', '.join(failed)}"
        if all(_reached(record.desired, s) for s in current.values()):
            return (Phase.ACTIVE if record.desired is DesiredState.LAUNCHED else Phase.LOADED), ""
        waiting = sorted(m for m, s in current.items() if not _reached(record.desired, s))
        return Phase.STARTING, f"not yet {record.desired} on {', '.join(waiting)}"
    placed = view.schedule.get(name)
    if placed is None:
        if running:  # the engine took it off a machine that still runs it
            return Phase.MOVING, f"still running on {', '.join(running)}; " + (
                f"not placed: {reason}" if reason else "not placed yet"
            )
        return Phase.UNPLACED, reason or "not placed yet"
    machine = placed[0]
    if machine not in view.machines:
        return Phase.MOVING, f"machine {machine} is gone; the engine will move it"
    elsewhere = sorted(m for m in running if m != machine)
    state = current.get(machine)
    if state is not None:
        reached = _reached(record.desired, state)
        if reached is not None:
            return reached, ""
        if _failed(state):
            return Phase.FAILED, state.message or f"{_state_text(state)} on {machine}"
    if elsewhere:
        return Phase.MOVING, f"moving from {', '.join(elsewhere)} to {machine}"
    if state is None:
        return Phase.STARTING, f"placed on {machine}, no state reported yet"
    return Phase.STARTING, f"placed on {machine}, reports {_state_text(state)}"


def _unit(view: ClusterView, record: UnitRecord, phase: Phase, detail: str) -> dict[str, Any]:
    states = view.states.get(record.name, {})
    placed = view.schedule.get(record.name)
    machine = None if record.is_global or placed is None else placed[0]
    shown = states.get(machine) if machine is not None else None
    if shown is None and states:
        shown = states[min(states)]
    return {
        "name": record.name,
        "desired": str(record.desired),
        "phase": str(phase),
        "detail": detail,
        "machine": machine,
        "machines": sorted(states),
        "load": shown.load if shown else "",
        "active": shown.active if shown else "",
        "sub": shown.sub if shown else "",
        "message": shown.message if shown else "",
        "hash": record.hash,
        "global": record.is_global,
        "owner": record.owner,
        "commit": record.origin,
        "reason": view.reasons.get(record.name),
    }


def _deployment(
    name: str,
    record: DeploymentRecord | None,
    units: list[tuple[UnitRecord, Phase]],
) -> dict[str, Any]:
    target = (record.applying or record.commit) if record is not None else ""
    if not target and units:  # no record (units applied by an older fleetpy): the usual commit
        target = Counter(u.origin or "" for u, _ in units).most_common(1)[0][0]
    updated = [(u, p) for u, p in units if target and u.origin == target]
    return {
        "name": name,
        "commit": record.commit if record is not None else "",
        "applying": record.applying if record is not None else "",
        "message": record.message if record is not None else "",
        "target": target,
        "units": len(units),
        "updated": len(updated),
        "ready": sum(1 for _, p in updated if p in REACHED),
    }


def document(
    view: ClusterView, leader: str | None, deployments: Mapping[str, DeploymentRecord]
) -> dict[str, Any]:
    """The whole dashboard, from what the server holds in memory (no etcd request)."""
    phases: dict[str, tuple[Phase, str]] = {
        name: unit_phase(view, record) for name, record in view.units.items()
    }
    on_machine: dict[str, set[str]] = {m: set() for m in view.machines}
    for unit, (machine, _) in view.schedule.items():
        on_machine.setdefault(machine, set()).add(unit)
    for unit, by_machine in view.states.items():
        for machine in by_machine:
            on_machine.setdefault(machine, set()).add(unit)
    owned: dict[str, list[tuple[UnitRecord, Phase]]] = {name: [] for name in deployments}
    for name, record in sorted(view.units.items()):
        if record.owner:
            owned.setdefault(record.owner, []).append((record, phases[name][0]))
    return {
        "revision": view.revision,
        "leader": leader,
        "summary": {
            "machines": len(view.machines),
            "units": len(view.units),
            "phases": dict(sorted(Counter(str(p) for p, _ in phases.values()).items())),
        },
        "machines": [
            {
                "id": m.id,
                "ip": m.ip,
                "hostname": m.hostname,
                "metadata": dict(sorted(m.metadata.items())),
                "units": sorted(on_machine.get(m.id, ())),
            }
            for _, m in sorted(view.machines.items())
        ],
        "units": [
            _unit(view, record, *phases[name]) for name, record in sorted(view.units.items())
        ],
        "deployments": [
            _deployment(name, deployments.get(name), units) for name, units in sorted(owned.items())
        ],
    }


__all__ = ["REACHED", "Phase", "document", "unit_phase"]
