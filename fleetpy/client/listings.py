"""The rows of the listings (list-unit-files, list-units, list-machines, and fleet's API
units): what the cluster holds and machines report, as plain records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..resources import MILLI, NOTHING, Resources, format_cpus, format_memory, global_reservations
from ..states import RUNNING_STATES, DesiredState, LoadState

if TYPE_CHECKING:  # the records: loaded with the view a listing reads, not by --help
    from ..model.cordons import CordonRecord
    from ..model.records import MachineRecord
    from ..registry import ClusterView, UnitState
    from ..registry.roles import OperatorRegistry
    from ..registry.views import Listing


@dataclass(frozen=True)
class UnitFileRow:
    unit: str
    hash: str
    desired_state: DesiredState
    state: DesiredState  # fleet's STATE column, judged from what machines report
    machine: str | None  # None when unplaced, and for global units
    reason: str | None
    is_global: bool
    owner: str | None = None  # the deployment that created it
    origin: str | None = None  # the commit or digest it was applied from


@dataclass(frozen=True)
class UnitRow:
    unit: str
    machine: str
    ip: str
    load: str
    active: str
    sub: str
    hash: str
    message: str = ""  # why systemd refused the unit file, or the agent the unit
    health: str = ""  # a container's health (fleetpy.health), if it has a check


@dataclass(frozen=True)
class MachineRow:
    machine: str
    ip: str
    metadata: Mapping[str, str]
    cordon: CordonRecord | None = None  # an operator's cordon, drain or maintenance window
    capacity: Resources | None = None  # its CPUs and memory (None: an agent before reports)
    used: Resources | None = None  # what systemd accounts to its fleetpy units
    reserved: Resources | None = None  # its units' reservations (read only when asked)


def summary_state(states: Mapping[str, UnitState] | None) -> DesiredState:
    """fleet's STATE column: launched if running somewhere, loaded if loaded, else inactive."""
    if not states:
        return DesiredState.INACTIVE
    loaded = False
    for state in states.values():
        if state.active in RUNNING_STATES:
            return DesiredState.LAUNCHED
        loaded = loaded or state.load == LoadState.LOADED
    return DesiredState.LOADED if loaded else DesiredState.INACTIVE


def unit_file_rows(view: ClusterView | Listing) -> list[UnitFileRow]:
    from ..registry.views import Listing  # loaded by the read that made VIEW anyway

    if isinstance(view, Listing):
        placed = view.placed
    else:
        placed = {unit: machine for unit, (machine, _) in view.schedule.items()}
    states, reasons = view.states, view.reasons
    return [
        UnitFileRow(
            unit=name,
            hash=record.hash,
            desired_state=record.desired,
            state=summary_state(states.get(name)),
            machine=None if record.is_global else placed.get(name),
            reason=reasons.get(name),
            is_global=record.is_global,
            owner=record.owner,
            origin=record.origin,
        )
        for name, record in sorted(view.units.items())
    ]


def unit_rows(view: ClusterView | Listing) -> list[UnitRow]:
    rows = []
    machines = view.machines
    for name, by_machine in sorted(view.states.items()):
        for machine_id, state in sorted(by_machine.items()):
            machine = machines.get(machine_id)
            rows.append(
                UnitRow(
                    unit=name,
                    machine=machine_id,
                    ip=machine.ip if machine is not None else "",
                    load=state.load,
                    active=state.active,
                    sub=state.sub,
                    hash=state.hash,
                    message=state.message,
                    health=state.health,
                )
            )
    return rows


def machine_rows(registry: OperatorRegistry, reservations: bool = False) -> list[MachineRow]:
    """The machines; RESERVATIONS: with what their units reserve (every unit record and
    each placed unit's contents read: only when a listing shows it)."""
    machines = registry.list_machines()
    cordons = registry.cordons() if machines else {}
    reserved = reserved_on(registry, machines) if reservations and machines else {}
    return [
        MachineRow(
            machine=m.id,
            ip=m.ip,
            metadata=dict(sorted(m.metadata.items())),
            cordon=cordons.get(m.id),
            capacity=m.capacity,
            used=m.used,
            reserved=reserved.get(m.id, NOTHING) if reservations else None,
        )
        for _, m in sorted(machines.items())
    ]


def reserved_on(
    registry: OperatorRegistry, machines: Mapping[str, MachineRecord]
) -> dict[str, Resources]:
    """Machine -> the reservations of the units placed there and of the global units
    that run there, as the engine counts them (fleetpy.resources)."""
    from ..errors import FleetpyError
    from ..unitfile.unit import FleetOptions, fleet_options, is_template, parse_unit

    listing = registry.read_listing(units=True, placed=True)
    records = listing.units
    running = {
        name: record
        for name, record in records.items()
        if name in listing.placed
        or (record.is_global and record.desired is DesiredState.LAUNCHED and not is_template(name))
    }
    texts = registry.get_contents(sorted({record.hash for record in running.values()}))
    options: dict[str, FleetOptions] = {}
    for name, record in running.items():
        try:
            options[name] = fleet_options(parse_unit(texts.get(record.hash, ""), name), name)
        except FleetpyError:
            continue  # an invalid unit is never placed: it reserves nothing
    reserved = global_reservations(
        (options[n] for n in options if records[n].is_global),
        {machine: record.metadata for machine, record in machines.items()},
    )
    for name, machine in listing.placed.items():
        if name in options and not records[name].is_global:
            reserved[machine] = reserved.get(machine, NOTHING) + options[name].reserves
    return reserved


def resources_text(figures: Resources | None, memory: bool) -> str:
    """A machine's memory or CPUs for a table: `7.5 GiB`, `2 CPUs`; `-` if not reported."""
    if figures is None:
        return "-"
    return format_memory(figures.memory) if memory else format_cpus(figures.cpu)


def reserved_text(reserved: Resources | None) -> str:
    """What a machine's units reserve: `3 GiB, 1.5 CPUs`; `-` for nothing."""
    if not reserved:
        return "-"
    return f"{format_memory(reserved.memory)}, {format_cpus(reserved.cpu)}"


def free_text(capacity: Resources | None, reserved: Resources | None) -> str:
    """What a machine has left for new reservations (the engine's arithmetic)."""
    if capacity is None or reserved is None:
        return "-"
    free = capacity - reserved
    return f"{format_memory(max(free.memory, 0))}, {format_cpus(max(free.cpu, 0))}"


def resources_summary(capacity: Resources | None, used: Resources | None) -> str | None:
    """A machine's resources in one line (the dashboard): `4 CPUs, 7.5 GiB (used: 0.3
    CPUs, 1.2 GiB)`; None if its agent does not report them."""
    if capacity is None:
        return None
    text = f"{format_cpus(capacity.cpu)}, {format_memory(capacity.memory)}"
    if used is not None:
        text += f" (used: {format_cpus(used.cpu)}, {format_memory(used.memory)})"
    return text


def resources_json(figures: Resources | None) -> dict[str, object] | None:
    """A machine's resources as list-machines -o json and the fleet API show them."""
    if figures is None:
        return None
    return {"memory": figures.memory, "cpus": figures.cpu / MILLI}


def cordon_text(record: CordonRecord | None) -> str:
    """A machine's cordon in a word or three: cordoned, draining (max N), maintenance
    until ..."""
    from ..drain import until_text
    from ..model.cordons import CordonMode

    if record is None:
        return "-"
    if record.maintenance_until is not None:
        return f"maintenance until {until_text(record)}"
    if record.mode is CordonMode.DRAINING:
        globals_too = ", global units too" if record.include_global else ""
        return f"draining (max {record.max_unavailable}{globals_too})"
    return "cordoned"


def cordon_json(record: CordonRecord | None) -> dict[str, object] | None:
    """A machine's cordon as list-machines -o json and the fleet API show it."""
    if record is None:
        return None
    return {
        "mode": str(record.mode),
        "maxUnavailable": record.max_unavailable,
        "includeGlobal": record.include_global,
        "maintenanceUntil": record.maintenance_until,
        "by": record.by,
        "at": record.at,
    }
