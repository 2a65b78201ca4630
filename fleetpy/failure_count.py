"""An agent's count of its units' failures, for RescheduleOnFailure= (fleetpy.failures has
what the engine makes of them).

A failure is what systemd says: a unit entering `failed`, or being restarted by its own
Restart= (sub-state auto-restart: systemd's NRestarts grows), or any other source that
calls `count_failure` (a health check that restarted an unhealthy container). Failures
are counted per unit and contents on this machine's monotonic clock; when a unit that
opts in reaches its threshold within its window, a FailureRecord is queued for etcd and
the count starts again. Units that do not opt in are not counted. The count lives in
the agent's memory: an agent restart starts it afresh (its units are adopted, not
failed).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Set

from .errors import FleetpyError
from .log import log_event
from .model.failures import FailureRecord
from .model.records import ScheduleEntry
from .states import ActiveState
from .unitfile.reschedule import ReschedulePolicy
from .unitfile.unit import fleet_options, parse_unit

# systemd's sub-states of a service waiting to be restarted by Restart= (v254 added the
# second, after the first).
AUTO_RESTART = frozenset({"auto-restart", "auto-restart-queued"})
MAX_CAUSE = 200  # characters of systemd's message kept in the record


class FailureCounter:
    """Counts failures of this machine's units (thread-safe: systemd's signals arrive on
    the unit manager's thread, health checks on theirs)."""

    def __init__(
        self,
        machine: str,
        entry_of: Callable[[str], ScheduleEntry | None],
        notify: Callable[[], None],
        write: Callable[[FailureRecord], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """ENTRY_OF: the schedule entry placed here for a unit (None: not placed here, as
        for global units, which never move); NOTIFY: called when a record is queued, for
        the agent's loop to `flush()` it with WRITE."""
        self.machine = machine
        self._entry_of = entry_of
        self._notify = notify
        self._write = write
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, str]] = {}  # unit -> (active, sub) last seen
        self._times: dict[tuple[str, str], deque[float]] = {}  # (unit, hash) -> failures
        self._policies: dict[tuple[str, str], ReschedulePolicy | None] = {}
        self._pending: dict[str, FailureRecord] = {}  # unit -> record not yet written

    def observe(self, name: str, active: str, sub: str, job: str = "", message: str = "") -> None:
        """A state of unit NAME as systemd reported it; a new failure in it is counted.
        The first state seen of a unit this agent did not start (JOB "": adopted) is
        only remembered."""
        with self._lock:
            previous = self._last.get(name)
            self._last[name] = (active, sub)
        if previous is None:
            if not job:
                return
            previous = ("", "")
        # systemd passes through failed (v252) or failed-before-auto-restart (v254) on its
        # way to auto-restart, and a unit out of restarts goes auto-restart -> failed: each
        # is one failure, counted where it enters the first of the two states.
        restarted = (
            sub in AUTO_RESTART
            and previous[1] not in AUTO_RESTART
            and previous[0] != ActiveState.FAILED
        )
        failed = (
            active == ActiveState.FAILED
            and previous[0] != ActiveState.FAILED
            and previous[1] not in AUTO_RESTART
        )
        if restarted:
            self.count_failure(name, "exited; its Restart= restarted it")
        elif failed:
            self.count_failure(name, message or f"failed ({sub})")

    def count_failure(self, name: str, cause: str) -> bool:
        """One failure of unit NAME on this machine, from any source (CAUSE: for people).
        True when it crossed the unit's RescheduleOnFailure= threshold within its window
        (a record for the engine is queued); False when it did not, or the unit does not
        opt in (or is not placed here)."""
        entry = self._entry_of(name)
        if entry is None:
            return False
        policy = self._policy(entry)
        if policy is None:
            return False
        now = self._clock()
        with self._lock:
            times = self._times.setdefault((name, entry.hash), deque())
            while times and times[0] <= now - policy.window:
                times.popleft()
            times.append(now)
            if len(times) < policy.failures:
                return False
            record = FailureRecord(
                name, self.machine, len(times), policy.window, cause[:MAX_CAUSE], entry.hash
            )
            times.clear()
            self._pending[name] = record
        log_event(
            "unit_failed_repeatedly",
            machine=self.machine,
            unit=name,
            failures=record.failures,
            window=f"{policy.window:g}s",
            cause=record.cause,
        )
        self._notify()
        return True

    def keep(self, names: Set[str]) -> None:
        """Forget the counts of units no longer here."""
        with self._lock:
            for name in [n for n in self._last if n not in names]:
                del self._last[name]
            self._times = {key: t for key, t in self._times.items() if key[0] in names}
            self._policies = {key: p for key, p in self._policies.items() if key[0] in names}

    def flush(self) -> None:
        """Write the queued records (an error propagates; they stay queued)."""
        with self._lock:
            pending = list(self._pending.values())
        for record in pending:
            self._write(record)
            with self._lock:
                if self._pending.get(record.unit) is record:
                    del self._pending[record.unit]

    def _policy(self, entry: ScheduleEntry) -> ReschedulePolicy | None:
        key = (entry.name, entry.hash)
        if key not in self._policies:
            try:
                options = fleet_options(parse_unit(entry.text, entry.name), entry.name)
                self._policies[key] = options.reschedule
            except FleetpyError:
                self._policies[key] = None
        return self._policies[key]
