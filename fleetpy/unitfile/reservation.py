"""What a unit reserves on the machine it is placed on (fleetpy.resources has the
arithmetic), read from systemd's own resource-control keys where the unit has them:

  [Service] MemoryHigh=SIZE   memory (systemd throttles above it: the unit's working size)
  [Service] MemoryMax=SIZE    memory, when there is no MemoryHigh=
  [Service] CPUQuota=P%       P/100 CPUs
  [Container] Memory=SIZE     memory (docker's b/k/m/g), CPUs=N  N CPUs

or from fleetpy's own, which win over those when given (a unit with no limit, or one
that should reserve other than it limits):

  [X-Fleet] ReserveMemory=SIZE   ReserveCPU=N (a number of CPUs, `0.5`, `2`)

CPUWeight= (and CPUShares=) is a share relative to the other units on the machine, not an
amount: it reserves nothing. A percentage MemoryMax= or `infinity` is relative to each
machine, so it reserves nothing either (ReserveMemory= says how much). A malformed size
in any of these keys is refused at submit.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import FleetOptionError
from ..resources import Resources, parse_cpus, parse_quota, parse_size

OPTIONS = ("ReserveMemory", "ReserveCPU")
CONTAINER = "Container"

Values = Callable[[str, str], list[str]]  # (section, key) -> the key's values, in order


def _last(values: Values, section: str, key: str) -> str | None:
    # systemd: a later assignment of a resource-control key overrides an earlier one;
    # an empty one resets it.
    found = values(section, key)
    return found[-1] if found and found[-1].strip() else None


def _systemd_memory(text: str) -> int | None:
    if text.strip() == "infinity" or text.strip().endswith("%"):
        return 0  # relative to each machine: nothing fixed to reserve
    return parse_size(text)


_SIZE = "a size such as 512M or 2G"
_CPUS = "a number of CPUs such as 0.5 or 2"
# (section or None for [X-Fleet], key, figure, parser, what it expects), in the order
# they apply: a later one that says something wins over an earlier one.
_KEYS: tuple[tuple[str | None, str, str, Callable[[str], int | None], str], ...] = (
    ("Service", "MemoryMax", "memory", _systemd_memory, f"{_SIZE}, a percentage or infinity"),
    ("Service", "MemoryHigh", "memory", _systemd_memory, f"{_SIZE}, a percentage or infinity"),
    ("Service", "CPUQuota", "cpu", parse_quota, "a percentage such as 50% or 200%"),
    (CONTAINER, "Memory", "memory", parse_size, "a size such as 512m or 2g"),
    (CONTAINER, "CPUs", "cpu", parse_cpus, _CPUS),
    (None, "ReserveMemory", "memory", parse_size, _SIZE),
    (None, "ReserveCPU", "cpu", parse_cpus, _CPUS),
)


def reservation(
    values: Values, single: Callable[[str], str | None], name: str, *, containers: tuple[str, ...]
) -> Resources:
    """The reservation of unit NAME: VALUES reads its sections, SINGLE its single-valued
    [X-Fleet] options, CONTAINERS the sections its [Container] keys may be in (as
    written, or as fleetpy expanded it). FleetOptionError for a malformed value."""
    found = {"memory": 0, "cpu": 0}
    for section, key, figure, parse, expected in _KEYS:
        sections = containers if section == CONTAINER else (section,)
        for where in sections:
            text = single(key) if where is None else _last(values, where, key)
            if text is None:
                continue
            amount = parse(text)
            if amount is None:
                shown = "X-Fleet" if where is None else section
                raise FleetOptionError(
                    f"invalid [{shown}] {key}={text} in {name} (expected {expected})"
                )
            found[figure] = amount or found[figure]
    return Resources(found["memory"], found["cpu"])
