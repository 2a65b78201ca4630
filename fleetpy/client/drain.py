"""cordon, uncordon, drain and maintenance windows: the operator's record written, and a
drain's progress as the engine makes it (fleetpy.drain has the rules).

The CLI only writes the record and watches: the engine moves the units. A killed
`fleetpy drain` leaves the record, and the engine goes on; running it again waits anew.
"""

from __future__ import annotations

import getpass
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..drain import CANNOT_LEAVE, moving
from ..errors import DrainError, FleetpyError
from ..model.cordons import CordonMode, CordonRecord
from ..registry.roles import OperatorRegistry
from ..states import ActiveState

MAX_WINDOW = 7 * 24 * 3600  # a week: longer is not maintenance, it is a lost machine
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")
POLL_SECONDS = 1.0


def parse_window(text: str, option: str = "--window") -> int:
    """A maintenance window (given with OPTION): seconds, or a duration such as 90s, 15m,
    1h30m."""
    found = _DURATION.fullmatch(text.strip())
    if not text.strip() or found is None:
        raise DrainError(f"{option} {text!r}: expected a duration such as 900, 15m or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in found.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not 1 <= total <= MAX_WINDOW:
        raise DrainError(f"{option} {text!r}: expected 1 s to {MAX_WINDOW // 86400} days")
    return total


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


def resolve_machine(registry: OperatorRegistry, what: str, *, alive: bool) -> str:
    """A machine by id or unique id prefix: one that is registered, or (unless ALIVE)
    one that units are still scheduled on (its agent is away)."""
    listing = registry.read_listing(placed=True, machines=True)
    known = set(listing.machines) | (set() if alive else set(listing.placed.values()))
    if what in known:
        return what
    matches = sorted(m for m in known if what and m.startswith(what))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DrainError(f"{len(matches)} machines have an id starting {what!r}: give more of it")
    hosting = sorted(m for m in set(listing.placed.values()) if m.startswith(what))
    if alive and hosting:
        raise DrainError(
            f"machine {hosting[0]} is not reporting: its units move when the engine judges "
            "it lost (or at once with `fleetpy force-reschedule`); a drain moves units off a "
            "machine that is alive"
        )
    raise DrainError(f"no machine with an id starting {what!r} is known to the cluster")


def cordon(registry: OperatorRegistry, what: str) -> str:
    """Cordon a machine (a drain or maintenance window on it ends): its id."""
    machine = resolve_machine(registry, what, alive=False)
    registry.put_cordon(CordonRecord(machine, by=who(), at=time.time()))
    return machine


def uncordon(registry: OperatorRegistry, what: str) -> tuple[str, bool]:
    """Uncordon a machine (ends a drain or maintenance window): its id, and whether it
    was cordoned."""
    cordons = registry.cordons()
    machine = what if what in cordons else None
    if machine is None:
        matches = sorted(m for m in cordons if m.startswith(what))
        if len(matches) > 1:
            raise DrainError(f"{len(matches)} cordoned machines have an id starting {what!r}")
        machine = matches[0] if matches else resolve_machine(registry, what, alive=False)
    return machine, registry.remove_cordon(machine)


def start_drain(
    registry: OperatorRegistry, what: str, max_unavailable: int, include_global: bool = False
) -> str:
    """Cordon a live machine and have the engine move its units (and its agent stop its
    global units, with INCLUDE_GLOBAL): its id."""
    if max_unavailable < 1:
        raise DrainError(f"--max-unavailable {max_unavailable}: expected 1 or more")
    machine = resolve_machine(registry, what, alive=True)
    record = CordonRecord(
        machine, CordonMode.DRAINING, max_unavailable, include_global, by=who(), at=time.time()
    )
    registry.put_cordon(record)
    return machine


def start_maintenance(registry: OperatorRegistry, what: str, window: int) -> CordonRecord:
    """Cordon a live machine for a maintenance window: while the window lasts, its units
    stay on it even when it stops reporting (a reboot), and nothing new goes there."""
    record = maintenance(resolve_machine(registry, what, alive=True), window)
    registry.put_cordon(record, window=window)
    return record


def maintenance(machine: str, window: int) -> CordonRecord:
    """The cordon record of MACHINE's maintenance window of WINDOW seconds, from now."""
    now = time.time()
    return CordonRecord(machine, maintenance_until=now + window, by=who(), at=now)


@dataclass(frozen=True)
class DrainProgress:
    machine: str
    remaining: tuple[str, ...] = ()  # units still on the machine, to be moved
    moving: dict[str, str] = field(default_factory=dict)  # unit -> where it is on its way to
    stuck: dict[str, str] = field(default_factory=dict)  # unit -> why it cannot leave
    cordoned: bool = True  # False: the cordon is gone (uncordoned meanwhile)

    @property
    def done(self) -> bool:
        return not self.remaining and not self.moving

    def summary(self) -> str:
        parts = [
            f"{len(self.remaining)} to move",
            f"{len(self.moving)} on their way",
            f"{len(self.stuck)} cannot leave",
        ]
        return f"machine {self.machine}: " + ", ".join(parts)


def drain_progress(registry: OperatorRegistry, machine: str) -> DrainProgress:
    """Where a drain stands, from what the engine stored (schedule and reasons)."""
    listing = registry.read_listing(placed=True, reasons=True)
    reasons = listing.reasons
    stuck_prefix = CANNOT_LEAVE + machine + ":"
    remaining, stuck = [], {}
    for unit, on in sorted(listing.placed.items()):
        if on != machine:
            continue
        reason = reasons.get(unit, "")
        if reason.startswith(stuck_prefix):
            stuck[unit] = reason[len(stuck_prefix) :].strip()
        else:
            remaining.append(unit)
    ways = {}
    for unit, reason in sorted(reasons.items()):
        way = moving(reason)
        if way is not None and way[0] == machine and listing.placed.get(unit) == way[1]:
            ways[unit] = way[1]
    cordon_record = registry.cordons().get(machine)
    return DrainProgress(machine, tuple(remaining), ways, stuck, cordon_record is not None)


def wait_drain(
    registry: OperatorRegistry,
    machine: str,
    timeout: float,
    report: Callable[[DrainProgress], None],
    stop: threading.Event | None = None,
) -> DrainProgress:
    """Wait until nothing is left to move off MACHINE (units that cannot leave stay),
    telling REPORT each change; DrainError on timeout (naming what is left) or when the
    cordon goes meanwhile. etcd away for a while (a restart) is waited out."""
    deadline = time.monotonic() + timeout
    stop = stop or threading.Event()
    last: DrainProgress | None = None
    error: str | None = None
    while True:
        try:
            progress = drain_progress(registry, machine)
            error = None
        except FleetpyError as exc:  # etcd restarting: the engine goes on, so do we
            error = str(exc)
        else:
            if progress != last:
                report(progress)
                last = progress
            if not progress.cordoned:
                raise DrainError(f"machine {machine} was uncordoned: the drain stopped")
            if progress.done:
                return progress
        if time.monotonic() >= deadline:
            raise DrainError(_timed_out(registry, machine, timeout, last, error))
        if stop.wait(POLL_SECONDS):
            raise DrainError(f"drain of machine {machine} interrupted")


def _timed_out(
    registry: OperatorRegistry,
    machine: str,
    timeout: float,
    last: DrainProgress | None,
    error: str | None,
) -> str:
    head = f"drain of machine {machine} not finished after {timeout:g}s"
    tail = "; the engine goes on (run `fleetpy drain` again to wait, `fleetpy uncordon` to stop)"
    if last is None:
        return f"{head}: {error or 'no answer from etcd'}{tail}"
    left = []
    if last.remaining:
        left.append(f"{len(last.remaining)} still there ({_names(last.remaining)})")
    if last.moving:
        states = {}
        try:
            states = registry.unit_states((to, unit) for unit, to in last.moving.items())
        except FleetpyError:
            pass
        shown = []
        for unit, to in sorted(last.moving.items()):
            state = states.get((to, unit))
            seen = state.active if state is not None else "no state reported"
            shown.append(f"{unit} on {to}: {seen}")
            if state is not None and state.active == ActiveState.FAILED:
                shown[-1] += " (it failed there)"
        left.append(f"{len(last.moving)} not active where they went ({'; '.join(shown[:5])})")
    return f"{head}: " + ", ".join(left) + tail


def _names(units: tuple[str, ...], limit: int = 5) -> str:
    shown = ", ".join(units[:limit])
    return shown + (f" and {len(units) - limit} more" if len(units) > limit else "")
