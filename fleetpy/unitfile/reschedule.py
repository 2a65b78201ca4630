"""[X-Fleet] options of rescheduling on repeated failure (opt-in; fleet itself never moved
a failed unit):

  RescheduleOnFailure=N     move the unit off a machine where it failed N times ...
  RescheduleWindow=SPAN     ... within SPAN (default 5min), counted by that machine's agent
  RescheduleBackoff=SPAN    the machine is avoided for the unit that long (default 1h)
  RescheduleLimit=K         at most K such moves per backoff period (default 3): after
                            that the unit stays where it is and says so

SPAN is systemd's time span (`90`, `90s`, `5min`, `1h 30min`). The other three options
need RescheduleOnFailure=.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FleetOptionError

OPTIONS = ("RescheduleOnFailure", "RescheduleWindow", "RescheduleBackoff", "RescheduleLimit")

DEFAULT_WINDOW = 300.0
DEFAULT_BACKOFF = 3600.0
DEFAULT_LIMIT = 3
MAX_FAILURES = 1000
MAX_LIMIT = 100
MAX_SPAN = 7 * 86400.0  # a week: longer is a typo, not a policy

# systemd's time units (systemd.time(7)), in seconds.
_UNITS: dict[str, float] = {
    "": 1,
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
_PART = re.compile(r"\s*([0-9]{1,6}(?:\.[0-9]{1,3})?)\s*([a-z]*)")


@dataclass(frozen=True)
class ReschedulePolicy:
    """When a unit's failures on one machine move it elsewhere (seconds)."""

    failures: int
    window: float = DEFAULT_WINDOW
    backoff: float = DEFAULT_BACKOFF
    limit: int = DEFAULT_LIMIT


def parse_span(text: str) -> float | None:
    """Seconds of a systemd time span ("90", "5min", "1h 30min"); None if not one."""
    total, position = 0.0, 0
    if not text.strip():
        return None
    while position < len(text):
        match = _PART.match(text, position)
        if match is None or match.end() == position or match.group(2) not in _UNITS:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return total


def reschedule_policy(single: Callable[[str], str | None], name: str) -> ReschedulePolicy | None:
    """The policy of unit NAME from its single-valued [X-Fleet] options (`single(key)`:
    the value, or None when absent); FleetOptionError for an invalid one."""
    count = single("RescheduleOnFailure")
    if count is None:
        others = [key for key in OPTIONS[1:] if single(key) is not None]
        if others:
            raise FleetOptionError(
                f"[X-Fleet] {others[0]}= in {name} needs RescheduleOnFailure= (how many "
                "failures within the window move the unit)"
            )
        return None
    failures = _integer(count, "RescheduleOnFailure", name, MAX_FAILURES)
    limit_text = single("RescheduleLimit")
    limit = (
        DEFAULT_LIMIT
        if limit_text is None
        else _integer(limit_text, "RescheduleLimit", name, MAX_LIMIT)
    )
    return ReschedulePolicy(
        failures,
        _span(single("RescheduleWindow"), "RescheduleWindow", name, DEFAULT_WINDOW),
        _span(single("RescheduleBackoff"), "RescheduleBackoff", name, DEFAULT_BACKOFF),
        limit,
    )


def _shown(text: str) -> str:
    return text if len(text) <= 20 else text[:20] + "..."


def _integer(text: str, key: str, name: str, most: int) -> int:
    if not re.fullmatch(r"[0-9]{1,7}", text) or not 1 <= int(text) <= most:
        raise FleetOptionError(
            f"invalid [X-Fleet] {key}={_shown(text)} in {name} (expected an integer from 1 to {most})"
        )
    return int(text)


def _span(text: str | None, key: str, name: str, default: float) -> float:
    if text is None:
        return default
    seconds = parse_span(text)
    if seconds is None or not 1 <= seconds <= MAX_SPAN:
        raise FleetOptionError(
            f"invalid [X-Fleet] {key}={_shown(text)} in {name} (expected a time span from 1s "
            "to 7d, e.g. 90s, 5min, 1h)"
        )
    return seconds


def describe_span(seconds: float) -> str:
    """A span as people write it: 90s, 5min, 1h30min."""
    whole = int(seconds)
    if whole < 60 or whole % 60:
        return f"{seconds:g}s"
    hours, minutes = divmod(whole // 60, 60)
    if not hours:
        return f"{minutes}min"
    return f"{hours}h{minutes}min" if minutes else f"{hours}h"
