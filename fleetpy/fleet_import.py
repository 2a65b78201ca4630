"""What `fleetpy migrate --from-fleet` writes: a pure plan from fleet's keyspace
(fleetpy.fleet_keyspace) and fleetpy's own desired state.

- Each of fleet's units becomes a fleetpy unit with the same name, contents (fleetpy's
  canonical text of fleet's, hashed its way) and desired state; a global one a global
  unit. A unit fleet placed (loaded or launched, on a machine fleetd still registers) gets
  its schedule entry on that very machine, so the agent there adopts what fleet started
  and nothing moves; one fleet had not placed (or whose machine is gone) is left to
  fleetpy's engine, as fleet's would have placed it.
- A unit fleetpy would refuse (a name, syntax or [X-Fleet] option it does not take; its
  contents missing from fleet's keyspace; the name already in fleetpy with other contents)
  is listed with the reason and not written: it stays under fleet.
- Only what is missing is written: a unit fleetpy already has with these contents is
  left as fleetpy has it (its desired state may have changed since), so migrating twice,
  or again after an interruption, writes only what the first run did not.
- Machines: fleet's metadata of each machine (fleetd's own with operators' changes) goes
  into the machine's operators' overlay, unless operators gave it one in fleetpy already.
  A machine hosting migrated units whose fleetpy agent has not registered yet is held: a
  maintenance cordon (fleetpy.drain) keeps its units where they are while its host is
  handed over, instead of fleetpy's engine moving them as from a lost machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from .errors import FleetpyError
from .fleet_keyspace import FleetSnapshot, FleetUnit
from .metadata import MAX_ITEMS, Overlay, key_problem, value_problem
from .model.codecs import MACHINE_ID
from .states import PLACED_STATES, DesiredState
from .unitfile.unit import checked_as, fleet_options, parse_name, parse_unit


@dataclass(frozen=True)
class FleetpySide:
    """What fleetpy's keyspace holds that the plan depends on."""

    units: Mapping[str, str] = field(default_factory=dict)  # name -> content hash
    newer_units: Set[str] = frozenset()  # records too new for this fleetpy to read
    registered: Set[str] = frozenset()  # machines whose fleetpy agent reports now
    overlays: Mapping[str, Overlay] = field(default_factory=dict)
    cordoned: Set[str] = frozenset()
    engine_leads: bool = False  # placements are written only while no engine leads


# Why a migration writes nothing while an engine leads (the schedule is the engine's).
ENGINE_LEADS = (
    "an engine leads this prefix: a migration writes placements only while none does (the "
    "engine places units itself); stop the engines, migrate, then start them"
)


@dataclass(frozen=True)
class ImportedUnit:
    name: str
    text: str  # fleetpy's canonical text
    hash: str  # fleetpy's content hash of it
    desired: DesiredState
    is_global: bool = False
    machine: str | None = None  # where fleet placed it (its schedule entry goes there)
    note: str = ""


@dataclass(frozen=True)
class Left:
    """A unit or machine the plan does not write, and why."""

    name: str
    why: str


@dataclass(frozen=True)
class MigrationPlan:
    units: tuple[ImportedUnit, ...] = ()
    metadata: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # machine -> overlay
    holds: tuple[str, ...] = ()  # machines to hold (maintenance cordon) for their hand-over
    refused: tuple[Left, ...] = ()  # fleet units fleetpy does not take: they stay under fleet
    kept: tuple[Left, ...] = ()  # already in fleetpy, left as they are
    unchanged: tuple[str, ...] = ()  # units fleetpy has with fleet's contents already

    @property
    def has_changes(self) -> bool:
        return bool(self.units or self.metadata or self.holds)


def converted(unit: FleetUnit) -> ImportedUnit | str:
    """fleet's unit as fleetpy stores it, or why fleetpy refuses it."""
    try:
        parsed = parse_name(unit.name)
        if parsed.name != unit.name:
            return f"invalid unit name {unit.name!r}"
        contents = parse_unit(unit.text, unit.name)
        if contents.sections() and "Container" in contents.sections():
            # fleetpy would expand it into another unit than the one fleet ran.
            return "a [Container] section, which fleetpy runs differently from fleet"
        options = fleet_options(contents, checked_as(unit.name))
    except FleetpyError as exc:
        return str(exc)
    desired = DesiredState(unit.target_state)
    return ImportedUnit(unit.name, contents.serialize(), contents.hash, desired, options.is_global)


def _placed(unit: ImportedUnit, fleet_unit: FleetUnit, machines: Set[str]) -> ImportedUnit | str:
    """Where fleet's engine had placed it, if it stands (or why fleetpy cannot have it there)."""
    if unit.is_global or parse_name(unit.name).is_template:
        return unit
    if unit.desired not in PLACED_STATES:
        return unit  # fleet's engine unplaces an inactive unit; fleetpy never places one
    target = fleet_unit.target
    if target is None:
        return _with_note(unit, "fleet had not placed it; fleetpy's engine places it")
    if not MACHINE_ID.fullmatch(target):
        return f"fleet placed it on {target!r}, a machine id fleetpy does not take"
    if target not in machines:
        return _with_note(
            unit,
            f"fleet placed it on {target}, which fleet no longer lists; fleetpy's engine places it",
        )
    return ImportedUnit(
        unit.name, unit.text, unit.hash, unit.desired, unit.is_global, target, unit.note
    )


def _with_note(unit: ImportedUnit, note: str) -> ImportedUnit:
    return ImportedUnit(unit.name, unit.text, unit.hash, unit.desired, unit.is_global, None, note)


def _metadata_problem(metadata: Mapping[str, str]) -> str | None:
    if len(metadata) > MAX_ITEMS:
        return f"{len(metadata)} metadata items (fleetpy takes at most {MAX_ITEMS})"
    for key, value in sorted(metadata.items()):
        problem = key_problem(key) or value_problem(key, value)
        if problem:
            return problem
    return None


def plan(fleet: FleetSnapshot, fleetpy: FleetpySide) -> MigrationPlan:
    """What to write into fleetpy so that it holds fleet's desired state."""
    units: list[ImportedUnit] = []
    refused: list[Left] = []
    kept: list[Left] = []
    unchanged: list[str] = []
    hosting: set[str] = set()  # machines fleet placed migrated units on
    for name, sha1 in sorted(fleet.missing_contents.items()):
        refused.append(Left(name, f"its contents ({sha1[:7]}) are missing from fleet's keyspace"))
    for name, fleet_unit in sorted(fleet.units.items()):
        found = converted(fleet_unit)
        if isinstance(found, str):
            refused.append(Left(name, found))
            continue
        unit = _placed(found, fleet_unit, fleet.machines.keys())
        if isinstance(unit, str):
            refused.append(Left(name, unit))
            continue
        if name in fleetpy.newer_units:
            kept.append(Left(name, "fleetpy has it, written by a newer fleetpy; left as it is"))
        elif name in fleetpy.units:
            if fleetpy.units[name] != unit.hash:
                refused.append(
                    Left(
                        name,
                        f"fleetpy has a unit of this name with other contents "
                        f"({fleetpy.units[name][:12]}, fleet's: {unit.hash[:12]}); destroy it "
                        "in fleetpy to migrate fleet's",
                    )
                )
                continue
            unchanged.append(name)
        else:
            units.append(unit)
        if unit.machine is not None:
            hosting.add(unit.machine)
    metadata: dict[str, Mapping[str, str]] = {}
    for machine_id, machine in sorted(fleet.machines.items()):
        if not machine.metadata:
            continue
        problem = (
            None if MACHINE_ID.fullmatch(machine_id) else "a machine id fleetpy does not take"
        ) or _metadata_problem(machine.metadata)
        overlay = fleetpy.overlays.get(machine_id)
        if problem:
            kept.append(Left(f"machine {machine_id}", f"metadata not migrated: {problem}"))
        elif not overlay:
            metadata[machine_id] = dict(machine.metadata)
        elif dict(overlay) != dict(machine.metadata):
            kept.append(
                Left(
                    f"machine {machine_id}",
                    "operators set its metadata in fleetpy already; left as it is",
                )
            )
    holds = sorted(hosting - fleetpy.registered - fleetpy.cordoned)
    return MigrationPlan(
        tuple(units), metadata, tuple(holds), tuple(refused), tuple(kept), tuple(unchanged)
    )
