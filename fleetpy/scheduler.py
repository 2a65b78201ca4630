"""Placement planning: a pure function from a cluster snapshot to changes.

The engine reads etcd into a `Snapshot`, calls `plan()`, and executes the
returned `Plan` in batched etcd transactions. Nothing here does I/O, and the
result depends only on the snapshot (never on dict/set hash order), so the
same snapshot always yields the same plan.

How a plan is made:
  1. Keep: every scheduled unit that is still valid where it is stays there
     (no churn). Units are visited in placement order (MachineOf targets and
     Replaces winners before the units that depend on them), so when two
     placed units came to conflict, the one visited first keeps its machine.
     Replaces= keeps two units off one machine; the replacer wins it, and of
     units that replace each other (a cycle, which fleet accepts) the one whose
     record was written last, i.e. started last (`UnitSpec.since`).
  2. Place: the remaining units are placed in the same order, each on the
     least-loaded eligible machine (ties: lowest machine id). Candidates come
     from lazily refreshed heaps of (load, machine id), so an unconstrained
     unit costs O(log machines), not O(machines).
  3. Diff the resulting assignment against the snapshot's schedule.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from fleetpy.states import PLACED_STATES, DesiredState

from .drain import CANNOT_LEAVE, EVERY_MACHINE_CORDONED, MOVED_OFF, cannot_leave, moved_off
from .failures import Avoidance
from .unitfile.unit import FleetOptions, glob_matcher, has_glob, is_template, template_of

# Desired states that put a unit on a machine; anything else is not placed.

# Who wins a machine under Replaces= is a strict order, so no unit is displaced twice
# by the same rival; the cap only guarantees termination whatever the input.
_MAX_DISPLACEMENTS = 3


NO_MACHINES = "no machines are alive"


class ReasonKind(StrEnum):
    """What kind of reason a unit has for where it is (or is not): a closed set, so
    metrics can count units by it (the reasons' own text names units and machines)."""

    NO_MACHINES = "no-machines"
    METADATA = "metadata"  # MachineMetadata= that no (eligible) machine has
    MACHINE_ID = "machine-id"  # MachineID= absent or refusing
    MACHINE_OF = "machine-of"  # MachineOf= target unplaced, away, refusing or a cycle
    CONFLICTS = "conflicts"  # Conflicts= or Replaces= on every eligible machine
    MAX_PER_MACHINE = "max-per-machine"
    CONSTRAINTS = "constraints"  # several of the above, machine by machine
    INVALID = "invalid"  # the unit's contents cannot be used
    NOT_REPORTING = "not-reporting"  # left on a machine out of touch
    FAILURES = "failures"  # RescheduleOnFailure=: moved off (or kept on) where it failed
    CORDONED = "cordoned"  # every live machine is cordoned
    DRAINING = "draining"  # moved off a draining machine, or cannot leave it
    DEPENDENCY = "dependency"  # held loaded until a Requires=/BindsTo= unit is active
    OTHER = "other"
    PENDING = "pending"  # no reason stored: the engine has not got to the unit yet


# Reason texts by how they start (each made below); the first match wins.
_REASON_PREFIXES: tuple[tuple[str, ReasonKind], ...] = (
    (NO_MACHINES, ReasonKind.NO_MACHINES),
    ("no machine has ", ReasonKind.METADATA),
    ("no machine with id ", ReasonKind.MACHINE_ID),
    ("machine ", ReasonKind.MACHINE_ID),
    ("waiting for ", ReasonKind.MACHINE_OF),
    ("cannot join ", ReasonKind.MACHINE_OF),
    ("MachineOf cycle", ReasonKind.MACHINE_OF),
    ("conflicts with ", ReasonKind.CONFLICTS),
    ("replaced by ", ReasonKind.CONFLICTS),
    ("MaxPerMachine=", ReasonKind.MAX_PER_MACHINE),
    ("it lacks ", ReasonKind.METADATA),
    ("MachineID=", ReasonKind.MACHINE_ID),
    ("every eligible machine is excluded", ReasonKind.CONSTRAINTS),
    ("invalid unit", ReasonKind.INVALID),
    ("left on machine ", ReasonKind.NOT_REPORTING),
    ("failed ", ReasonKind.FAILURES),
    (EVERY_MACHINE_CORDONED, ReasonKind.CORDONED),
    (MOVED_OFF, ReasonKind.DRAINING),
    (CANNOT_LEAVE, ReasonKind.DRAINING),
)


# fleetpy.dependencies' reasons: a unit held loaded until the units it requires are active.
_DEPENDENCY_WAIT = re.compile(r"waiting for \S+ to be active")


def reason_kind(reason: str) -> ReasonKind:
    """The kind of a stored reason text."""
    if _DEPENDENCY_WAIT.match(reason):  # before MachineOf='s "waiting for X to be placed"
        return ReasonKind.DEPENDENCY
    for prefix, kind in _REASON_PREFIXES:
        if reason.startswith(prefix):
            return kind
    return ReasonKind.OTHER


# --------------------------------------------------------------------------
# Snapshot records


@dataclass(frozen=True)
class UnitSpec:
    name: str
    hash: str
    desired: DesiredState
    options: FleetOptions = field(default_factory=FleetOptions)
    signature: str | None = None  # copied into the schedule entry, never judged here
    # etcd revision of the unit record's last write (a start sets it): of units that
    # replace each other, the later one wins a machine both want. Constant while nobody
    # writes the record, so plans do not flap between them.
    since: int = 0


@dataclass(frozen=True)
class Machine:
    """A machine of the cluster. Live machines (holding a presence lease) take new
    units; a `held` machine is not reporting but is not given up either (the engine's
    grace period after it was blind, or a mass loss): its units stay where they are,
    constraints unchecked, and nothing new goes there. `held` says why ("" for a hold
    too short to mention). A `cordoned` machine (an operator's cordon, fleetpy.drain)
    keeps what it has and takes nothing new."""

    id: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    held: str | None = None
    cordoned: bool = False


@dataclass(frozen=True)
class Scheduled:
    """What a unit's per-machine schedule key currently says."""

    machine: str
    desired: DesiredState
    hash: str
    signature: str | None = None


@dataclass(frozen=True)
class InvalidUnit:
    """A submitted unit whose contents cannot be used (missing, or not a valid unit)."""

    name: str
    desired: DesiredState
    why: str


@dataclass(frozen=True)
class Snapshot:
    units: Mapping[str, UnitSpec] = field(default_factory=dict)
    machines: Mapping[str, Machine] = field(default_factory=dict)
    schedule: Mapping[str, Scheduled] = field(default_factory=dict)  # unit -> placement
    reasons: Mapping[str, str] = field(default_factory=dict)  # unit -> stored "why unplaced"
    invalid: Mapping[str, InvalidUnit] = field(default_factory=dict)  # never placed
    # unit -> the machine it is found running on without a schedule entry (after a
    # restore): placed there if that machine may take it, so it is adopted, not restarted.
    running: Mapping[str, str] = field(default_factory=dict)
    # unit -> machines it failed on repeatedly (RescheduleOnFailure=, fleetpy.failures):
    # not placed there while another machine can take it.
    avoid: Mapping[str, Avoidance] = field(default_factory=dict)
    # unit -> the draining machine it leaves now (fleetpy.drain chose it): placed elsewhere
    # if it can be (its MachineOf= dependents follow it), or left there, saying why.
    evict: Mapping[str, str] = field(default_factory=dict)
    # unit -> a reason to keep storing while it is placed (moved off a draining machine
    # and not active where it went yet; or one that cannot leave, not tried this pass).
    notes: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Changes


@dataclass(frozen=True)
class Schedule:
    """Place a unit that has no schedule entry."""

    unit: str
    machine: str
    desired: DesiredState
    hash: str
    signature: str | None = None


@dataclass(frozen=True)
class Move:
    """Take a unit off one machine's schedule and onto another's, atomically."""

    unit: str
    from_machine: str
    to_machine: str
    desired: DesiredState
    hash: str
    signature: str | None = None


@dataclass(frozen=True)
class Unschedule:
    unit: str
    machine: str


@dataclass(frozen=True)
class Retarget:
    """Rewrite a placed unit's schedule key in place (desired state, hash or signature
    changed: a re-signed unit's agent must see the new signature)."""

    unit: str
    machine: str
    desired: DesiredState
    hash: str
    signature: str | None = None


@dataclass(frozen=True)
class SetReason:
    unit: str
    reason: str | None  # None clears the stored reason


Change = Schedule | Move | Unschedule | Retarget | SetReason


@dataclass(frozen=True)
class PlacementPlan:
    """Changes in execution order: Unschedules, Moves, Retargets, Schedules, SetReasons.

    Unschedules and Moves come first so that load, Conflicts and MaxPerMachine
    room are freed before new placements land. Moves and Schedules keep the
    order in which they were decided, which is a valid sequential replay.
    """

    changes: tuple[Change, ...] = ()

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)


def grouped_by_machine(changes: list[Change]) -> list[Change]:
    """The plan's new placements grouped by machine (in decision order within each), the
    other changes where they are. Transactions are cut by size, so a machine's new units
    arrive in one transaction (one watch response: its agent wakes, reconciles and
    reports once) instead of one in each of as many transactions. Any prefix of the
    placements is still a valid state: they only add, and a machine's are in the order
    the planner decided them (a MachineOf= unit after the one it follows)."""
    placements = [c for c in changes if isinstance(c, Schedule)]
    if len(placements) < 2:
        return changes
    ordered = iter(sorted(placements, key=lambda c: c.machine))
    return [next(ordered) if isinstance(c, Schedule) else c for c in changes]


def is_placeable(spec: UnitSpec) -> bool:
    """Whether the engine places this unit at all (agents run globals themselves)."""
    return (
        spec.desired in PLACED_STATES and not spec.options.is_global and not is_template(spec.name)
    )


# --------------------------------------------------------------------------
# Reason text


def _describe_metadata(requirements: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    parts = []
    for key, values in requirements:
        alternatives = " or ".join(f"{key}={value}" for value in values)
        parts.append(
            f"({alternatives})" if len(values) > 1 and len(requirements) > 1 else alternatives
        )
    return " and ".join(parts)


def _describe_names(names: set[str], limit: int = 3) -> str:
    ordered = sorted(names)
    if len(ordered) > limit:
        return ", ".join(ordered[:limit]) + f" and {len(ordered) - limit} more"
    if len(ordered) > 1:
        return ", ".join(ordered[:-1]) + " and " + ordered[-1]
    return ordered[0]


@dataclass(frozen=True)
class _Blocker:
    """Why one machine cannot take one unit."""

    kind: str  # "conflict" | "max" | "replaced" | "metadata" | "machine_id"
    detail: str  # the other unit, the template, the metadata text, or the machine id
    limit: int = 0  # MaxPerMachine value for kind "max"
    # True when the cause depends on the unit's own name (another unit's
    # Conflicts glob or Replaces names it), so it cannot be shared between
    # units with identical options.
    name_dependent: bool = False

    def phrase(self) -> str:
        if self.kind == "conflict":
            return f"conflicts with {self.detail}"
        if self.kind == "max":
            return f"MaxPerMachine={self.limit} reached for {self.detail}"
        if self.kind == "replaced":
            return f"replaced there by {self.detail}"
        if self.kind == "metadata":
            return f"it lacks {self.detail}"
        if self.kind == "failed":
            return "it failed there repeatedly"
        return f"MachineID={self.detail} is a different machine"


def _summarize_blockers(blockers: list[_Blocker]) -> str:
    """One sentence for "every eligible machine refused", grouped by cause."""
    groups: dict[tuple[str, str, int], tuple[set[str], list[int]]] = {}
    for blocker in blockers:
        # Conflicts/replacements group over all partner units; the rest per detail.
        detail = "" if blocker.kind in ("conflict", "replaced") else blocker.detail
        names, count = groups.setdefault((blocker.kind, detail, blocker.limit), (set(), [0]))
        names.add(blocker.detail)
        count[0] += 1
    phrases = []
    for (kind, detail, limit), (names, count) in groups.items():
        if kind == "conflict":
            text = f"conflicts with {_describe_names(names)}"
        elif kind == "replaced":
            text = f"replaced by {_describe_names(names)}"
        else:
            text = _Blocker(kind, detail, limit).phrase()
        phrases.append((text, count[0]))
    if len(phrases) == 1:
        return f"{phrases[0][0]} on every eligible machine"
    details = "; ".join(
        f"{text} ({count} machine{'s' if count != 1 else ''})" for text, count in sorted(phrases)
    )
    return f"every eligible machine is excluded: {details}"


# --------------------------------------------------------------------------
# Candidate pools


@dataclass
class _Pool:
    """Machines satisfying one MachineMetadata requirement, as (load, id) heaps.

    Without Spread there is one heap (key None). With Spread=KEY there is one
    heap per value of KEY (machines lacking KEY share the None heap).

    Heaps are refreshed lazily: every member keeps at least one entry whose
    load is <= its current load, so a popped entry that equals the current
    load is a true minimum; lower ones are re-pushed at the current load and
    higher ones are stale duplicates. Lowering a load (eviction) pushes a fresh
    entry explicitly.
    """

    heap_key_of: dict[str, str | None]  # member machine -> heap key
    heaps: dict[str | None, list[tuple[int, str]]]


# --------------------------------------------------------------------------
# The planner (mutable working state local to one plan() call)


class _Planner:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        machines = dict(snapshot.machines)
        if not any(machine.held is None for machine in machines.values()):
            # No machine is alive: that alone never unschedules a unit (an etcd blip, or
            # every agent's lease revoked at once, looks exactly like this). Units stay.
            for entry in snapshot.schedule.values():
                machines.setdefault(entry.machine, Machine(entry.machine, {}, held=NO_MACHINES))
        self.machines: Mapping[str, Machine] = machines
        self.alive = sorted(m for m, machine in machines.items() if machine.held is None)
        # unit -> machines it may not go to (it failed there; fleetpy.failures)
        self.avoid: dict[str, frozenset[str]] = {
            name: a.machines for name, a in snapshot.avoid.items() if not a.stays
        }
        self.open = [m for m in self.alive if not machines[m].cordoned]  # may take new units
        self.notes: dict[str, str] = dict(snapshot.notes)  # + why it stays on a held machine
        self.placeable: dict[str, UnitSpec] = {
            name: spec for name, spec in snapshot.units.items() if is_placeable(spec)
        }
        self.group_of: dict[str, str] = {
            # MaxPerMachine/Spread count instances of one template; a plain
            # unit forms a group of its own.
            name: template_of(name) or name
            for name in self.placeable
        }
        self.dependents: dict[str, list[str]] = {}  # MachineOf target -> dependents
        # Units kept off each other's machine by Replaces= (either one names the other).
        self.rivals: dict[str, list[str]] = {}
        for name in sorted(self.placeable):
            options = self.placeable[name].options
            for target in options.machine_of:
                self.dependents.setdefault(target, []).append(name)
            for replaced in options.replaces:
                if replaced != name and replaced in self.placeable:
                    self.rivals.setdefault(replaced, []).append(name)
                    self.rivals.setdefault(name, []).append(replaced)
        self.rivals = {name: list(dict.fromkeys(rivals)) for name, rivals in self.rivals.items()}
        # Units that replace each other, directly or around a cycle: the cycle's number.
        self.replace_cycle: dict[str, int] = {}
        replaces = {
            name: [r for r in spec.options.replaces if r in self.placeable]
            for name, spec in self.placeable.items()
            if spec.options.replaces
        }
        for number, component in enumerate(strongly_connected(sorted(replaces), replaces)):
            if len(component) > 1:
                self.replace_cycle.update((member, number) for member in component)
        self.order = self._placement_order()
        self.rank = {name: index for index, name in enumerate(self.order)}
        self.cycles = self._machine_of_cycles()

        # Current assignment. Dicts (not sets) everywhere so that iteration
        # order is insertion order, never hash order.
        self.assignment: dict[str, str] = {}
        self.hosted: dict[str, dict[str, None]] = {machine: {} for machine in self.machines}
        self.conflict_holders: dict[str, dict[str, tuple[str, ...]]] = {
            m: {} for m in self.machines
        }
        self.group_hosts: dict[str, dict[str, int]] = {}  # group -> machine -> instances
        self.spread_keys: dict[str, list[str]] = {}  # group -> Spread keys being counted
        self.spread_counts: dict[tuple[str, str], dict[str | None, int]] = {}

        self.failures: dict[str, str] = {}  # unit -> reason it stays unplaced
        self.displacements: dict[str, int] = {}
        self.queue: list[tuple[int, str]] = []

        self.pools: dict[tuple[object, str | None], _Pool] = {}
        self.metadata_index: dict[str, dict[str, list[str]]] | None = None
        self.glob_matchers: dict[str, Callable[[str], bool]] = {}
        # Failures that do not depend on the unit's name hold for every unit
        # with the same options until something is unassigned (epoch bump).
        self.epoch = 0
        self.failure_memo: dict[tuple[object, ...], tuple[int, str]] = {}

    # ---- ordering -------------------------------------------------------

    def _placement_order(self) -> list[str]:
        """Names sorted, except MachineOf targets and Replaces= winners come first."""

        def predecessors(name: str) -> list[str]:
            options = self.placeable[name].options
            rivals = self.rivals.get(name)
            if not options.machine_of and not rivals:
                return []
            found = [target for target in options.machine_of if target in self.placeable]
            return found + [r for r in rivals or () if self._wins(r, name)]

        order: list[str] = []
        state: dict[str, bool] = {}  # False while on the stack, True when emitted
        for root in sorted(self.placeable):
            if root in state:
                continue
            state[root] = False
            stack = [(root, iter(predecessors(root)))]
            while stack:
                node, pending = stack[-1]
                for predecessor in pending:
                    if predecessor not in state:  # on-stack ones are cycles: skip
                        state[predecessor] = False
                        stack.append((predecessor, iter(predecessors(predecessor))))
                        break
                else:
                    stack.pop()
                    state[node] = True
                    order.append(node)
        return order

    def _machine_of_cycles(self) -> dict[str, str]:
        """Units on a MachineOf cycle -> reason naming the cycle."""
        edges = {
            name: [t for t in spec.options.machine_of if t in self.placeable]
            for name, spec in self.placeable.items()
            if spec.options.machine_of
        }
        reasons: dict[str, str] = {}
        for component in strongly_connected(sorted(edges), edges):
            if len(component) > 1:
                text = "MachineOf cycle: " + " -> ".join(_cycle_from(min(component), edges))
                reasons.update((member, text) for member in component)
        return reasons

    def _wins(self, unit: str, rival: str) -> bool:
        """Whether `unit` keeps a machine that its Replaces= rival wants: the replacer
        does; of units that replace each other, the one started last (then by name)."""
        cycle = self.replace_cycle.get(unit)
        if cycle is not None and cycle == self.replace_cycle.get(rival):
            mine, theirs = self.placeable[unit], self.placeable[rival]
            return (mine.since, unit) > (theirs.since, rival)
        return rival in self.placeable[unit].options.replaces

    # ---- assignment bookkeeping -----------------------------------------

    def _assign(self, name: str, machine: str) -> None:
        self.assignment[name] = machine
        self.hosted[machine][name] = None
        group = self.group_of[name]
        hosts = self.group_hosts.setdefault(group, {})
        hosts[machine] = hosts.get(machine, 0) + 1
        for key in self.spread_keys.get(group, ()):
            counts = self.spread_counts[(group, key)]
            value = self.machines[machine].metadata.get(key)
            counts[value] = counts.get(value, 0) + 1
        conflicts = self.placeable[name].options.conflicts
        if conflicts:
            self.conflict_holders[machine][name] = conflicts

    def _unassign(self, name: str) -> str:
        machine = self.assignment.pop(name)
        del self.hosted[machine][name]
        group = self.group_of[name]
        self.group_hosts[group][machine] -= 1
        for key in self.spread_keys.get(group, ()):
            self.spread_counts[(group, key)][self.machines[machine].metadata.get(key)] -= 1
        self.conflict_holders[machine].pop(name, None)
        self.epoch += 1
        # The load went down: give every pool holding the machine a fresh entry.
        load = len(self.hosted[machine])
        for pool in self.pools.values():
            if machine in pool.heap_key_of:
                heapq.heappush(pool.heaps[pool.heap_key_of[machine]], (load, machine))
        return machine

    def _displace(self, name: str) -> None:
        """Take a unit (and MachineOf dependents riding with it) off its machine."""
        machine = self._unassign(name)
        count = self.displacements.get(name, 0) + 1
        self.displacements[name] = count
        if count > _MAX_DISPLACEMENTS:
            self.failures[name] = "displaced repeatedly by Replaces= of other units"
        else:
            heapq.heappush(self.queue, (self.rank[name], name))
        for dependent in self.dependents.get(name, ()):
            if self.assignment.get(dependent) == machine:
                self._displace(dependent)

    # ---- eligibility ----------------------------------------------------

    def _matcher(self, glob: str) -> Callable[[str], bool]:
        matcher = self.glob_matchers.get(glob)
        if matcher is None:
            matcher = glob_matcher(glob)  # compiled once per plan, used per hosted unit
            self.glob_matchers[glob] = matcher
        return matcher

    def _blocker(self, name: str, options: FleetOptions, machine: str) -> _Blocker | None:
        """Why `machine` cannot take `name` given current assignments (None: it can).

        Name-independent causes are checked first so that failures can be
        memoized for units with identical options.
        """
        if machine in self.avoid.get(name, ()):
            return _Blocker("failed", machine, name_dependent=True)
        limit = options.max_per_machine
        if limit is not None:
            group = self.group_of[name]
            if self.group_hosts.get(group, {}).get(machine, 0) >= limit:
                return _Blocker("max", group, limit)
        hosted = self.hosted[machine]
        for glob in options.conflicts:
            if has_glob(glob):
                match = self._matcher(glob)
                for other in hosted:
                    if other != name and match(other):
                        return _Blocker("conflict", other)
            elif glob in hosted and glob != name:
                return _Blocker("conflict", glob)
        for holder, globs in self.conflict_holders[machine].items():
            if holder != name and any(self._matcher(glob)(name) for glob in globs):
                return _Blocker("conflict", holder, name_dependent=True)
        for rival in self.rivals.get(name, ()):
            if self.assignment.get(rival) == machine and self._wins(rival, name):
                return _Blocker("replaced", rival, name_dependent=True)
        return None

    def _static_blocker(self, options: FleetOptions, machine: str) -> _Blocker | None:
        if options.machine_id is not None and options.machine_id != machine:
            return _Blocker("machine_id", options.machine_id)
        if options.machine_metadata and not options.matches_metadata(
            self.machines[machine].metadata
        ):
            return _Blocker("metadata", _describe_metadata(options.machine_metadata))
        return None

    def _may_stay(self, name: str, machine: str, evicting: bool = True) -> bool:
        if machine not in self.machines:
            return False
        if evicting and self.snapshot.evict.get(name) == machine:
            return False
        held = self.machines[machine].held
        if held is not None:
            # Nothing is known about a machine out of touch: leave its units alone.
            if held:  # "" holds without a note (a loss of a second, still being judged)
                self.notes[name] = f"left on machine {machine}, which is not reporting: {held}"
            return True
        options = self.placeable[name].options
        if options.machine_of and any(
            self.assignment.get(target) != machine for target in options.machine_of
        ):
            return False
        return (
            self._static_blocker(options, machine) is None
            and self._blocker(name, options, machine) is None
        )

    # ---- phase 1: keep valid placements ---------------------------------

    def keep_valid_placements(self) -> None:
        schedule = self.snapshot.schedule
        for name in self.order:
            entry = schedule.get(name)
            if entry is not None and self._may_stay(name, entry.machine):
                self._assign(name, entry.machine)
        self.queue = [
            (index, name) for index, name in enumerate(self.order) if name not in self.assignment
        ]
        # Already sorted by rank, hence already a heap.

    # ---- phase 2: place the rest ----------------------------------------

    def keep_unmovable(self) -> None:
        """Evicted units that found no other machine stay on the draining one, saying
        why (their MachineOf= dependents with them): a drain never unschedules a unit."""
        schedule = self.snapshot.schedule
        kept: list[tuple[str, str]] = []
        for name, machine in self.snapshot.evict.items():
            entry = schedule.get(name)
            if (
                name in self.assignment
                or name not in self.placeable
                or entry is None
                or entry.machine != machine
                or not self._may_stay(name, machine, evicting=False)
            ):
                continue
            why = self.failures.pop(name, "no other machine can take it")
            self.notes[name] = cannot_leave(machine, why)
            self._assign(name, machine)
            kept.append((name, machine))
            for dependent in self.dependents.get(name, ()):
                if dependent not in self.assignment:
                    heapq.heappush(self.queue, (self.rank[dependent], dependent))
        self.place_pending()
        while kept:  # the dependents back beside them say why, and theirs
            name, machine = kept.pop()
            for dependent in self.dependents.get(name, ()):
                if self.assignment.get(dependent) == machine and dependent not in self.notes:
                    self.notes[dependent] = cannot_leave(machine, f"it follows {name} (MachineOf=)")
                    kept.append((dependent, machine))

    def place_pending(self) -> None:
        while self.queue:
            _, name = heapq.heappop(self.queue)
            if name in self.assignment:
                continue  # queued twice
            machine = self._choose(name)
            if machine is None:
                machine = self._stay_despite_failures(name)
            if machine is None:
                continue
            self.failures.pop(name, None)
            self._assign(name, machine)
            self._after_placing(name, machine)

    def _after_placing(self, name: str, machine: str) -> None:
        # Replaces: the rivals it wins against may not stay on this machine.
        for rival in self.rivals.get(name, ()):
            if self.assignment.get(rival) == machine and self._wins(name, rival):
                self._displace(rival)
        # Dependents that already gave up waiting (or that follow a moved
        # target) get another try now that the target has a machine.
        for dependent in self.dependents.get(name, ()):
            if dependent not in self.assignment:
                heapq.heappush(self.queue, (self.rank[dependent], dependent))

    def _stay_despite_failures(self, name: str) -> str | None:
        """A unit that would move off where it failed (RescheduleOnFailure=) but that no
        other machine can take stays there, saying why, rather than not run at all."""
        entry = self.snapshot.schedule.get(name)
        if name not in self.avoid or entry is None:
            return None
        avoided = self.avoid.pop(name)
        if not self._may_stay(name, entry.machine):
            self.avoid[name] = avoided
            return None
        why = self.failures.pop(name, "")
        self.notes[name] = (
            f"{self.snapshot.avoid[name].note}; no other machine can take it ({why}): it "
            f"stays on {entry.machine}"
        )
        return entry.machine

    def _fail(self, name: str, reason: str) -> None:
        self.failures[name] = reason

    def _choose(self, name: str) -> str | None:
        options = self.placeable[name].options
        if not self.alive:
            self._fail(name, NO_MACHINES)
            return None
        if options.machine_of:
            return self._choose_beside(name, options)
        if options.machine_id is not None:
            target = self.machines.get(options.machine_id)
            if target is None or target.held is not None:
                self._fail(name, f"no machine with id {options.machine_id} is alive")
                return None
            if self.snapshot.evict.get(name) == options.machine_id:
                self._fail(name, f"MachineID={options.machine_id} pins it to that machine")
                return None
            if self._closed(name, options.machine_id):
                self._fail(name, f"machine {options.machine_id} cannot take it: it is cordoned")
                return None
            blocker = self._static_blocker(options, options.machine_id) or self._blocker(
                name, options, options.machine_id
            )
            if blocker is not None:
                self._fail(name, f"machine {options.machine_id} cannot take it: {blocker.phrase()}")
                return None
            return options.machine_id
        if not self.open:
            self._fail(name, EVERY_MACHINE_CORDONED)
            return None
        return self._choose_from_pool(name, options)

    def _closed(self, name: str, machine: str) -> bool:
        """A cordoned machine takes back only a unit it already has (one that could not
        leave it, or that follows such a unit)."""
        entry = self.snapshot.schedule.get(name)
        return self.machines[machine].cordoned and (entry is None or entry.machine != machine)

    def _choose_beside(self, name: str, options: FleetOptions) -> str | None:
        if name in self.cycles:
            self._fail(name, self.cycles[name])
            return None
        target, host = options.machine_of[0], None
        for other in options.machine_of:
            other_host = self.assignment.get(other)
            if other_host is None:
                self._fail(name, f"waiting for {other} to be placed{self._why_unplaced(other)}")
                return None
            if host is None:
                host = other_host
            elif other_host != host:
                self._fail(
                    name,
                    f"cannot join {target} on machine {host}: {other} is on machine {other_host}",
                )
                return None
        assert host is not None
        held = self.machines[host].held
        if held is not None:
            self._fail(name, f"waiting for {target}, whose machine {host} is not reporting")
            return None
        if self._closed(name, host):
            self._fail(name, f"cannot join {target} on machine {host}: it is cordoned")
            return None
        blocker = self._static_blocker(options, host) or self._blocker(name, options, host)
        if blocker is not None:
            self._fail(name, f"cannot join {target} on machine {host}: {blocker.phrase()}")
            return None
        return host

    def _why_unplaced(self, target: str) -> str:
        spec = self.snapshot.units.get(target)
        if spec is None:
            return f"; {target} is not submitted"
        if spec.options.is_global:
            return f"; {target} is global and never placed by the engine"
        if spec.desired not in PLACED_STATES:
            return f"; {target} is {spec.desired}"
        return ""

    def _choose_from_pool(self, name: str, options: FleetOptions) -> str | None:
        memo_key = (
            options.machine_metadata,
            options.conflicts,
            options.max_per_machine,
            self.group_of[name] if options.max_per_machine is not None else None,
        )
        remembered = self.failure_memo.get(memo_key)
        if remembered is not None and remembered[0] == self.epoch:
            self._fail(name, remembered[1])
            return None
        pool = self._pool(options.machine_metadata, options.spread)
        if not pool.heap_key_of:
            reason = f"no machine has {_describe_metadata(options.machine_metadata)}"
            self._fail(name, reason)
            self.failure_memo[memo_key] = (self.epoch, reason)
            return None

        running_on = self.snapshot.running.get(name)
        if (
            running_on is not None
            and running_on in pool.heap_key_of
            and self._blocker(name, options, running_on) is None
        ):
            # Its heap entry goes stale and is refreshed when popped (_pop_eligible).
            heap = pool.heaps[pool.heap_key_of[running_on]]
            heapq.heappush(heap, (len(self.hosted[running_on]) + 1, running_on))
            return running_on

        blockers: list[_Blocker] = []
        best: tuple[int, int, str] | None = None  # (spread count, load, machine)
        popped: list[tuple[str | None, str]] = []  # (heap key, machine) to push back
        spread_counts = (
            self._spread_counts(self.group_of[name], options.spread)
            if options.spread is not None
            else None
        )
        for heap_key in _sorted_heap_keys(pool.heaps):
            found = self._pop_eligible(name, options, pool.heaps[heap_key], blockers)
            if found is None:
                continue
            popped.append((heap_key, found))
            instances = spread_counts.get(heap_key, 0) if spread_counts is not None else 0
            candidate = (instances, len(self.hosted[found]), found)
            if best is None or candidate < best:
                best = candidate
        for heap_key, machine in popped:
            if best is None or machine != best[2]:
                heapq.heappush(pool.heaps[heap_key], (len(self.hosted[machine]), machine))
        if best is None:
            reason = _summarize_blockers(blockers)
            self._fail(name, reason)
            if not any(blocker.name_dependent for blocker in blockers):
                self.failure_memo[memo_key] = (self.epoch, reason)
            return None
        chosen = best[2]
        # The chosen machine's load grows by one once assigned.
        heapq.heappush(pool.heaps[pool.heap_key_of[chosen]], (len(self.hosted[chosen]) + 1, chosen))
        return chosen

    def _pop_eligible(
        self,
        name: str,
        options: FleetOptions,
        heap: list[tuple[int, str]],
        blockers: list[_Blocker],
    ) -> str | None:
        """Pop the least-loaded eligible machine; refused ones are pushed back."""
        refused: dict[str, None] = {}  # dict: O(1) membership, insertion order
        found: str | None = None
        while heap:
            load, machine = heapq.heappop(heap)
            current = len(self.hosted[machine])
            if load < current:
                heapq.heappush(heap, (current, machine))
                continue
            if load > current or machine in refused:
                continue  # stale duplicate
            blocker = self._blocker(name, options, machine)
            if blocker is None:
                found = machine
                break
            refused[machine] = None
            blockers.append(blocker)
        for machine in refused:
            heapq.heappush(heap, (len(self.hosted[machine]), machine))
        return found

    def _pool(
        self, requirements: tuple[tuple[str, tuple[str, ...]], ...], spread: str | None
    ) -> _Pool:
        key = (requirements, spread)
        pool = self.pools.get(key)
        if pool is not None:
            return pool
        members = self._machines_matching(requirements)
        heap_key_of: dict[str, str | None] = {
            machine: (self.machines[machine].metadata.get(spread) if spread is not None else None)
            for machine in members
        }
        heaps: dict[str | None, list[tuple[int, str]]] = {}
        for machine, heap_key in heap_key_of.items():
            heaps.setdefault(heap_key, []).append((len(self.hosted[machine]), machine))
        for heap in heaps.values():
            heapq.heapify(heap)
        pool = _Pool(heap_key_of, heaps)
        self.pools[key] = pool
        return pool

    def _machines_matching(
        self, requirements: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> list[str]:
        """Live machines meeting the requirements: held and cordoned ones take nothing new."""
        if not requirements:
            return self.open
        if self.metadata_index is None:
            index: dict[str, dict[str, list[str]]] = {}
            for machine_id in self.open:
                for meta_key, value in self.machines[machine_id].metadata.items():
                    index.setdefault(meta_key, {}).setdefault(value, []).append(machine_id)
            self.metadata_index = index
        matching: set[str] | None = None
        for meta_key, values in requirements:
            by_value = self.metadata_index.get(meta_key, {})
            allowed = {machine for value in values for machine in by_value.get(value, ())}
            matching = allowed if matching is None else matching & allowed
        return sorted(matching or ())

    def _spread_counts(self, group: str, spread: str) -> dict[str | None, int]:
        counts = self.spread_counts.get((group, spread))
        if counts is None:
            counts = {}
            for machine, instances in self.group_hosts.get(group, {}).items():
                value = self.machines[machine].metadata.get(spread)
                counts[value] = counts.get(value, 0) + instances
            self.spread_counts[(group, spread)] = counts
            self.spread_keys.setdefault(group, []).append(spread)
        return counts

    # ---- diff -----------------------------------------------------------

    def changes(self) -> PlacementPlan:
        schedule = self.snapshot.schedule
        units = self.snapshot.units
        unschedules: list[Change] = [
            Unschedule(name, schedule[name].machine)
            for name in sorted(schedule)
            if name not in self.assignment
        ]
        moves: list[Change] = []
        retargets: list[Change] = []
        schedules: list[Change] = []
        draining = set(self.snapshot.evict.values())
        # Assignment order is decision order (a re-placed unit is re-inserted).
        for name, machine in self.assignment.items():
            spec = units[name]
            old = schedule.get(name)
            if old is None:
                schedules.append(Schedule(name, machine, spec.desired, spec.hash, spec.signature))
            elif old.machine != machine:
                moves.append(
                    Move(name, old.machine, machine, spec.desired, spec.hash, spec.signature)
                )
                if old.machine in draining:  # it, or a MachineOf= dependent following it
                    self.notes[name] = moved_off(old.machine, machine)
            elif (old.desired, old.hash, old.signature) != (
                spec.desired,
                spec.hash,
                spec.signature,
            ):
                retargets.append(Retarget(name, machine, spec.desired, spec.hash, spec.signature))
        # Every reason is decided here: unplaced units say why, units left on a machine
        # out of touch say so, invalid units say what is wrong with them (while they
        # should run), and reasons of destroyed units go.
        reasons: list[Change] = []
        stored = self.snapshot.reasons
        invalid = self.snapshot.invalid
        for name in sorted(set(units) | set(invalid) | set(stored)):
            wanted = self.failures.get(name) or self.notes.get(name)
            avoided = self.snapshot.avoid.get(name)
            if wanted is None and avoided is not None and name in self.assignment:
                wanted = avoided.note
            bad = invalid.get(name)
            if bad is not None and bad.desired in PLACED_STATES:
                wanted = f"invalid unit: {bad.why}"
            if stored.get(name) != wanted:
                reasons.append(SetReason(name, wanted))
        return PlacementPlan(tuple(unschedules + moves + retargets + schedules + reasons))


def _sorted_heap_keys(heaps: Mapping[str | None, object]) -> list[str | None]:
    # Machines lacking the Spread key (None) sort last.
    return sorted(heaps, key=lambda value: (value is None, value or ""))


def strongly_connected(nodes: list[str], edges: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of the graph (iterative: chains of
    thousands of units), each component's members in the order found."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(edges.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(edges.get(successor, ()))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _cycle_from(start: str, edges: Mapping[str, list[str]]) -> list[str]:
    """The shortest cycle through `start` (which is on one), as [start, ..., start]."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in edges.get(node, ()):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    raise ValueError(f"{start} is on no cycle")


def plan_placements(snapshot: Snapshot) -> PlacementPlan:
    """Decide placements for `snapshot`. Pure and deterministic."""
    planner = _Planner(snapshot)
    planner.keep_valid_placements()
    planner.place_pending()
    if snapshot.evict:
        planner.keep_unmovable()
    return planner.changes()
