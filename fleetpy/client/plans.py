"""A command's plan: its arguments turned into complete, validated unit changes (files
parsed, names checked, [X-Fleet] options interpreted, units looked up, --replace judged,
MachineOf= cycles refused) before anything is written: bad input writes nothing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from ..errors import FleetOptionError, FleetpyError, SigningError, StateError, UnknownUnitError
from ..registry import UnitChange, UnitRecord
from ..registry.roles import OperatorRegistry
from ..states import DesiredState, verb
from ..unitfile.container import check_instance
from ..unitfile.signing import Signer, Verdict, signature_version
from ..unitfile.unit import FleetOptions, fleet_options, has_glob, parse_name, parse_unit
from .arguments import (
    LocalUnit,
    check_count,
    dedupe,
    is_file_arg,
    read_unit_file,
    select,
    select_units,
    template_beside,
    units_for,
)
from .verbs import REPLACEABLE, STOP, StateVerb, replace_refusal, replacing_name, replacing_verbs


@dataclass(frozen=True)
class CommandPlan:
    """The validated outcome of resolving a command's arguments."""

    changes: tuple[UnitChange, ...]
    names: tuple[str, ...]  # every unit the command acts on, in argument order
    # unit records read while planning (None: absent); saves apply() a second read
    known: Mapping[str, UnitRecord | None] | None = None
    notes: tuple[str, ...] = ()  # about the unit files read (fleet's legacy keys & co.)


class Contents:
    """Unit texts by hash, read once per command (200 instances share one template)."""

    def __init__(self, registry: OperatorRegistry) -> None:
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


def _extended_signature(
    signer: Signer | None, record: UnitRecord, name: str, current: UnitRecord | None
) -> str | None:
    """The signature of `name` with `record`'s contents, for a unit named without its file
    (a submitted unit, or a new instance of a submitted template; `current`: the unit's
    own record, if any). The contents are what etcd holds, so they are signed only if one
    of the signer's own keys signed them already: a record forged in etcd is never signed
    on the operator's behalf. None: this key signed them already (nothing to change)."""
    if signer is None:
        return None
    refused = signer.own.verify(record.name, record.hash, record.signature)
    if isinstance(refused, Verdict):
        what = "template " if record.name != name else ""
        raise SigningError(
            f"cannot sign {name}: {what}{record.name} is stored in etcd without a signature "
            f"of a key in {signer.own.source or 'the keys directory'} ({refused.detail}); "
            f"sign it from its unit file: give the file's path instead of the name"
        )
    if record.name == name and signer.has_signed(name, record.hash, record.signature):
        return None
    return signer.sign(name, record.hash, signature_version(current.signature if current else None))


def _different_contents(
    current: UnitRecord, new_hash: str, desired: DesiredState | None
) -> StateError:
    """New contents without --replace: the error names the verb that would replace them."""
    if current.desired in REPLACEABLE[desired]:
        hint = f"add --replace to {replacing_name(desired)} it with them, or destroy it first"
    else:
        hint = f"it is {current.desired}: {replacing_verbs(current.desired)} replaces it"
        hint += ", or destroy it first"
    return StateError.different_contents(current.name, current.hash, new_hash, hint)


def check_replace(current: UnitRecord, change: UnitChange, desired: DesiredState | None) -> None:
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
    contents: Contents,
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
        signature = _extended_signature(signer, current, name, current)
        return UnitChange(name, desired=desired, signature=signature), None
    if template is not None:
        signature = _extended_signature(signer, template, name, current)
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
        check_replace(current, change, desired)
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
    current: UnitRecord | None = None,
    sign_again: bool = False,
) -> UnitChange:
    return UnitChange(
        name,
        desired=desired,
        text=local.text,
        hash=local.hash,
        is_global=local.is_global,
        replace=replace,
        signature=file_signature(signer, name, local.hash, current, sign_again),
    )


def file_signature(
    signer: Signer | None,
    name: str,
    content_hash: str,
    current: UnitRecord | None,
    again: bool = False,
) -> str | None:
    """The signature to store with a unit's contents read from its file: None when there
    is no signer, or `current` holds these contents signed by this key already (kept as
    they are, unless signing `again`: --replace, a deliberate re-sign, as of an older
    version put back); else one at a version past the stored one."""
    stored = None if current is None else current.signature
    if signer is None:
        return None
    if current is not None and current.hash == content_hash and not again:
        if signer.has_signed(name, content_hash, stored):
            return None
    return signer.sign(name, content_hash, signature_version(stored))


# MachineOf= cycles are refused: no placement satisfies one; and Requires=/BindsTo= ones:
# each unit would wait for the next to be active, for ever. Units that replace each other
# are legal (fleet accepts them): the one started last wins (fleetpy.scheduler).
EDGES: dict[str, Callable[[FleetOptions], tuple[str, ...]]] = {
    "MachineOf": lambda o: o.machine_of,
    "Requires": lambda o: o.requires,
}
_CYCLE_WHY = {
    "MachineOf": "no placement can satisfy it",
    "Requires": "each unit would wait for the next to be active; BindsTo= counts as Requires=",
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


def check_cycles(
    registry: OperatorRegistry, contents: Contents, new: Mapping[str, FleetOptions]
) -> set[str]:
    """Refuse MachineOf= and Requires= cycles that this command's new units would close,
    following targets into already submitted units (read only when there are edges).
    Returns the targets that are not submitted units (a dependency may come later)."""
    options = dict(new)
    missing: set[str] = set()
    frontier = {t for o in new.values() for edge in EDGES.values() for t in edge(o)} - set(options)
    while frontier:
        records = {n: r for n, r in registry.get_units(sorted(frontier)).items() if r is not None}
        missing |= frontier - records.keys()
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
                for edge in EDGES.values()
                for t in edge(options[n])
            }
            - set(options)
            - explored
        )
    for kind, edge in EDGES.items():
        graph = {name: edge(o) for name, o in options.items()}
        for name in sorted(new):
            cycle = _cycle_through(graph, name)
            if cycle is not None:
                raise FleetOptionError(
                    f"[X-Fleet] {kind}= cycle: {' -> '.join(cycle)} ({_CYCLE_WHY[kind]})"
                )
    return missing


def missing_dependencies(new: Mapping[str, FleetOptions], missing: Set[str]) -> list[str]:
    """Warnings for Requires=/BindsTo= naming units not submitted (yet): not refused, as
    fleet never refused a unit for naming one submitted later (apply submits in any
    order); the unit waits, saying so, until that one is submitted and active."""
    notes = []
    for name, options in sorted(new.items()):
        for target in options.requires:
            if target in missing:
                key = "BindsTo" if target in options.binds_to else "Requires"
                notes.append(
                    f"[X-Fleet] {key}={target} in {name}: no unit {target} is submitted; "
                    f"{name} will wait until it is submitted and active"
                )
    return notes


def plan_submit(
    registry: OperatorRegistry,
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
    check_count(len(args))
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
    names = dedupe(names)
    check_count(len(names))
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
    contents = Contents(registry)
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
        change = _file_change(name, from_file, desired, signer, replacing, current, replace)
        if current is not None and replacing:
            check_replace(current, change, desired)
        changes.append(change)
        if (current is None or replacing) and from_file.options is not None:
            new_options[name] = from_file.options
    missing: set[str] = set()
    if any(edge(o) for o in new_options.values() for edge in EDGES.values()):
        missing = check_cycles(registry, contents, new_options)
    notes = tuple(note for local in locals_.values() for note in local.notes) + tuple(
        missing_dependencies(new_options, missing)
    )
    return CommandPlan(tuple(changes), tuple(names), known, notes)


def plan_stop(registry: OperatorRegistry, args: Sequence[str]) -> CommandPlan:
    """stop: launched -> loaded. A named unit must be launched; globs pick the launched ones."""
    units = units_for(registry, args)
    names: list[str] = []
    for name, explicit in select(units, args):
        record = units[name]
        if record.desired is DesiredState.LAUNCHED:
            names.append(name)
        elif explicit:
            raise StateError(f"unit {name} is not launched (desired state {record.desired})")
    return CommandPlan(
        tuple(UnitChange(n, desired=DesiredState.LOADED) for n in names), tuple(names)
    )


def plan_unload(registry: OperatorRegistry, args: Sequence[str]) -> CommandPlan:
    names = select_units(units_for(registry, args), args)
    return CommandPlan(
        tuple(UnitChange(n, desired=DesiredState.INACTIVE) for n in names), tuple(names)
    )


def plan(
    registry: OperatorRegistry,
    state_verb: StateVerb,
    args: Sequence[str],
    signer: Signer | None = None,
    replace: bool = False,
) -> CommandPlan:
    """The plan of one of the verbs that write desired states (client.verbs)."""
    if state_verb.from_files:
        return plan_submit(registry, args, state_verb.desired, signer, replace)
    return plan_stop(registry, args) if state_verb == STOP else plan_unload(registry, args)
