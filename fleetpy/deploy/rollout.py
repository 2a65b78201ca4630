"""Plan and apply a rendered deployment against the cluster: new units are started,
changed ones replaced as a rolling update, and (with prune) units the deployment no
longer renders destroyed. Units the deployment did not create are never touched.

A new version replaces the old under the same name: the unit record gets the new
content hash, the engine retargets it in place (same machine, if its constraints still
allow), and that machine's agent stops the old contents, rewrites the unit file and
starts the new one, so `systemctl` on the host shows the same unit before and after.

With a signer every unit apply writes is signed (its name, content hash and a version past
the stored one); a unit whose contents did not change but which this key has not signed is
re-signed in place (a SIGN change: nothing restarts), which is how a deployment moves to a
new key. A rollback signs the previous contents anew, at a newer version: agents refuse a
version older than one they accepted, so the previous signature would not do.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..client.arguments import select_units
from ..client.plans import EDGES, Contents, check_cycles
from ..client.waiting import UnitProgress, WaitTarget, wait_for
from ..errors import DeploymentError, FleetOptionError, FleetpyError, StateError
from ..model.changes import UnitChange
from ..model.records import DeploymentRecord, DeploymentSession, UnitRecord
from ..registry.roles import OperatorRegistry
from ..states import ActiveState, DesiredState
from ..unitfile.signing import Signer, Verdict, signature_key_ids, signature_version
from .deployment import RenderedUnit
from .global_rollout import (
    RollOptions,
    restart_global,
    roll_version,
    rolling_machines,
    wait_everywhere,
)


class ChangeKind(StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"  # owned, no longer rendered: destroyed with prune
    ORPHAN = "orphan"  # owned, no longer rendered: kept (no prune)
    SIGN = "sign"  # same contents, running: only its signature is replaced


@dataclass(frozen=True)
class UnitDiff:
    name: str
    kind: ChangeKind
    old_hash: str | None = None
    new_hash: str | None = None
    diff: str = ""  # unified diff of the unit file for a change
    source: str = ""  # the template (and instance) it is rendered from
    start: bool = False  # only its desired state changes: it is not launched now
    old_signature: str | None = None  # the stored record's (a rollback puts it back)
    resume: bool = False  # a global unit's rolling update a killed apply left unfinished


@dataclass(frozen=True)
class DeploymentPlan:
    deployment: str
    origin: str  # the git commit or content digest being applied
    changes: tuple[UnitDiff, ...]
    unchanged: tuple[str, ...]
    last_applied: str  # what the deployment record says was applied last
    applying: str  # what an apply in progress (or one that died) was applying

    @property
    def has_changes(self) -> bool:
        return any(c.kind is not ChangeKind.ORPHAN for c in self.changes)

    def of(self, kind: ChangeKind) -> list[UnitDiff]:
        return [c for c in self.changes if c.kind is kind]


def _diff(name: str, old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{name} (cluster)",
            tofile=f"{name} (new)",
        )
    )


def plan_deployment(
    registry: OperatorRegistry,
    deployment: str,
    units: Sequence[RenderedUnit],
    origin: str,
    prune: bool = False,
    signer: Signer | None = None,
) -> DeploymentPlan:
    """What apply would do. Raises DeploymentError when a rendered unit exists in the
    cluster but was not created by this deployment (it is never taken over)."""
    current = registry.get_units([u.name for u in units])
    foreign = sorted(
        name
        for name, record in current.items()
        if record is not None and record.owner != deployment
    )
    if foreign:
        owners = {current[n].owner for n in foreign if current[n] is not None}  # type: ignore[union-attr]
        whose = ", ".join(sorted(f"deployment {o}" if o else "no deployment" for o in owners))
        raise DeploymentError(
            f"{len(foreign)} unit{'s' if len(foreign) != 1 else ''} of deployment {deployment} "
            f"already exist, created by {whose}: {', '.join(foreign[:5])}"
            f"{' ...' if len(foreign) > 5 else ''}; destroy them or rename them here"
        )
    if any(edge(u.options) for u in units for edge in EDGES.values()):
        try:  # as submit does: a MachineOf= or Requires= cycle is refused, nothing written
            check_cycles(registry, Contents(registry), {u.name: u.options for u in units})
        except FleetOptionError as exc:
            raise DeploymentError(str(exc)) from None
    old_hashes = sorted(
        {r.hash for r in current.values() if r is not None} - {u.hash for u in units}
    )
    old_texts = registry.get_contents(old_hashes) if old_hashes else {}
    changes: list[UnitDiff] = []
    unchanged: list[str] = []
    for unit in units:
        record = current[unit.name]
        if record is None:
            changes.append(UnitDiff(unit.name, ChangeKind.ADD, None, unit.hash, source=unit.source))
        elif record.hash != unit.hash:
            if record.is_global != unit.is_global:  # before anything is written
                raise DeploymentError(str(StateError.global_changes(unit.name, unit.is_global)))
            old = old_texts.get(record.hash, "")
            changes.append(_changed(unit, record, _diff(unit.name, old, unit.text)))
        elif record.desired is not DesiredState.LAUNCHED:
            diff = f"desired state {record.desired} -> launched\n"
            changes.append(_changed(unit, record, diff, start=True))
        elif record.is_global and (left := _unfinished_roll(registry, unit.name)):
            diff = f"rolling update unfinished: {left} still run the previous version\n"
            changes.append(_changed(unit, record, diff, resume=True))
        elif signer is not None and not signer.has_signed(unit.name, unit.hash, record.signature):
            was = ", ".join(signature_key_ids(record.signature))
            changes.append(
                UnitDiff(
                    unit.name,
                    ChangeKind.SIGN,
                    record.hash,
                    unit.hash,
                    f"signature: {f'key {was}' if was else 'none'} -> key {signer.key_id}\n",
                    unit.source,
                    old_signature=record.signature,
                )
            )
        else:
            unchanged.append(unit.name)
    rendered = {u.name for u in units}
    for name, record in sorted(registry.owned_units(deployment).items()):
        if name not in rendered:
            kind = ChangeKind.REMOVE if prune else ChangeKind.ORPHAN
            changes.append(UnitDiff(name, kind, record.hash, None))
    record_now = registry.get_deployment(deployment)
    return DeploymentPlan(
        deployment,
        origin,
        tuple(changes),
        tuple(unchanged),
        record_now.commit if record_now else "",
        record_now.applying if record_now else "",
    )


def _changed(
    unit: RenderedUnit, record: UnitRecord, diff: str, start: bool = False, resume: bool = False
) -> UnitDiff:
    """A CHANGE of RECORD to the rendered UNIT."""
    return UnitDiff(
        unit.name,
        ChangeKind.CHANGE,
        record.hash,
        unit.hash,
        diff,
        unit.source,
        start=start,
        old_signature=record.signature,
        resume=resume,
    )


def _unfinished_roll(registry: OperatorRegistry, name: str) -> str:
    """'N machines' still on the previous version of global unit NAME, or ''."""
    found = registry.get_global(name)
    roll = found[0].roll if found is not None else None
    if roll is None or roll.previous is None or not roll.waiting:
        return ""
    return f"{len(roll.waiting)} machine{'s' if len(roll.waiting) != 1 else ''}"


# ----------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class ApplyOptions:
    max_unavailable: int = 1
    min_ready: float = 5.0
    timeout: float = 120.0  # a new version must be active within this
    rollback: bool = False  # on failure, put the previous version of the failed units back


@dataclass(frozen=True)
class ApplyEvent:
    """Progress of an apply, for display."""

    step: str  # "add", "replace", "ready", "prune", "rollback", "done", "failed"
    units: tuple[str, ...]
    detail: str = ""
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class ApplyResult:
    added: tuple[str, ...]
    replaced: tuple[str, ...]
    removed: tuple[str, ...]
    seconds: float


Progress = Callable[[ApplyEvent], None]


def _wait_launched(
    registry: OperatorRegistry,
    names: Sequence[str],
    timeout: float,
    on_progress: Callable[[list[UnitProgress]], None] | None = None,
) -> str | None:
    """None when every unit runs its current version; else why not, in one line."""
    result = wait_for(
        registry, names, WaitTarget.LAUNCHED, max(1, int(timeout + 0.999)), on_progress
    )
    return result.error_message()


def _still_ready(registry: OperatorRegistry, names: Sequence[str]) -> str | None:
    """After min-ready: each unit still active with its current contents somewhere."""
    view = registry.read_view(with_text=False)
    problems = []
    for name in names:
        record = view.units.get(name)
        states = view.states.get(name, {})
        if record is None:
            problems.append(f"{name} was destroyed")
        elif not any(
            s.hash == record.hash and s.active == ActiveState.ACTIVE for s in states.values()
        ):
            shown = ", ".join(f"{s.active}/{s.sub}" for s in states.values()) or "no state"
            problems.append(f"{name} did not stay active ({shown})")
    return "; ".join(problems) or None


def _groups(
    plan_changes: Sequence[UnitDiff], units: Mapping[str, RenderedUnit]
) -> list[list[UnitDiff]]:
    """Changed units in rollout order; a unit bound by MachineOf= to a changed primary
    is replaced in the same step as its primary."""
    changed = {c.name: c for c in plan_changes}
    groups: dict[str, list[UnitDiff]] = {}
    for change in plan_changes:
        primary = change.name
        seen = {primary}
        while True:  # follow MachineOf to the changed unit at the top
            target = next(
                (t for t in units[primary].options.machine_of if t in changed and t not in seen),
                None,
            )
            if target is None:
                break
            primary = target
            seen.add(primary)
        groups.setdefault(primary, []).append(change)
    return [
        sorted(group, key=lambda c: (c.name != primary, c.name))
        for primary, group in sorted(groups.items())
    ]


def apply_deployment(
    registry: OperatorRegistry,
    plan: DeploymentPlan,
    units: Sequence[RenderedUnit],
    options: ApplyOptions,
    on_progress: Progress = lambda event: None,
    signer: Signer | None = None,
) -> ApplyResult:
    """Carry out `plan`: add, re-sign, replace (rolling), prune; stop at the first failure.

    Raises DeploymentError saying where it stopped and why (the cluster is left as the
    rollout left it, or with the failed units' previous versions back under rollback).
    """
    started = time.monotonic()
    by_name = {u.name: u for u in units}

    # Each unit's versions only move forward: past the stored one, and past any this
    # apply signed already (a rollback's comes after the failed version's).
    signed = {c.name: signature_version(c.old_signature) for c in plan.changes}

    def sign(name: str, content_hash: str | None) -> str | None:
        if signer is None or content_hash is None:
            return None
        signature = signer.sign(name, content_hash, signed.get(name, 0))
        signed[name] = signature_version(signature)
        return signature

    def sign_again(name: str, content_hash: str, old_signature: str | None) -> str | None:
        """A rollback's signature: the previous contents (read from etcd) signed anew at a
        newer version only if one of the signer's own keys signed them before, as
        `start --sign NAME` does; else their own signature, which agents that accepted
        the newer version refuse (`rollback`): the unit then stays as it runs."""
        if signer is None or isinstance(
            signer.own.verify(name, content_hash, old_signature), Verdict
        ):
            return old_signature
        return sign(name, content_hash)

    record = registry.get_deployment(plan.deployment) or DeploymentRecord(plan.deployment)
    if record.commit != plan.last_applied or record.applying != plan.applying:
        raise DeploymentError(
            f"deployment {plan.deployment} changed since it was planned "
            "(another apply?); plan again"
        )
    session = DeploymentSession(record)
    registry.update_deployment(session, applying=plan.origin, message="")
    added: list[str] = []
    replaced: list[str] = []
    removed: list[str] = []

    def fail(where: str, why: str, changed_back: str = "") -> DeploymentError:
        message = f"stopped at {where}: {why}{changed_back}"
        try:
            registry.update_deployment(session, applying="", message=message)
        except FleetpyError:
            pass  # the error below says what matters
        on_progress(ApplyEvent("failed", (), message))
        done = (
            f" (done before: {len(added)} added, {len(replaced)} replaced; the rest is untouched)"
        )
        return DeploymentError(message + done)

    adds = plan.of(ChangeKind.ADD)
    if adds:
        names = tuple(c.name for c in adds)
        on_progress(ApplyEvent("add", names, total=len(names)))
        registry.change_units(
            [
                UnitChange(
                    u.name,
                    DesiredState.LAUNCHED,
                    u.text,
                    u.hash,
                    u.is_global,
                    owner=plan.deployment,
                    origin=plan.origin,
                    signature=sign(u.name, u.hash),
                )
                for u in (by_name[n] for n in names)
            ],
            session=session,
        )
        why = _wait_launched(registry, names, options.timeout)
        if why is not None:
            raise fail(names[0] if len(names) == 1 else f"{len(names)} new units", why)
        added.extend(names)

    resign = plan.of(ChangeKind.SIGN)
    if resign and signer is not None:
        # Same contents: the agents keep the units running; no step-by-step rollout.
        names = tuple(c.name for c in resign)
        on_progress(ApplyEvent("sign", names, f"key {signer.key_id}", total=len(names)))
        registry.change_units(
            [
                UnitChange(
                    c.name,
                    text=by_name[c.name].text,
                    hash=c.new_hash,
                    is_global=by_name[c.name].is_global,
                    owner=plan.deployment,
                    signature=sign(c.name, c.new_hash),
                )
                for c in resign
            ],
            session=session,
        )

    changes = plan.of(ChangeKind.CHANGE)
    # A global unit's new version is rolled machine by machine (global_rollout), after the rest.
    rolled = [c for c in changes if by_name[c.name].is_global and not c.start]
    groups = _groups([c for c in changes if c not in rolled], by_name)
    total = sum(len(g) for g in groups) + len(rolled)
    old_texts = registry.get_contents(
        sorted({c.old_hash for g in groups for c in g if c.old_hash and not c.start})
    )
    step = max(1, options.max_unavailable)
    for first in range(0, len(groups), step):
        batch = [c for group in groups[first : first + step] for c in group]
        names = tuple(c.name for c in batch)
        on_progress(ApplyEvent("replace", names, done=len(replaced), total=total))
        registry.change_units(
            [
                UnitChange(
                    c.name,
                    DesiredState.LAUNCHED,
                    by_name[c.name].text,
                    c.new_hash,
                    by_name[c.name].is_global,
                    owner=plan.deployment,
                    origin=plan.origin,
                    replace=True,
                    signature=sign(c.name, c.new_hash),
                )
                for c in batch
            ],
            session=session,
        )
        why = _wait_launched(registry, names, options.timeout)
        if why is None and options.min_ready > 0:
            on_progress(
                ApplyEvent(
                    "ready", names, f"{options.min_ready:g}s", done=len(replaced), total=total
                )
            )
            time.sleep(options.min_ready)
            why = _still_ready(registry, names)
        if why is not None:
            back = ""
            if options.rollback:
                back = _roll_back(
                    registry,
                    plan,
                    batch,
                    by_name,
                    old_texts,
                    session,
                    options,
                    on_progress,
                    sign_again,
                )
            raise fail(", ".join(names), why, back)
        replaced.extend(names)

    for change in rolled:
        on_progress(ApplyEvent("replace", (change.name,), "global", len(replaced), total))
        try:
            _roll_global(
                registry, plan, change, by_name[change.name], session, options, sign, on_progress
            )
        except DeploymentError as exc:
            back = ""
            if options.rollback:
                back = _roll_back_global(
                    registry, plan, change.name, session, options, on_progress, sign_again
                )
            raise fail(change.name, str(exc), back) from None
        replaced.append(change.name)

    prune = plan.of(ChangeKind.REMOVE)
    if prune:
        names = tuple(c.name for c in prune)
        on_progress(ApplyEvent("prune", names, total=len(names)))
        removed.extend(registry.destroy_units(select_units(set(names), names), session))

    registry.update_deployment(
        session,
        commit=plan.origin,
        applying="",
        message=f"applied {len(added)} added, {len(replaced)} replaced, {len(removed)} removed",
    )
    result = ApplyResult(tuple(added), tuple(replaced), tuple(removed), time.monotonic() - started)
    on_progress(ApplyEvent("done", (), total=len(added) + len(replaced) + len(removed)))
    return result


def _roll_global(
    registry: OperatorRegistry,
    plan: DeploymentPlan,
    change: UnitDiff,
    unit: RenderedUnit,
    session: DeploymentSession,
    options: ApplyOptions,
    sign: Callable[[str, str | None], str | None],
    on_progress: Progress,
) -> None:
    """Write a global unit's new version for the machines that run it to take a few at a
    time, then roll it (or only go on with a roll a killed apply left unfinished)."""
    if not change.resume:
        view = registry.read_view(with_text=False)
        registry.change_units(
            [
                UnitChange(
                    change.name,
                    DesiredState.LAUNCHED,
                    unit.text,
                    change.new_hash,
                    True,
                    owner=plan.deployment,
                    origin=plan.origin,
                    replace=True,
                    signature=sign(change.name, change.new_hash),
                    rolling=rolling_machines(view, change.name),
                )
            ],
            session=session,
        )

    def report(step: str, detail: str, done: int, total: int) -> None:
        on_progress(ApplyEvent(step, (change.name,), detail, done, total))

    roll_version(
        registry,
        change.name,
        RollOptions(options.max_unavailable, options.min_ready, options.timeout),
        report,
        session,
    )


def _roll_back_global(
    registry: OperatorRegistry,
    plan: DeploymentPlan,
    name: str,
    session: DeploymentSession,
    options: ApplyOptions,
    on_progress: Progress,
    sign_again: Callable[[str, str, str | None], str | None],
) -> str:
    """Put a global unit's previous version back on the machines its roll moved (the
    others still run it): from its entry, which holds that version whole."""
    found = registry.get_global(name)
    roll = found[0].roll if found is not None else None
    if roll is None or roll.previous is None:
        return "; nothing to roll back"
    old = roll.previous
    on_progress(ApplyEvent("rollback", (name,)))
    try:
        registry.change_units(
            [
                UnitChange(
                    name,
                    DesiredState.LAUNCHED,
                    old.text,
                    old.hash,
                    True,
                    owner=plan.deployment,
                    origin=plan.last_applied or None,
                    replace=True,
                    signature=sign_again(name, old.hash, old.signature),
                )
            ],
            session=session,
        )
        why = wait_everywhere(registry, name, old.hash, options.timeout)
    except FleetpyError as exc:
        return f"; rollback failed: {exc}"
    if why is not None:
        return f"; rolled back, but the previous version is not active everywhere: {why}"
    return f"; rolled back {name} to the previous version"


def _roll_back(
    registry: OperatorRegistry,
    plan: DeploymentPlan,
    batch: Sequence[UnitDiff],
    by_name: Mapping[str, RenderedUnit],
    old_texts: Mapping[str, str],
    session: DeploymentSession,
    options: ApplyOptions,
    on_progress: Progress,
    sign_again: Callable[[str, str, str | None], str | None],
) -> str:
    """Put the previous versions of a failed step back (signed by `sign_again`); a note
    for the error message."""
    back = [c for c in batch if not c.start and c.old_hash in old_texts]
    if not back:
        return "; nothing to roll back"
    names = tuple(c.name for c in back)
    on_progress(ApplyEvent("rollback", names))
    try:
        registry.change_units(
            [
                UnitChange(
                    c.name,
                    DesiredState.LAUNCHED,
                    old_texts[c.old_hash or ""],
                    c.old_hash,
                    by_name[c.name].is_global,  # plan_deployment refuses a Global= change
                    owner=plan.deployment,
                    origin=plan.last_applied or None,
                    replace=True,
                    signature=sign_again(c.name, c.old_hash or "", c.old_signature),
                )
                for c in back
            ],
            session=session,
        )
        why = _wait_launched(registry, names, options.timeout)
    except FleetpyError as exc:
        return f"; rollback failed: {exc}"
    if why is not None:
        return f"; rolled back, but the previous version is not active either: {why}"
    return f"; rolled back {', '.join(names)} to the previous version"


# ----------------------------------------------------------------------------- restart


def restart(
    registry: OperatorRegistry,
    args: Sequence[str],
    timeout: float = 120.0,
    on_progress: Progress = lambda event: None,
    max_unavailable: int = 1,
) -> list[str]:
    """Restart launched units in place, one machine at a time: stop them there, start
    them again, wait until they are active, then the next machine (fleet had no restart).
    A global unit is restarted MAX_UNAVAILABLE machines at a time (global_rollout)."""
    units = registry.list_units()
    names = [n for n in select_units(set(units), args) if units[n].desired is DesiredState.LAUNCHED]
    if not names:
        raise DeploymentError("no launched unit matches " + " ".join(args))
    view = registry.read_view(with_text=False)
    by_machine: dict[str, list[str]] = {}
    for name in names:
        placed = view.schedule.get(name)
        if not units[name].is_global:
            by_machine.setdefault(placed[0] if placed else "", []).append(name)
    restarted: list[str] = []
    for machine, group in sorted(by_machine.items()):
        where = f"machine {machine[:8]}" if machine else "no machine (not placed)"
        on_progress(ApplyEvent("restart", tuple(group), where, len(restarted), len(names)))
        registry.change_units([UnitChange(n, DesiredState.LOADED) for n in group])
        stopped = wait_for(registry, group, WaitTarget.STOPPED, int(timeout))
        if stopped.error_message():
            raise DeploymentError(f"restart stopped on {where}: {stopped.error_message()}")
        registry.change_units([UnitChange(n, DesiredState.LAUNCHED) for n in group])
        why = _wait_launched(registry, group, timeout)
        if why is not None:
            raise DeploymentError(f"restart stopped on {where}: {why}")
        restarted.extend(group)
    for name in (n for n in names if units[n].is_global):

        def report(step: str, detail: str, done: int, total: int, name: str = name) -> None:
            on_progress(ApplyEvent(step, (name,), detail, done, total))

        try:
            restart_global(registry, name, RollOptions(max_unavailable, 0.0, timeout), report)
        except DeploymentError as exc:
            raise DeploymentError(f"restart stopped at {name}: {exc}") from None
        restarted.append(name)
    on_progress(ApplyEvent("done", (), total=len(restarted)))
    return restarted


__all__ = [
    "ApplyEvent",
    "ApplyOptions",
    "ApplyResult",
    "ChangeKind",
    "DeploymentPlan",
    "UnitDiff",
    "apply_deployment",
    "plan_deployment",
    "restart",
]
