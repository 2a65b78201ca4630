"""The agent's decisions, pure functions of what it is asked to run and what its unit
manager observes: `plan(desired, observed, trusted)` = which units it refuses (`screen`:
only with trusted keys configured; a `Policy` adds the versions accepted before and how
many signatures a unit needs) and the actions for the rest (`plan_actions`); and
`select_globals`, the global units this machine runs. fleetpy.agent gathers the inputs
and executes the actions."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from .errors import FleetpyError
from .log import log_event
from .model.records import ScheduleEntry
from .states import PLACED_STATES, RUNNING_STATES, DesiredState
from .trust import KEY_WITHDRAWN
from .unitfile.signing import HOLDING, Accepted, TrustedKeys, Verdict
from .unitfile.unit import FleetOptions, conflicts, fleet_options, parse_unit
from .unitmanager import Action, ObservedUnit, RemoveUnit, StartUnit, StopUnit, WriteUnit


@dataclass(frozen=True)
class DesiredUnit:
    name: str
    hash: str
    desired: DesiredState  # loaded or launched
    text: str
    signature: str | None = None


@dataclass(frozen=True)
class Policy:
    """What a signed unit must also satisfy here, besides trusted signatures."""

    versions: Mapping[str, int] = field(default_factory=dict)  # highest accepted, by name
    required: int = 1  # distinct trusted keys that must have signed (signatures_required)
    now: int | None = None  # ms; None: this machine's clock


@dataclass(frozen=True)
class AgentPlan:
    actions: list[Action]
    rejected: dict[str, tuple[str, Verdict]]  # unit -> (its content hash, why refused)
    # The version each accepted signed unit binds: recorded (accepted_versions) before
    # the actions run, so that no older one is accepted again.
    versions: dict[str, int] = field(default_factory=dict)
    # Refused only because its key stopped counting, and left running as it runs here
    # (on_revoke=keep): unit -> why its signature no longer counts.
    kept: dict[str, Verdict] = field(default_factory=dict)


@dataclass(frozen=True)
class Screened:
    accepted: dict[str, DesiredUnit]
    rejected: dict[str, tuple[str, Verdict]]
    versions: dict[str, int]  # of the accepted units, when signatures are checked

    @property
    def held(self) -> set[str]:
        """Refused units whose running version (if any) stays as it is (HOLDING)."""
        return {n for n, (_, verdict) in self.rejected.items() if verdict.reason in HOLDING}


def screen(
    desired: Mapping[str, DesiredUnit], trusted: TrustedKeys | None, policy: Policy = Policy()
) -> Screened:
    """The units this machine may run, the refused ones and why.

    Without trusted keys every unit may run (fleet's behaviour). With them, a unit runs
    only if enough trusted keys signed its name, content hash and version, its text is
    that content, and its version is not older than one accepted here before: a unit
    written into etcd without a key, a signed one whose text was swapped, or an older
    signed version replayed, is refused before its file is written.
    """
    if trusted is None:
        return Screened(dict(desired), {}, {})
    accepted: dict[str, DesiredUnit] = {}
    rejected: dict[str, tuple[str, Verdict]] = {}
    versions: dict[str, int] = {}
    for name, unit in desired.items():
        verdict = trusted.check(
            name,
            unit.hash,
            unit.text,
            unit.signature,
            required=policy.required,
            accepted=policy.versions.get(name),
            now=policy.now,
        )
        if isinstance(verdict, Accepted):
            accepted[name] = unit
            versions[name] = verdict.version
        else:
            rejected[name] = (unit.hash, verdict)
    return Screened(accepted, rejected, versions)


def plan(
    desired: Mapping[str, DesiredUnit],
    observed: Mapping[str, ObservedUnit],
    trusted: TrustedKeys | None = None,
    newer: Set[str] = frozenset(),
    *,
    policy: Policy = Policy(),
    keep_withdrawn: bool = False,
) -> AgentPlan:
    """The agent's whole decision. A refused unit counts as not desired here: if an
    earlier, valid version of it runs (its record was since replaced by a forged or
    unsigned one), that is stopped and removed too, since the cluster no longer asks
    for what runs and what it asks for may not run. Except when trusted keys did sign
    what is asked, only not acceptably yet (an older version, one from the future, too
    few signatures: HOLDING): what runs was accepted and is left as it is, as is a unit
    whose schedule entry is `newer` than this agent reads: neither stopped nor started.
    With KEEP_WITHDRAWN (on_revoke=keep), so is a unit refused only because its key was
    revoked, expired or removed, when exactly that content is what the host has: what
    ran when the key counted runs on; nothing new is started with it."""
    screened = screen({n: u for n, u in desired.items() if n not in newer}, trusted, policy)
    kept: dict[str, Verdict] = {}
    if keep_withdrawn:
        for name, (content_hash, verdict) in list(screened.rejected.items()):
            here = observed.get(name)
            if verdict.reason in KEY_WITHDRAWN and here is not None and here.hash == content_hash:
                kept[name] = verdict
                del screened.rejected[name]
    held = screened.held | set(kept)
    left = {n: u for n, u in observed.items() if n not in newer and n not in held}
    actions = plan_actions(screened.accepted, left)
    return AgentPlan(actions, screened.rejected, screened.versions, kept)


def plan_actions(
    desired: Mapping[str, DesiredUnit], observed: Mapping[str, ObservedUnit]
) -> list[Action]:
    """The actions that take the host from `observed` to `desired`, in execution order.

    Stops come first (free resources), then removals, writes, and starts. A unit whose
    content changed is stopped, rewritten and started again if it should run. A unit
    the agent launched is not started again just because it failed: systemd's own
    Restart= decides that, and the failure stays visible.
    """
    stops: list[Action] = []
    removes: list[Action] = []
    writes: list[Action] = []
    starts: list[Action] = []
    for name in sorted(observed):
        unit = observed[name]
        want = desired.get(name)
        running = unit.launched or unit.active in RUNNING_STATES
        if want is None:
            if running:
                stops.append(StopUnit(name))
            removes.append(RemoveUnit(name))
        elif want.hash != unit.hash:
            if running:
                stops.append(StopUnit(name))
            writes.append(WriteUnit(name, want.hash, want.text))
            if want.desired is DesiredState.LAUNCHED:
                starts.append(StartUnit(name))
        elif want.desired is DesiredState.LAUNCHED and not unit.launched:
            starts.append(StartUnit(name))
        elif want.desired is DesiredState.LOADED and running:
            stops.append(StopUnit(name))
    for name in sorted(set(desired) - set(observed)):
        want = desired[name]
        writes.append(WriteUnit(name, want.hash, want.text))
        if want.desired is DesiredState.LAUNCHED:
            starts.append(StartUnit(name))
    return stops + removes + writes + starts


def select_globals(
    globals_: Mapping[str, ScheduleEntry],
    placed: Mapping[str, ScheduleEntry],
    metadata: Mapping[str, str],
) -> dict[str, ScheduleEntry]:
    """The global units this machine runs: metadata matches and no Conflicts either way
    (with the units placed here, or with globals chosen before)."""
    chosen: dict[str, ScheduleEntry] = {}
    if not any(entry.desired in PLACED_STATES for entry in globals_.values()):
        return chosen  # nothing to choose: the placed units' files need no parsing
    local_options: dict[str, FleetOptions] = {}
    for name, entry in placed.items():
        try:
            local_options[name] = fleet_options(parse_unit(entry.text, name), name)
        except FleetpyError:
            continue
    for name, entry in sorted(globals_.items()):
        if entry.desired not in PLACED_STATES:
            continue
        try:
            options = fleet_options(parse_unit(entry.text, name), name)
        except FleetpyError as exc:
            log_event("global_unit_invalid", unit=name, error=str(exc))
            continue
        if not options.matches_metadata(metadata):
            continue
        if any(
            conflicts(name, options, other, other_options)
            for other, other_options in local_options.items()
        ):
            continue
        chosen[name] = entry
        local_options[name] = options  # later globals must not conflict with this one
    return chosen
