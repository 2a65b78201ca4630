"""RescheduleOnFailure= and its companions: systemd's time spans, the policy read from
[X-Fleet], and what is refused at submit."""

from __future__ import annotations

import re

import pytest

from fleetpy.errors import FleetOptionError
from fleetpy.unitfile.reschedule import ReschedulePolicy, describe_span, parse_span
from fleetpy.unitfile.unit import FleetOptions, fleet_options, parse_unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5min", 300), ("1h30min", 5400), ("2d", 172800), ("1.5h", 5400)],
)
def test_time_spans_are_systemds(text: str, seconds: float) -> None:
    assert parse_span(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "5 parsecs", "-5s", "5min!", "1e9"])
def test_what_is_not_a_time_span(text: str) -> None:
    assert parse_span(text) is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "90s"), (300, "5min"), (3600, "1h"), (5400, "1h30min")]
)
def test_spans_are_shown_as_written(seconds: float, text: str) -> None:
    assert describe_span(seconds) == text


def options(xfleet: str) -> FleetOptions:
    text = f"[Service]\nExecStart=/bin/true\n\n[X-Fleet]\n{xfleet}\n"
    return fleet_options(parse_unit(text, "a.service"), "a.service")


@pytest.mark.parametrize(
    ("xfleet", "policy"),
    [
        ("MachineID=m1", None),
        ("RescheduleOnFailure=3", ReschedulePolicy(3, 300, 3600, 3)),
        (
            "RescheduleOnFailure=1\nRescheduleWindow=1min\nRescheduleBackoff=2h\nRescheduleLimit=5",
            ReschedulePolicy(1, 60, 7200, 5),
        ),
    ],
)
def test_reschedule_options(xfleet: str, policy: ReschedulePolicy | None) -> None:
    assert options(xfleet).reschedule == policy


@pytest.mark.parametrize(
    ("xfleet", "error"),
    [
        ("RescheduleOnFailure=0", "expected an integer from 1 to 1000"),
        ("RescheduleOnFailure=three", "expected an integer from 1 to 1000"),
        ("RescheduleOnFailure=3\nRescheduleLimit=0", "expected an integer from 1 to 100"),
        ("RescheduleOnFailure=3\nRescheduleWindow=0s", "expected a time span from 1s to 7d"),
        ("RescheduleOnFailure=3\nRescheduleBackoff=30d", "expected a time span from 1s to 7d"),
        ("RescheduleOnFailure=3\nRescheduleOnFailure=4", "is given 2 times"),
        ("RescheduleLimit=2", "RescheduleLimit= in a.service needs RescheduleOnFailure="),
        ("RescheduleOnFailure=3\nGlobal=true", "cannot be combined with RescheduleOnFailure="),
    ],
)
def test_invalid_reschedule_options(xfleet: str, error: str) -> None:
    with pytest.raises(FleetOptionError, match=re.escape(error)):
        options(xfleet)
