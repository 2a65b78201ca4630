"""A command's arguments: unit files read and checked, names and globs of submitted units.

An argument is a unit FILE if it contains a slash (or, for submit/load/start, names
an existing file), a GLOB if it holds fnmatch wildcards (stop/unload/destroy only),
else the NAME of a submitted unit, or of an instance of a submitted template (or of
one whose file is beside it: `t@3.service` with `./t@.service`, as fleetctl). Names
and globs never contain '/': a path that does not exist is an error, never a name
(bash passes `dir/*.service` on unchanged when nothing matches).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from ..errors import FleetpyError, UnitFileError, UnknownUnitError
from ..registry import UnitRecord
from ..registry.roles import OperatorRegistry
from ..unitfile.container import expand_unit
from ..unitfile.unit import (
    FleetOptions,
    checked_as,
    fleet_options,
    has_glob,
    load_unit_file,
    parse_name,
)

# fleetpy's own bound on one command (argument lists and glob matches alike): more
# would be written in hundreds of transactions, with a long partial-write window.
MAX_UNITS_PER_COMMAND = 10_000


@dataclass(frozen=True)
class LocalUnit:
    """A unit file read from disk, parsed and validated."""

    name: str
    path: str
    text: str  # canonical serialization: what is stored and hashed
    hash: str
    is_global: bool
    options: FleetOptions | None = None  # None for templates: they never run
    notes: tuple[str, ...] = ()  # what was read differently from how it was written


def is_file_arg(arg: str) -> bool:
    return "/" in arg or os.path.exists(arg)


def template_beside(arg: str) -> str | None:
    """fleetctl's lookup for an instance without a unit file of its own (`t@3.service`,
    or `units/t@3.service`): its template's file beside it (`./t@.service`,
    `units/t@.service`), if there is one."""
    if os.path.lexists(arg):
        return None
    try:
        parsed = parse_name(os.path.basename(arg))
    except FleetpyError:
        return None
    if parsed.template is None or not parsed.is_instance:
        return None
    path = os.path.join(os.path.dirname(arg) or ".", parsed.template)
    return path if os.path.isfile(path) else None


def unit_name_of_path(arg: str) -> str:
    """stop/unload/destroy given a unit file: the file must exist; its basename is an
    exact unit name, never a glob."""
    if not os.path.lexists(arg):
        raise UnitFileError(f"{arg}: no such file (unit names and globs never contain '/')")
    return parse_name(os.path.basename(arg.rstrip("/"))).name


def read_unit_file(path: str) -> LocalUnit:
    """Read, parse and validate one unit file (name = basename); a [Container] section is
    expanded here, so what is stored and hashed is what systemd runs."""
    name, source = load_unit_file(path)
    parsed = parse_name(name)
    unit = expand_unit(source, name)
    check_name = checked_as(name)
    options = fleet_options(unit, check_name)
    return LocalUnit(
        name=name,
        path=path,
        text=unit.serialize(),
        hash=unit.hash,
        is_global=options.is_global,
        options=None if parsed.is_template else options,
        notes=tuple(note.replace(check_name, name) for note in options.notes),
    )


def dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def check_known(units: Collection[str], name: str) -> None:
    if name not in units:
        raise UnknownUnitError.not_submitted(name)


def select(units: Collection[str], args: Sequence[str]) -> list[tuple[str, bool]]:
    """(name, named explicitly) of submitted units: names, file basenames, globs."""
    if not args:
        raise FleetpyError("no units given")
    check_count(len(args))
    units = set(units)
    selected: dict[str, bool] = {}
    for arg in args:
        if "/" in arg:
            name = unit_name_of_path(arg)
            check_known(units, name)
            selected[name] = True
        elif has_glob(arg):
            matched = sorted(n for n in units if fnmatch.fnmatchcase(n, arg))
            if not matched:
                raise UnknownUnitError(f"no submitted unit matches {arg!r}")
            for name in matched:
                selected.setdefault(name, False)
        elif arg in units:  # also a hand-written key that is no valid unit name
            selected[arg] = True
        else:
            name = parse_name(arg).name
            check_known(units, name)
            selected[name] = True
    check_count(len(selected))
    return list(selected.items())


def check_count(count: int) -> None:
    if count > MAX_UNITS_PER_COMMAND:
        raise FleetpyError(
            f"{count} units in one command; fleetpy takes at most "
            f"{MAX_UNITS_PER_COMMAND} (split them, or narrow the glob)"
        )


def select_units(units: Collection[str], args: Sequence[str]) -> list[str]:
    """Names of submitted units for stop/unload/destroy; a glob matching nothing is an error."""
    return [name for name, _ in select(units, args)]


def units_for(registry: OperatorRegistry, args: Sequence[str]) -> dict[str, UnitRecord]:
    """Every submitted unit, for a verb given ARGS. A unit named there that a newer
    fleetpy wrote is that one error (get_units), not a warning and 'not submitted'."""
    named = [arg for arg in args if "/" not in arg and not has_glob(arg)]
    if named:
        registry.get_units(named[:MAX_UNITS_PER_COMMAND])
    return registry.list_units()
