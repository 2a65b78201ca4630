"""The dashboard's document: the cluster as one JSON-ready dict, a pure function of the
live view, the engine leader and the deployment records (table-tested without a server).

    {"revision": etcd revision of the view,
     "leader": the leading engine's id or null,
     "summary": {"machines": N, "units": N, "phases": {phase: N}},
     "machines": [{"id", "ip", "hostname", "metadata": {k: v}, "units": [names],
                   "cordon": as list-machines shows it, or null,
                   "resources": its CPUs and memory, and what its units use, or null}],
     "units": [{"name", "desired", "phase", "detail", "machine", "machines", "load",
                "active", "sub", "health", "message", "hash", "global", "owner", "commit",
                "reason"}],
     "deployments": [{"name", "commit", "applying", "message", "target", "units",
                      "updated", "ready"}]}

`Dashboard` keeps that document current by parts: each change recomputes only the units
and machines it touched, and says what changed as a delta (`apply_delta` applies one to a
document: the browser's code does the same):

    {"seq": N (the previous delta's + 1), "revision", "leader", "summary",
     "units": [rows set, whole], "gone": [names removed],
     "machines": [rows set], "machines_gone": [ids removed],
     "deployments": [every deployment] (only when one changed)}

A unit's `machine` is where the engine placed it (null: unplaced or global), `machines`
every machine that reports it; LOAD/ACTIVE/SUB are those reported by its placed machine
(else by the first that reports it). `phase` (Phase) sums up where it stands, `detail` says
why in words. A deployment's `target` is the commit it is rolling out (or last finished);
`updated` counts its units whose record carries that commit, `ready` those of them that
also reached their desired state: a rollout is done when both equal `units`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Any

from ..client.listings import cordon_text, resources_summary
from ..model.records import ClusterView, DeploymentRecord, MachineRecord, UnitRecord, UnitState
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


def _unhealthy(states: Mapping[str, UnitState]) -> str:
    """A detail for an active unit whose container turned unhealthy (fleetpy.health)."""
    sick = sorted(m for m, s in states.items() if s.health == "unhealthy")
    return f"container unhealthy on {', '.join(sick)}" if sick else ""


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
            launched = record.desired is DesiredState.LAUNCHED
            return (Phase.ACTIVE if launched else Phase.LOADED), _unhealthy(current)
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
            return reached, _unhealthy({machine: state})
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
        "health": shown.health if shown else "",
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
                "cordon": _cordon(view, m.id),
                "resources": resources_summary(m.capacity, m.used),
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


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _machine(machine: MachineRecord, units: Collection[str], cordon: str | None) -> dict[str, Any]:
    return {
        "id": machine.id,
        "ip": machine.ip,
        "hostname": machine.hostname,
        "metadata": dict(sorted(machine.metadata.items())),
        "units": sorted(units),
        "cordon": cordon,
        "resources": resources_summary(machine.capacity, machine.used),
    }


def _cordon(view: ClusterView, machine: str) -> str | None:
    """A machine's cordon as list-machines shows it (null: none)."""
    record = view.cordons.get(machine)
    return None if record is None else cordon_text(record)


def _where(view: ClusterView, name: str) -> frozenset[str]:
    """The machines a unit counts on: where it is placed and where it is reported."""
    placed = view.schedule.get(name)
    where = set(view.states.get(name, ()))
    if placed is not None:
        where.add(placed[0])
    return frozenset(where)


class Dashboard:
    """The document, kept by parts (each unit's and machine's row encoded once), and the
    delta of each change: a change costs what it touched, not the cluster's size.

    Not thread-safe: its owner (fleetpy.api.dashboard.DashboardFeed) serializes calls.
    """

    def __init__(self) -> None:
        self.seq = 0  # the last delta's number
        self.revision = 0
        self.leader: str | None = None
        self.units: dict[str, bytes] = {}  # name -> its row, encoded
        self.phases: dict[str, Phase] = {}
        self.owners: dict[str, str] = {}  # unit -> its deployment
        self.machines: dict[str, bytes] = {}  # id -> its row, encoded
        # unit -> the machines it counts on (a tuple: a frozenset of one costs 4x as much)
        self.where: dict[str, tuple[str, ...]] = {}
        self.on_machine: dict[str, set[str]] = {}  # machine -> units counting on it
        self.deployments = b"[]"
        self.owned: dict[str, set[str]] = {}  # deployment -> its units
        self.deployment_records: dict[str, DeploymentRecord] = {}
        self.deployment_rows: dict[str, bytes] = {}  # deployment -> its row, encoded
        self.phase_counts: Counter[str] = Counter()

    # -- building

    def rebuild(
        self, view: ClusterView, leader: str | None, deployments: Mapping[str, DeploymentRecord]
    ) -> None:
        """Everything anew (at start, and after the view was read again)."""
        self.units, self.phases, self.owners, self.machines = {}, {}, {}, {}
        self.where, self.on_machine, self.phase_counts = {}, {}, Counter()
        self.owned, self.deployment_records, self.deployment_rows = {}, {}, {}
        units = view.units.keys() | view.states.keys() | view.schedule.keys()
        self.update(view, units, view.machines.keys(), leader, deployments)

    def update(
        self,
        view: ClusterView,
        units: Collection[str],
        machines: Collection[str],
        leader: str | None,
        deployments: Mapping[str, DeploymentRecord],
    ) -> bytes | None:
        """Apply a change: `units` and `machines` are those whose records, placement,
        states, reason or metadata may have changed (more is harmless). Returns the delta
        (encoded), or None when nothing shown changed."""
        touched_units = set(units)
        touched_machines = set(machines)
        for machine in machines:  # a machine gone or back changes its units' phase
            touched_units.update(self.on_machine.get(machine, ()))
        set_units: list[bytes] = []
        gone: list[str] = []
        owners_touched: set[str] = set()
        for name in sorted(touched_units):
            record = view.units.get(name)
            where = _where(view, name)
            old_where = frozenset(self.where.get(name, ()))
            if where != old_where:
                for machine in old_where - where:
                    self.on_machine[machine].discard(name)
                    if not self.on_machine[machine]:
                        del self.on_machine[machine]
                for machine in where - old_where:
                    self.on_machine.setdefault(machine, set()).add(name)
                touched_machines |= where ^ old_where
                if where:
                    self.where[name] = tuple(where)
                else:
                    self.where.pop(name, None)
            old_owner = self.owners.pop(name, None)
            if old_owner:
                owners_touched.add(old_owner)
                self.owned[old_owner].discard(name)
            old_phase = self.phases.pop(name, None)
            if old_phase is not None:
                self.phase_counts[old_phase] -= 1
            if record is None:
                if self.units.pop(name, None) is not None:
                    gone.append(name)
                continue
            phase, detail = unit_phase(view, record)
            self.phases[name] = phase
            self.phase_counts[phase] += 1
            if record.owner:
                self.owners[name] = record.owner
                self.owned.setdefault(record.owner, set()).add(name)
                owners_touched.add(record.owner)
            row = _json(_unit(view, record, phase, detail))
            if self.units.get(name) != row:
                self.units[name] = row
                set_units.append(row)
        set_machines: list[bytes] = []
        machines_gone: list[str] = []
        for machine_id in sorted(touched_machines):
            found = view.machines.get(machine_id)
            if found is None:
                if self.machines.pop(machine_id, None) is not None:
                    machines_gone.append(machine_id)
                continue
            row = _json(
                _machine(found, self.on_machine.get(machine_id, ()), _cordon(view, machine_id))
            )
            if self.machines.get(machine_id) != row:
                self.machines[machine_id] = row
                set_machines.append(row)
        deployments_row = self._deployments(view, deployments, owners_touched)
        changed_deployments = deployments_row != self.deployments
        self.deployments = deployments_row
        summary = self._summary()
        if (
            not (set_units or gone or set_machines or machines_gone or changed_deployments)
            and view.revision == self.revision
            and leader == self.leader
        ):
            return None
        self.revision, self.leader = view.revision, leader
        self.seq += 1
        parts = [
            b'{"seq":%d,"revision":%d,"leader":%s,"summary":%s'
            % (self.seq, view.revision, _json(leader), _json(summary)),
            b',"units":[' + b",".join(set_units) + b"]",
            b',"gone":' + _json(gone),
            b',"machines":[' + b",".join(set_machines) + b"]",
            b',"machines_gone":' + _json(machines_gone),
        ]
        if changed_deployments:
            parts.append(b',"deployments":' + deployments_row)
        return b"".join(parts) + b"}"

    def _summary(self) -> dict[str, Any]:
        phases = {str(p): n for p, n in sorted(self.phase_counts.items()) if n}
        return {"machines": len(self.machines), "units": len(self.units), "phases": phases}

    def _deployments(
        self,
        view: ClusterView,
        deployments: Mapping[str, DeploymentRecord],
        owners_touched: set[str],
    ) -> bytes:
        """Every deployment's row; only those whose record or units changed computed."""
        changed = owners_touched | {
            name
            for name in deployments.keys() | self.deployment_records.keys()
            if deployments.get(name) != self.deployment_records.get(name)
        }
        self.deployment_records = dict(deployments)
        for name in changed:
            units = sorted(self.owned.get(name, ()))
            if not units:
                self.owned.pop(name, None)
            if name not in deployments and not units:
                self.deployment_rows.pop(name, None)
                continue
            members = [(view.units[u], self.phases[u]) for u in units]
            self.deployment_rows[name] = _json(_deployment(name, deployments.get(name), members))
        rows = self.deployment_rows
        return b"[" + b",".join(rows[name] for name in sorted(rows)) + b"]"

    # -- reading

    def snapshot(self) -> bytes:
        """The whole document (document()'s, with "seq"), encoded: made when asked (a new
        stream, a client behind), not kept (at 100,000 units it is tens of MB)."""
        return (
            b'{"revision":%d,"leader":%s,"summary":%s,"machines":['
            % (self.revision, _json(self.leader), _json(self._summary()))
            + b",".join(self.machines[m] for m in sorted(self.machines))
            + b'],"units":['
            + b",".join(self.units[u] for u in sorted(self.units))
            + b'],"deployments":'
            + self.deployments
            + b',"seq":%d}' % self.seq
        )


def apply_delta(doc: dict[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """`doc` (a snapshot, or one with deltas applied) with `delta` applied, in order:
    ValueError when `delta` is not the next one (the reader missed one: read a snapshot)."""
    if delta["seq"] != doc["seq"] + 1:
        raise ValueError(f"delta {delta['seq']} after {doc['seq']}: one was missed")
    units = {u["name"]: u for u in doc["units"]}
    for name in delta["gone"]:
        units.pop(name, None)
    units.update((u["name"], u) for u in delta["units"])
    machines = {m["id"]: m for m in doc["machines"]}
    for machine in delta["machines_gone"]:
        machines.pop(machine, None)
    machines.update((m["id"], m) for m in delta["machines"])
    return {
        "revision": delta["revision"],
        "leader": delta["leader"],
        "summary": delta["summary"],
        "machines": [machines[m] for m in sorted(machines)],
        "units": [units[u] for u in sorted(units)],
        "deployments": delta.get("deployments", doc["deployments"]),
        "seq": delta["seq"],
    }


__all__ = ["REACHED", "Dashboard", "Phase", "apply_delta", "document", "unit_phase"]
