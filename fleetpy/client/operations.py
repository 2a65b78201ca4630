"""What the CLI's unit verbs and fleet's API do to units: each plans (client.plans), then
writes in one go through Registry.change_units / destroy_units; a unit's text as shown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..errors import StateError, UnknownUnitError
from ..registry import UnitChange, UnitRecord
from ..registry.roles import OperatorRegistry
from ..states import DesiredState, verb
from ..unitfile.container import source_of
from ..unitfile.signing import Signer
from ..unitfile.unit import fleet_options, parse_name, parse_unit
from . import plans
from .arguments import select_units
from .plans import EDGES, CommandPlan, Contents, check_cycles, check_replace
from .verbs import LOAD, START, STOP, SUBMIT, UNLOAD


def apply(registry: OperatorRegistry, plan: CommandPlan) -> list[UnitRecord]:
    return registry.change_units(plan.changes, plan.known) if plan.changes else []


def submit(
    registry: OperatorRegistry,
    args: Sequence[str],
    signer: Signer | None = None,
    replace: bool = False,
) -> list[UnitRecord]:
    return apply(registry, plans.plan(registry, SUBMIT, args, signer, replace))


def load(
    registry: OperatorRegistry,
    args: Sequence[str],
    signer: Signer | None = None,
    replace: bool = False,
) -> list[UnitRecord]:
    return apply(registry, plans.plan(registry, LOAD, args, signer, replace))


def start(
    registry: OperatorRegistry,
    args: Sequence[str],
    signer: Signer | None = None,
    replace: bool = False,
) -> list[UnitRecord]:
    return apply(registry, plans.plan(registry, START, args, signer, replace))


def stop(registry: OperatorRegistry, args: Sequence[str]) -> list[UnitRecord]:
    return apply(registry, plans.plan(registry, STOP, args))


def unload(registry: OperatorRegistry, args: Sequence[str]) -> list[UnitRecord]:
    return apply(registry, plans.plan(registry, UNLOAD, args))


def destroy(registry: OperatorRegistry, args: Sequence[str]) -> list[str]:
    # Every key under unit/, readable or not: a malformed record can still be destroyed.
    names = select_units(registry.unit_keys(), args)
    return registry.destroy_units(names)


def unit_text(registry: OperatorRegistry, name: str, expanded: bool = False) -> str:
    """The unit file of a submitted unit; an instance without its own shows its template's.
    A container unit is shown as its [Container] source, or `expanded` as stored (what
    systemd gets)."""
    parsed = parse_name(name)
    record = registry.get_unit(parsed.name)
    if record is None and parsed.is_instance:
        record = registry.get_unit(parsed.template or "")
    if record is None:
        raise UnknownUnitError.not_submitted(name, parsed.template if parsed.is_instance else None)
    text = registry.get_content(record.hash)
    if text is None:
        raise UnknownUnitError(f"the contents of unit {record.name} are missing")
    if expanded:
        return text
    stored = parse_unit(text, source=record.name)
    return source_of(stored, record.name).serialize()


class PutOutcome(StrEnum):
    """What put_unit did (fleet's API answers 201 for a new unit, 204 for a change)."""

    CREATED = "created"
    CHANGED = "changed"


@dataclass(frozen=True)
class PutResult:
    outcome: PutOutcome
    revision: int  # etcd revision of the write, 0 if nothing was written


def put_unit(
    registry: OperatorRegistry, name: str, text: str | None, desired: DesiredState | None
) -> PutResult:
    """One unit by name, as fleet's API sets it: with contents a new unit, without them
    only a desired state change.

    New contents for an existing name make the unit anew, as fleet did: in the body's
    desired state, or inactive when the body has none. fleetctl's load/start --replace
    send them without one, wait until the unit is inactive (the old contents stopped and
    unloaded: no machine reports it) and only then set the target.

    The same checks as submit/start from a file: a valid name and unit, valid [X-Fleet]
    options (a template's as an instance would see them), no MachineOf= cycle.
    Raises UnknownUnitError for a unit that does not exist and comes without contents,
    StateError for an existing unit without a desired state to set, or one that cannot
    be replaced through the API (signed, or Global= changed).
    """
    parsed = parse_name(name)
    if parsed.is_template and desired not in (None, DesiredState.INACTIVE):
        raise StateError(f"{name} is a template; {verb(desired)} an instance of it")
    current = registry.get_units([name])[name]
    if text is not None:
        unit = parse_unit(text, source=name)
        check_name = f"{parsed.prefix}@instance.{parsed.suffix}" if parsed.is_template else name
        options = fleet_options(unit, check_name)
        if current is None or current.hash != unit.hash:
            if not parsed.is_template and any(edge(options) for edge in EDGES.values()):
                check_cycles(registry, Contents(registry), {name: options})
            change = UnitChange(
                name,
                desired=desired or DesiredState.INACTIVE,
                text=unit.serialize(),
                hash=unit.hash,
                is_global=options.is_global,
                replace=current is not None,
            )
            if current is not None:
                check_replace(current, change, DesiredState.LAUNCHED)  # any state: fleet's API
            records = registry.change_units([change], {name: current})
            return PutResult(PutOutcome.CREATED, max((r.revision for r in records), default=0))
    elif current is None:
        raise UnknownUnitError(f"unit {name} does not exist and options field empty")
    if desired is None:
        raise StateError("must provide desiredState to update existing unit")
    records = registry.change_units([UnitChange(name, desired=desired)], {name: current})
    return PutResult(PutOutcome.CHANGED, max((r.revision for r in records), default=0))


def destroy_unit(registry: OperatorRegistry, name: str) -> bool:
    """Destroy exactly one unit by name (no globs); False if there is none."""
    if name not in registry.unit_keys():
        return False
    return bool(registry.destroy_units([name]))


def reset_failures(registry: OperatorRegistry, names: Sequence[str]) -> dict[str, list[str]]:
    """`force-reschedule UNIT...`: forget where submitted units failed repeatedly
    (RescheduleOnFailure=): {unit: the machines it had failed on}. Every name is checked
    before anything is deleted."""
    for name in names:
        parse_name(name)  # UnitNameError for an invalid one
    records = registry.get_units(list(dict.fromkeys(names)))
    for name in names:
        if records.get(name) is None:
            raise UnknownUnitError.not_submitted(name)
    return registry.forget_failures(list(dict.fromkeys(names)))
