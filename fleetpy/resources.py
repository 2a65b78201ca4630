"""Resource arithmetic: CPUs and memory as machines offer them and units reserve them.

A `Resources` is a pair of integers (bytes of memory, thousandths of a CPU), so sums and
comparisons are exact and plans do not depend on float rounding. The scheduler keeps, per
machine, its capacity minus the reservations of the units placed there; a unit goes only
where its reservation fits in that. What systemd accounts as used (MemoryCurrent=,
CPUUsageNSec=) is reported for people and never placed by: a reservation is a promise,
usage a moment.

Sizes are written as systemd writes them (`512M`, `2G`, bytes; base 1024) and CPUs as a
number (`0.5`, `2`) or systemd's CPUQuota= percentage (`150%`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

MILLI = 1000  # a CPU, in the unit CPUs are counted in

# systemd's size suffixes (parse_size with base 1024): K, M, G, T, P, E.
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE = re.compile(r"([0-9]{1,15})(?:\.([0-9]{1,3}))?\s*([BKMGTP]?)", re.IGNORECASE)
_CPUS = re.compile(r"([0-9]{1,4})(?:\.([0-9]{1,3}))?")
_PERCENT = re.compile(r"([0-9]{1,6})(?:\.([0-9]{1,2}))?%")
MAX_MEMORY = 1024**5  # a PiB: more is a typo, not a machine
MAX_CPU = 10_000 * MILLI


@dataclass(frozen=True, order=True)
class Resources:
    """Memory in bytes and CPUs in thousandths; zero where nothing is said."""

    memory: int = 0
    cpu: int = 0

    def __bool__(self) -> bool:
        return bool(self.memory or self.cpu)

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.memory + other.memory, self.cpu + other.cpu)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.memory - other.memory, self.cpu - other.cpu)

    def fits_in(self, free: Resources) -> bool:
        """Whether this reservation fits in FREE (each figure that is asked for)."""
        return (not self.memory or self.memory <= free.memory) and (
            not self.cpu or self.cpu <= free.cpu
        )

    def to_data(self) -> dict[str, int]:
        return {"memory": self.memory, "cpu": self.cpu}

    @classmethod
    def from_data(cls, data: object) -> Resources:
        """From to_data()'s mapping; ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a mapping")
        memory, cpu = data.get("memory", 0), data.get("cpu", 0)
        for value in (memory, cpu):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("memory and cpu must be non-negative integers")
        return cls(memory, cpu)


NOTHING = Resources()


class Reserving(Protocol):
    """A unit's options as far as reservations go (fleetpy.unitfile.unit.FleetOptions)."""

    @property
    def reserves(self) -> Resources: ...

    def matches_metadata(self, metadata: Mapping[str, str]) -> bool: ...


def global_reservations(
    globals_running: Iterable[Reserving], machines: Mapping[str, Mapping[str, str]]
) -> dict[str, Resources]:
    """Machine (by its metadata) -> what the global units that run there reserve: a
    global unit's limits hold on every machine it matches."""
    reserving = [options for options in globals_running if options.reserves]
    reserved: dict[str, Resources] = {}
    for machine, metadata in machines.items() if reserving else ():
        for options in reserving:
            if options.matches_metadata(metadata):
                reserved[machine] = reserved.get(machine, NOTHING) + options.reserves
    return reserved


def parse_size(text: str) -> int | None:
    """Bytes of a systemd size (`512M`, `2G`, `1.5G`, `1048576`); None if not one."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    whole, fraction, unit = match.groups()
    scale = _SIZE_UNITS[unit.upper()]
    value = int(whole) * scale + (int(fraction) * scale // 10 ** len(fraction) if fraction else 0)
    return value if 0 < value <= MAX_MEMORY else None


def parse_cpus(text: str) -> int | None:
    """Thousandths of a CPU from a number of CPUs (`0.5`, `2`); None if not one."""
    return _fixed(_CPUS, text, 3, 1)


def parse_quota(text: str) -> int | None:
    """Thousandths of a CPU from systemd's CPUQuota= (`150%` is 1.5 CPUs); None if not one."""
    return _fixed(_PERCENT, text, 2, 10)  # hundredths of a percent, tenths of those


def _fixed(pattern: re.Pattern[str], text: str, places: int, divisor: int) -> int | None:
    """A decimal with at most PLACES decimals as an integer of that many, over DIVISOR."""
    match = pattern.fullmatch(text.strip())
    if match is None:
        return None
    whole, fraction = match.groups()
    value = (int(whole) * 10**places + int((fraction or "").ljust(places, "0"))) // divisor
    return value if 0 < value <= MAX_CPU else None


def format_memory(size: int) -> str:
    """`2 GiB`, `1.5 GiB`, `512 MiB`: the largest unit in which it is at least 1."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{_trimmed(size / scale)} {unit}"
    return f"{size} B"


def format_cpus(cpu: int) -> str:
    """`1 CPU`, `1.5 CPUs`, `0.25 CPUs`."""
    text = _trimmed(cpu / MILLI)
    return f"{text} CPU" if text == "1" else f"{text} CPUs"


def _trimmed(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def describe(resources: Resources) -> str:
    """`2 GiB and 1.5 CPUs`, `2 GiB`; `nothing` for an empty reservation."""
    parts = []
    if resources.memory:
        parts.append(format_memory(resources.memory))
    if resources.cpu:
        parts.append(format_cpus(resources.cpu))
    return " and ".join(parts) or "nothing"


# A machine's usage is written again only when it moved past this much of its capacity
# (or this floor), so a busy cluster does not rewrite 1,000 machine records a second.
REPORT_FRACTION = 0.05
REPORT_FLOOR = Resources(memory=64 * 1024**2, cpu=100)


def moved_past_threshold(
    capacity: Resources, reported: Resources | None, current: Resources
) -> bool:
    """Whether usage CURRENT differs from the REPORTED one enough to write it again."""
    if reported is None:
        return True
    memory_step = max(REPORT_FLOOR.memory, int(capacity.memory * REPORT_FRACTION))
    cpu_step = max(REPORT_FLOOR.cpu, int(capacity.cpu * REPORT_FRACTION))
    return (
        abs(current.memory - reported.memory) >= memory_step
        or abs(current.cpu - reported.cpu) >= cpu_step
    )


def shortfall(
    reservation: Resources, free: Mapping[str, Resources], capacity_of: Mapping[str, Resources]
) -> str:
    """Why none of the candidate machines takes RESERVATION, from their FREE resources
    and their CAPACITY (machines that report none are in neither): "no machine has 2 GiB
    free; largest free 1.5 GiB on 3f2a…"."""
    if not free:
        return (
            f"it reserves {describe(reservation)}, and no eligible machine reports its "
            "capacity (agents before resource reports take only units without reservations)"
        )
    missing = []
    for what, amount, fmt in (
        ("memory", reservation.memory, format_memory),
        ("cpu", reservation.cpu, format_cpus),
    ):
        if not amount:
            continue
        best = max(free, key=lambda machine: (getattr(free[machine], what), _neg(machine)))
        largest = getattr(free[best], what)
        if largest >= amount:
            continue
        biggest = max(getattr(capacity_of[machine], what) for machine in capacity_of)
        if amount > biggest:
            missing.append(
                f"it reserves {fmt(amount)}, more than any machine has (largest {fmt(biggest)})"
            )
        else:
            missing.append(
                f"no machine has {fmt(amount)} free; largest free {fmt(max(largest, 0))} "
                f"on {best[:8]}…"
            )
    if not missing:  # each figure fits somewhere, never both on one machine
        return f"no machine has {describe(reservation)} free at once"
    return "; ".join(missing)


def _neg(machine: str) -> tuple[int, ...]:
    """Sorts machine ids backwards, so max() picks the lowest id among equals."""
    return tuple(-ord(char) for char in machine)
