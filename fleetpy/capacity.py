"""What an agent reports of its machine's resources in its machine record: the machine's
CPUs and memory (its capacity, which the engine places reservations against), and what
systemd accounts as used by the units fleetpy placed there (for people: `list-machines`,
the API, the dashboard). The usage is measured as often as the agent renews its lease
(on a thread of its own), and written again only when it moved past a threshold
(fleetpy.resources): a busy cluster does not rewrite every machine's record a second."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .resources import MILLI, Resources, moved_past_threshold


@runtime_checkable
class AccountsUsage(Protocol):
    """A unit manager that can say what its units use (systemd's accounting)."""

    def usage(self) -> tuple[int, int] | None:
        """Bytes of memory its units use now, and the CPU time (ns) they used in all;
        None when systemd accounts neither (no memory or cpu controller there)."""
        ...


UNACCOUNTED = 2**64 - 1  # systemd's figure for what it does not account


def services_usage(
    names: list[str], get: Callable[[str, str], int | None]
) -> tuple[int, int] | None:
    """The sums of MemoryCurrent and CPUUsageNSec over the services among NAMES, as
    GET(name, property) reads them (None: the unit is gone); None if systemd accounted
    neither figure of any of them (a host whose cgroups lack the controllers: "not
    reported" rather than a usage of 0)."""
    memory = cpu = 0
    read = accounted = False
    for name in names:
        if not name.endswith(".service"):
            continue  # sockets, timers, paths: no processes of their own
        figures = [get(name, "MemoryCurrent"), get(name, "CPUUsageNSec")]
        known = [value if value is not None and value != UNACCOUNTED else None for value in figures]
        read = read or any(value is not None for value in figures)
        accounted = accounted or any(value is not None for value in known)
        memory += known[0] or 0
        cpu += known[1] or 0
    return None if read and not accounted else (memory, cpu)


def host_capacity() -> Resources:
    """This machine's CPUs (those this process may run on) and physical memory."""
    cpus = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Resources(memory, cpus * MILLI)


class CapacityReport:
    """The capacity an agent reports and the usage it last wrote."""

    def __init__(
        self,
        manager: object,
        capacity: Resources | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """MANAGER: the agent's unit manager (its usage is reported if it accounts for
        it); CAPACITY: what the machine offers (None: measured here)."""
        self.capacity = capacity if capacity is not None else host_capacity()
        self._manager = manager if isinstance(manager, AccountsUsage) else None
        self._clock = clock
        self._cpu: tuple[int, float] | None = None  # CPU time at the last measure, and when
        self._lock = threading.Lock()
        self.reported: Resources | None = None  # the usage last written

    def measure(self) -> Resources | None:
        """The units' usage now: memory, and CPUs as the CPU time used since the last
        measure over the time between (0 the first time). None: not accounted."""
        usage = None if self._manager is None else self._manager.usage()
        if usage is None:
            return None
        memory, cpu_ns = usage
        now = self._clock()
        with self._lock:
            last, self._cpu = self._cpu, (cpu_ns, now)
        cpu = 0
        if last is not None and now > last[1]:
            # A unit restarted lost its count: the sum may go down, read that as idle.
            cpu = int(max(0, cpu_ns - last[0]) * MILLI / ((now - last[1]) * 1e9))
        return Resources(max(memory, 0), cpu)

    def due(self) -> Resources | None:
        """The usage to write now, or None while it stays near the one last written."""
        used = self.measure()
        if used is None or not moved_past_threshold(self.capacity, self.reported, used):
            return None
        return used
