"""The client operations behind the CLI: no printing, no argument parsing.

Every command first turns its arguments into a complete, validated plan (files
parsed, names checked, [X-Fleet] options interpreted, units looked up) and only
then writes, through Registry.change_units / destroy_units: bad input writes nothing.

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
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .container import check_instance, expand_unit, source_of
from .errors import (
    FleetOptionError,
    FleetpyError,
    SigningError,
    StateError,
    UnitFileError,
    UnknownUnitError,
)
from .registry import (
    ClusterView,
    Registry,
    UnitChange,
    UnitRecord,
    UnitState,
)
from .scheduler import NO_MACHINES
from .signing import Signer
from .states import (
    JOB_PENDING,
    JOB_REFUSED,
    JOB_STARTED,
    RUNNING_STATES,
    ActiveState,
    DesiredState,
    LoadState,
    verb,
)
from .unit import (
    FleetOptions,
    checked_as,
    fleet_options,
    has_glob,
    load_unit_file,
    parse_name,
    parse_unit,
)
from .view import SETTLE_SECONDS, LiveView

# fleetpy's own bound on one command (argument lists and glob matches alike): more
# would be written in hundreds of transactions, with a long partial-write window.
MAX_UNITS_PER_COMMAND = 10_000
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


# ----------------------------------------------------------------------------- arguments


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


def _unit_name_of_path(arg: str) -> str:
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


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class CommandPlan:
    """The validated outcome of resolving a command's arguments."""

    changes: tuple[UnitChange, ...]
    names: tuple[str, ...]  # every unit the command acts on, in argument order
    # unit records read while planning (None: absent); saves apply() a second read
    known: Mapping[str, UnitRecord | None] | None = None
    notes: tuple[str, ...] = ()  # about the unit files read (fleet's legacy keys & co.)


def _known(units: Collection[str], name: str) -> None:
    if name not in units:
        raise UnknownUnitError.not_submitted(name)


class _Contents:
    """Unit texts by hash, read once per command (200 instances share one template)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.texts: dict[str, str | None] = {}

    def get(self, content_hash: str) -> str | None:
        if content_hash not in self.texts:
            self.texts[content_hash] = self.registry.get_content(content_hash)
        return self.texts[content_hash]

    def prefetch(self, hashes: Iterable[str]) -> None:
        missing = sorted({h for h in hashes if h not in self.texts})
        if missing:
            found = self.registry.get_contents(missing)
            self.texts.update({h: found.get(h) for h in missing})


def _extended_signature(signer: Signer | None, record: UnitRecord, name: str) -> str | None:
    """The signature of `name` with `record`'s contents, for a unit named without its file
    (a submitted unit, or a new instance of a submitted template). The contents are what
    etcd holds, so they are signed only if one of the signer's own keys signed them
    already: a record forged in etcd is never signed on the operator's behalf."""
    if signer is None:
        return None
    refused = signer.own.verify(record.name, record.hash, record.signature)
    if refused is not None:
        what = "template " if record.name != name else ""
        raise SigningError(
            f"cannot sign {name}: {what}{record.name} is stored in etcd without a signature "
            f"of a key in {signer.own.source or 'the keys directory'} ({refused.detail}); "
            f"sign it from its unit file: give the file's path instead of the name"
        )
    signature = signer.sign(name, record.hash)
    # ed25519 signatures are deterministic: the same one means this key signed it already.
    return None if record.name == name and record.signature == signature else signature


# fleetctl's checkReplaceUnitState: the desired states of the units each verb replaces
# with --replace (submit is None: it sets no desired state).
REPLACEABLE: Mapping[DesiredState | None, frozenset[DesiredState]] = {
    None: frozenset({DesiredState.INACTIVE}),
    DesiredState.LOADED: frozenset({DesiredState.INACTIVE, DesiredState.LOADED}),
    DesiredState.LAUNCHED: frozenset(DesiredState),
}
_VERBS: Mapping[DesiredState | None, str] = {
    None: "submit",
    DesiredState.LOADED: "load",
    DesiredState.LAUNCHED: "start",
}


def _replacing_verbs(current: DesiredState) -> str:
    """The --replace verbs that replace a unit in desired state `current`."""
    return " or ".join(f"`{_VERBS[d]} --replace`" for d in _VERBS if current in REPLACEABLE[d])


def replace_refusal(name: str, current: DesiredState, desired: DesiredState | None) -> str | None:
    """Why the verb asking for `desired` may not replace a unit whose desired state is
    `current`, or None if it may (fleet's rule: submit replaces inactive units, load
    inactive or loaded ones, start any). fleetctl warned and went on with the old
    contents; fleetpy refuses before writing anything."""
    if current in REPLACEABLE[desired]:
        return None
    allowed = " or ".join(str(d) for d in DesiredState if d in REPLACEABLE[desired])
    return (
        f"{name} is {current}: `{_VERBS[desired]} --replace` replaces only {allowed} units; "
        f"use {_replacing_verbs(current)}"
    )


def _different_contents(
    current: UnitRecord, new_hash: str, desired: DesiredState | None
) -> StateError:
    """New contents without --replace: the error names the verb that would replace them."""
    if current.desired in REPLACEABLE[desired]:
        hint = f"add --replace to {_VERBS[desired]} it with them, or destroy it first"
    else:
        hint = f"it is {current.desired}: {_replacing_verbs(current.desired)} replaces it"
        hint += ", or destroy it first"
    return StateError.different_contents(current.name, current.hash, new_hash, hint)


def _check_replace(current: UnitRecord, change: UnitChange, desired: DesiredState | None) -> None:
    """May `change` (new contents, with --replace) replace `current`? Raises StateError.

    Besides fleet's rule on states: a signed unit is replaced only by a signed one (agents
    that check signatures would refuse the unsigned replacement, and stop what runs), and
    Global= cannot change in place (the engine places one and agents run the other)."""
    refused = replace_refusal(current.name, current.desired, desired)
    if refused is not None:
        raise StateError(refused)
    if current.signature is not None and change.signature is None:
        raise StateError(
            f"{current.name} is signed and its replacement is not: agents that check "
            f"signatures would refuse it (and stop what runs); replace it with fleetpy's "
            f"--replace and --sign KEY (or FLEETPY_SIGN_KEY)"
        )
    if current.is_global != change.is_global:
        raise StateError.global_changes(current.name, change.is_global)


def _instance_change(
    contents: _Contents,
    units: Mapping[str, UnitRecord],
    name: str,
    desired: DesiredState | None,
    signer: Signer | None = None,
    replace: bool = False,
) -> tuple[UnitChange, FleetOptions | None]:
    """A submitted unit by name, or an instance of a submitted template (with its
    options when the instance is new, or replaced).

    With `replace`, an instance whose template has other contents now takes the
    template's (fleetctl's --replace of an instance: from the template in the registry).
    """
    parsed = parse_name(name)
    current = units.get(name)
    template = units.get(parsed.template or "") if parsed.is_instance else None
    if current is not None and not (replace and template and template.hash != current.hash):
        signature = _extended_signature(signer, current, name)
        return UnitChange(name, desired=desired, signature=signature), None
    if template is not None:
        signature = _extended_signature(signer, template, name)
        text = contents.get(template.hash)
        if text is None:
            raise UnknownUnitError(f"the contents of template {template.name} are missing")
        # The instance's [X-Fleet] values (%i, %n) must be valid for this instance, and
        # a container unit's instance must fit in its container name.
        template_unit = parse_unit(text, source=template.name)
        options = fleet_options(template_unit, name)
        check_instance(template_unit, name)
        if current is None:
            change = UnitChange(name, desired=desired, template=template.name, signature=signature)
            return change, options
        change = UnitChange(
            name,
            desired=desired,
            text=text,
            hash=template.hash,
            is_global=options.is_global,
            replace=True,
            signature=signature,
        )
        _check_replace(current, change, desired)
        return change, options
    raise UnknownUnitError.not_submitted(name, parsed.template if parsed.is_instance else None)


def _instance_of_file(
    units: Mapping[str, UnitRecord],
    locals_: dict[str, LocalUnit],
    name: str,
    path: str,
    desired: DesiredState | None,
    signer: Signer | None,
) -> tuple[list[UnitChange], FleetOptions] | None:
    """A new instance named beside its template's file, as fleetctl made it: the template
    is submitted from the file first (as `submit FILE` would) when it is not submitted yet.
    None: the submitted template has the file's contents (the instance is made from it as
    from any submitted template). A submitted template with other contents is refused, as
    a file of other contents is (fleetctl warned and used the submitted one)."""
    parsed = parse_name(name)
    assert parsed.template is not None
    local = locals_.get(parsed.template) or read_unit_file(path)
    current = units.get(parsed.template)
    if current is not None:
        if current.hash == local.hash:
            return None
        error = StateError.different_contents(parsed.template, current.hash, local.hash)
        raise StateError(f"{name}: its template's file {local.path}: {error}")
    template_unit = parse_unit(local.text, source=local.path)
    options = fleet_options(template_unit, name)
    check_instance(template_unit, name)
    changes = []
    if parsed.template not in locals_:  # once per command, as if given as a file
        locals_[parsed.template] = local
        changes.append(_file_change(local.name, local, None, signer))
    changes.append(_file_change(name, local, desired, signer))  # the template's contents
    return changes, options


def _file_change(
    name: str,
    local: LocalUnit,
    desired: DesiredState | None,
    signer: Signer | None,
    replace: bool = False,
) -> UnitChange:
    return UnitChange(
        name,
        desired=desired,
        text=local.text,
        hash=local.hash,
        is_global=local.is_global,
        replace=replace,
        signature=None if signer is None else signer.sign(name, local.hash),
    )


# Only MachineOf= cycles are refused: no placement satisfies one. Units that replace
# each other are legal (fleet accepts them): the one started last wins (fleetpy.scheduler).
_EDGES: dict[str, Callable[[FleetOptions], tuple[str, ...]]] = {
    "MachineOf": lambda o: o.machine_of,
}


def _cycle_through(edges: Mapping[str, Sequence[str]], root: str) -> list[str] | None:
    """A cycle through `root`, as [root, ..., root]; iterative DFS."""
    path = [root]
    on_path = {root}
    explored: set[str] = set()  # fully searched without finding root again
    stack = [iter(edges.get(root, ()))]
    while stack:
        target = next(stack[-1], None)
        if target is None:
            node = path.pop()
            on_path.discard(node)
            explored.add(node)
            stack.pop()
            continue
        if target == root:
            return [*path, root]
        if target in on_path or target in explored or target not in edges:
            continue
        on_path.add(target)
        path.append(target)
        stack.append(iter(edges[target]))
    return None


def _check_cycles(registry: Registry, contents: _Contents, new: Mapping[str, FleetOptions]) -> None:
    """Refuse MachineOf= cycles that this command's new units would close,
    following targets into already submitted units (read only when there are edges)."""
    options = dict(new)
    frontier = {t for o in new.values() for edge in _EDGES.values() for t in edge(o)} - set(options)
    while frontier:
        records = {n: r for n, r in registry.get_units(sorted(frontier)).items() if r is not None}
        contents.prefetch(r.hash for r in records.values())
        for name, record in records.items():
            text = contents.get(record.hash)
            try:
                options[name] = fleet_options(parse_unit(text or "", source=name), name)
            except FleetpyError:
                continue  # an invalid unit is never placed: it adds no edge
        explored = set(frontier)
        frontier = (
            {
                t
                for n in records
                if n in options
                for edge in _EDGES.values()
                for t in edge(options[n])
            }
            - set(options)
            - explored
        )
    for kind, edge in _EDGES.items():
        graph = {name: edge(o) for name, o in options.items()}
        for name in sorted(new):
            cycle = _cycle_through(graph, name)
            if cycle is not None:
                raise FleetOptionError(
                    f"[X-Fleet] {kind}= cycle: {' -> '.join(cycle)} (no placement can satisfy it)"
                )


def plan_submit(
    registry: Registry,
    args: Sequence[str],
    desired: DesiredState | None,
    signer: Signer | None = None,
    replace: bool = False,
) -> CommandPlan:
    """submit (desired None), load (loaded), start (launched): files or names, no globs.

    Files are submitted (new units become inactive; an existing unit must have the
    same contents, or with `replace` takes the new ones as `replace_refusal` allows:
    the engine keeps it where it is placed and its agent restarts it on them, as apply
    does); names must be submitted units or instances of submitted templates, or new
    instances of a template whose file is beside them (template_beside).
    With a signer every unit is signed (name and content hash): a file's unit as read
    here, a unit named without its file only as `_extended_signature` allows.
    """
    if not args:
        raise FleetpyError("no units given")
    _check_count(len(args))
    locals_: dict[str, LocalUnit] = {}
    beside: dict[str, str] = {}  # instance -> its template's file (template_beside)
    names: list[str] = []
    for arg in args:
        template_file = template_beside(arg)
        if template_file is not None:
            name = parse_name(os.path.basename(arg)).name
            beside[name] = template_file
            names.append(name)
        elif is_file_arg(arg):
            local = read_unit_file(arg)
            previous = locals_.get(local.name)
            if previous is not None and previous.hash != local.hash:
                raise StateError(
                    f"{previous.path} and {local.path} are both unit "
                    f"{local.name} with different contents"
                )
            locals_[local.name] = local
            names.append(local.name)
        else:
            if has_glob(arg):
                raise FleetpyError(f"{arg}: globs are only accepted by stop, unload and destroy")
            names.append(parse_name(arg).name)
    names = _dedupe(names)
    _check_count(len(names))
    if desired is not None:
        for name in names:
            if parse_name(name).is_template:
                raise StateError(
                    f"{name} is a template; {verb(desired)} an instance of it, "
                    f"such as {name.replace('@.', '@1.', 1)}"
                )
    # Only the named units and their templates: a start must not read the whole cluster.
    lookups = names + [t for n in names if (t := parse_name(n).template)]
    known = registry.get_units(lookups)
    units = {n: r for n, r in known.items() if r is not None}
    contents = _Contents(registry)
    changes: list[UnitChange] = []
    new_options: dict[str, FleetOptions] = {}  # units this command creates or replaces
    for name in names:
        from_file = locals_.get(name)
        if from_file is None and name in beside and name not in units:
            made = _instance_of_file(units, locals_, name, beside[name], desired, signer)
            if made is not None:
                changes += made[0]
                new_options[name] = made[1]
                continue
        if from_file is None:
            change, options = _instance_change(contents, units, name, desired, signer, replace)
            changes.append(change)
            if options is not None:
                new_options[name] = options
            continue
        current = units.get(name)
        replacing = current is not None and current.hash != from_file.hash
        if current is not None and replacing and not replace:
            raise _different_contents(current, from_file.hash, desired)
        change = _file_change(name, from_file, desired, signer, replace=replacing)
        if current is not None and replacing:
            _check_replace(current, change, desired)
        changes.append(change)
        if (current is None or replacing) and from_file.options is not None:
            new_options[name] = from_file.options
    if any(edge(o) for o in new_options.values() for edge in _EDGES.values()):
        _check_cycles(registry, contents, new_options)
    notes = tuple(note for local in locals_.values() for note in local.notes)
    return CommandPlan(tuple(changes), tuple(names), known, notes)


def _select(units: Collection[str], args: Sequence[str]) -> list[tuple[str, bool]]:
    """(name, named explicitly) of submitted units: names, file basenames, globs."""
    if not args:
        raise FleetpyError("no units given")
    _check_count(len(args))
    units = set(units)
    selected: dict[str, bool] = {}
    for arg in args:
        if "/" in arg:
            name = _unit_name_of_path(arg)
            _known(units, name)
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
            _known(units, name)
            selected[name] = True
    _check_count(len(selected))
    return list(selected.items())


def _check_count(count: int) -> None:
    if count > MAX_UNITS_PER_COMMAND:
        raise FleetpyError(
            f"{count} units in one command; fleetpy takes at most "
            f"{MAX_UNITS_PER_COMMAND} (split them, or narrow the glob)"
        )


def select_units(units: Collection[str], args: Sequence[str]) -> list[str]:
    """Names of submitted units for stop/unload/destroy; a glob matching nothing is an error."""
    return [name for name, _ in _select(units, args)]


def _units_for(registry: Registry, args: Sequence[str]) -> dict[str, UnitRecord]:
    """Every submitted unit, for a verb given ARGS. A unit named there that a newer
    fleetpy wrote is that one error (get_units), not a warning and 'not submitted'."""
    named = [arg for arg in args if "/" not in arg and not has_glob(arg)]
    if named:
        registry.get_units(named[:MAX_UNITS_PER_COMMAND])
    return registry.list_units()


def plan_stop(registry: Registry, args: Sequence[str]) -> CommandPlan:
    """stop: launched -> loaded. A named unit must be launched; globs pick the launched ones."""
    units = _units_for(registry, args)
    names: list[str] = []
    for name, explicit in _select(units, args):
        record = units[name]
        if record.desired is DesiredState.LAUNCHED:
            names.append(name)
        elif explicit:
            raise StateError(f"unit {name} is not launched (desired state {record.desired})")
    return CommandPlan(
        tuple(UnitChange(n, desired=DesiredState.LOADED) for n in names), tuple(names)
    )


def plan_unload(registry: Registry, args: Sequence[str]) -> CommandPlan:
    names = select_units(_units_for(registry, args), args)
    return CommandPlan(
        tuple(UnitChange(n, desired=DesiredState.INACTIVE) for n in names), tuple(names)
    )


def apply(registry: Registry, plan: CommandPlan) -> list[UnitRecord]:
    return registry.change_units(plan.changes, plan.known) if plan.changes else []


def submit(
    registry: Registry, args: Sequence[str], signer: Signer | None = None, replace: bool = False
) -> list[UnitRecord]:
    return apply(registry, plan_submit(registry, args, None, signer, replace))


def load(
    registry: Registry, args: Sequence[str], signer: Signer | None = None, replace: bool = False
) -> list[UnitRecord]:
    return apply(registry, plan_submit(registry, args, DesiredState.LOADED, signer, replace))


def start(
    registry: Registry, args: Sequence[str], signer: Signer | None = None, replace: bool = False
) -> list[UnitRecord]:
    return apply(registry, plan_submit(registry, args, DesiredState.LAUNCHED, signer, replace))


def stop(registry: Registry, args: Sequence[str]) -> list[UnitRecord]:
    return apply(registry, plan_stop(registry, args))


def unload(registry: Registry, args: Sequence[str]) -> list[UnitRecord]:
    return apply(registry, plan_unload(registry, args))


def destroy(registry: Registry, args: Sequence[str]) -> list[str]:
    # Every key under unit/, readable or not: a malformed record can still be destroyed.
    names = select_units(registry.unit_keys(), args)
    return registry.destroy_units(names)


def unit_text(registry: Registry, name: str, expanded: bool = False) -> str:
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
    registry: Registry, name: str, text: str | None, desired: DesiredState | None
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
            if not parsed.is_template and any(edge(options) for edge in _EDGES.values()):
                _check_cycles(registry, _Contents(registry), {name: options})
            change = UnitChange(
                name,
                desired=desired or DesiredState.INACTIVE,
                text=unit.serialize(),
                hash=unit.hash,
                is_global=options.is_global,
                replace=current is not None,
            )
            if current is not None:
                _check_replace(current, change, DesiredState.LAUNCHED)  # any state: fleet's API
            records = registry.change_units([change], {name: current})
            return PutResult(PutOutcome.CREATED, max((r.revision for r in records), default=0))
    elif current is None:
        raise UnknownUnitError(f"unit {name} does not exist and options field empty")
    if desired is None:
        raise StateError("must provide desiredState to update existing unit")
    records = registry.change_units([UnitChange(name, desired=desired)], {name: current})
    return PutResult(PutOutcome.CHANGED, max((r.revision for r in records), default=0))


def destroy_unit(registry: Registry, name: str) -> bool:
    """Destroy exactly one unit by name (no globs); False if there is none."""
    if name not in registry.unit_keys():
        return False
    return bool(registry.destroy_units([name]))


# ----------------------------------------------------------------------------- waiting


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
        return (
            f"placed on {where}, reports {_state_text(state)}"
            if state is not None
            else f"placed on {where}, no state reported yet"
        )
    if record.is_global:
        if not view.machines:
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
    registry: Registry,
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


# ----------------------------------------------------------------------------- listings


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


@dataclass(frozen=True)
class MachineRow:
    machine: str
    ip: str
    metadata: Mapping[str, str]


def summary_state(states: Mapping[str, UnitState] | None) -> DesiredState:
    """fleet's STATE column: launched if running somewhere, loaded if loaded, else inactive."""
    if not states:
        return DesiredState.INACTIVE
    if any(s.active in RUNNING_STATES for s in states.values()):
        return DesiredState.LAUNCHED
    if any(s.load == LoadState.LOADED for s in states.values()):
        return DesiredState.LOADED
    return DesiredState.INACTIVE


def unit_file_rows(view: ClusterView) -> list[UnitFileRow]:
    rows = []
    for name, record in sorted(view.units.items()):
        placed = view.schedule.get(name)
        rows.append(
            UnitFileRow(
                unit=name,
                hash=record.hash,
                desired_state=record.desired,
                state=summary_state(view.states.get(name)),
                machine=None if record.is_global or placed is None else placed[0],
                reason=view.reasons.get(name),
                is_global=record.is_global,
                owner=record.owner,
                origin=record.origin,
            )
        )
    return rows


def unit_rows(view: ClusterView) -> list[UnitRow]:
    rows = []
    for name, by_machine in sorted(view.states.items()):
        for machine_id, state in sorted(by_machine.items()):
            machine = view.machines.get(machine_id)
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
                )
            )
    return rows


def machine_rows(registry: Registry) -> list[MachineRow]:
    return [
        MachineRow(machine=m.id, ip=m.ip, metadata=dict(sorted(m.metadata.items())))
        for _, m in sorted(registry.list_machines().items())
    ]


__all__ = [
    "REPLACEABLE",
    "CommandPlan",
    "LocalUnit",
    "MachineRow",
    "PutOutcome",
    "PutResult",
    "UnitFileRow",
    "UnitProgress",
    "UnitRow",
    "WaitResult",
    "WaitTarget",
    "destroy",
    "destroy_unit",
    "evaluate",
    "is_file_arg",
    "load",
    "machine_label",
    "machine_rows",
    "plan_stop",
    "plan_submit",
    "plan_unload",
    "put_unit",
    "read_unit_file",
    "replace_refusal",
    "select_units",
    "start",
    "started",
    "stop",
    "submit",
    "summary_state",
    "unit_file_rows",
    "unit_rows",
    "unit_text",
    "unload",
    "wait_for",
]
