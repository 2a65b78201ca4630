"""Schema versions of fleetpy's records in etcd (README "Upgrades"): what this release writes,
what it reads of the previous release's records (no version: 1), and that a newer record
is neither misread nor taken for absent, by the decoder and by the agent's plan."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from fleetpy.agent_plan import DesiredUnit, plan
from fleetpy.model.codecs import SCHEMA_VERSION, MalformedRecord, RecordTooNew, overlay_from_json
from fleetpy.model.records import (
    DeploymentRecord,
    MachineRecord,
    ScheduleEntry,
    UnitRecord,
    UnitState,
)
from fleetpy.states import DesiredState
from fleetpy.unitmanager import ObservedUnit, RemoveUnit, StartUnit, StopUnit, WriteUnit

H = "a" * 64
N = "x.service"

# Each record kind: a record, how it is read back from bytes, and the JSON the release
# before schema versions wrote for it (no "v" field).
RECORDS: list[tuple[str, Any, Callable[[bytes], Any], dict[str, Any]]] = [
    (
        "unit",
        UnitRecord(N, H, DesiredState.LAUNCHED, owner="app", origin="c0ffee"),
        lambda raw: UnitRecord.from_json(N, raw),
        {"hash": H, "desired": "launched", "global": False, "owner": "app", "origin": "c0ffee"},
    ),
    (
        "schedule",
        ScheduleEntry(N, H, DesiredState.LAUNCHED, "[Service]\nExecStart=/bin/true\n"),
        lambda raw: ScheduleEntry.from_json(N, raw),
        {"hash": H, "desired": "launched", "text": "[Service]\nExecStart=/bin/true\n"},
    ),
    (
        "machine",
        MachineRecord("m1", "10.0.0.1", {"region": "north"}, "host1", 10, "host1/ab"),
        lambda raw: MachineRecord.from_json("m1", raw),
        {
            "ip": "10.0.0.1",
            "metadata": {"region": "north"},
            "hostname": "host1",
            "ttl": 10,
            "instance": "host1/ab",
        },
    ),
    (
        "state",
        UnitState(N, "m1", "loaded", "active", "running", H, "", "done"),
        lambda raw: UnitState.from_json(N, "m1", raw),
        {
            "load": "loaded",
            "active": "active",
            "sub": "running",
            "hash": H,
            "message": "",
            "job": "done",
        },
    ),
    (
        "deploy",
        DeploymentRecord("app", "c0ffee", "", "applied"),
        lambda raw: DeploymentRecord.from_json("app", raw),
        {"commit": "c0ffee", "applying": "", "message": "applied"},
    ),
]
IDS = [kind for kind, *_ in RECORDS]


@pytest.mark.parametrize(("kind", "record", "read", "previous"), RECORDS, ids=IDS)
def test_every_record_is_written_with_its_schema_version(
    kind: str, record: Any, read: Callable[[bytes], Any], previous: dict[str, Any]
) -> None:
    written = json.loads(record.to_json())
    assert written["v"] == SCHEMA_VERSION == 1
    # The previous release reads fields by name and ignores the others: only "v" is new.
    assert {k: v for k, v in written.items() if k != "v"} == previous
    assert read(record.to_json().encode()) == record


@pytest.mark.parametrize(("kind", "record", "read", "previous"), RECORDS, ids=IDS)
def test_a_record_of_the_previous_release_reads_as_version_1(
    kind: str, record: Any, read: Callable[[bytes], Any], previous: dict[str, Any]
) -> None:
    assert read(json.dumps(previous).encode()) == record


@pytest.mark.parametrize(("kind", "record", "read", "previous"), RECORDS, ids=IDS)
@pytest.mark.parametrize(
    ("version", "newer"),
    [(2, True), (99, True), (1, False), (0, False), ("2", False), (True, False), (None, False)],
)
def test_a_newer_record_is_too_new_and_a_bad_version_is_malformed(
    kind: str,
    record: Any,
    read: Callable[[bytes], Any],
    previous: dict[str, Any],
    version: Any,
    newer: bool,
) -> None:
    # A newer record may change any field's meaning: here even one this release would
    # reject ("desired": a state it does not know) must say "newer", not "malformed".
    raw = json.dumps({**previous, "v": version, "desired": "future"}).encode()
    if newer:
        with pytest.raises(RecordTooNew) as caught:
            read(raw)
        assert caught.value.version == version
        assert f"record version {version}; this one reads up to 1" in str(caught.value)
    elif version == 1 and version is not True and kind not in ("unit", "schedule"):
        assert read(raw) == record  # "desired" is not a field of theirs
    else:
        with pytest.raises(MalformedRecord) as failed:
            read(raw)
        assert not isinstance(failed.value, RecordTooNew)


@pytest.mark.parametrize(
    ("stored", "result"),
    [
        ({"rack": "r1", "gone": None}, {"rack": "r1", "gone": None}),  # as ever: no version
        ({"@v": 1, "rack": "r1"}, {"rack": "r1"}),
        ({"@v": 2, "rack": 7}, RecordTooNew),
        ({"@v": "x"}, MalformedRecord),
    ],
)
def test_operators_overlays_carry_a_version_only_from_2_on(
    stored: dict[str, Any], result: Any
) -> None:
    """An overlay is a flat map of metadata keys: its version lives under "@v", which no
    metadata key can be; this release writes none (version 1, read by the previous one)."""
    raw = json.dumps(stored).encode()
    if isinstance(result, dict):
        assert overlay_from_json("m1", raw) == result
    else:
        with pytest.raises(result):
            overlay_from_json("m1", raw)


def want(name: str, digest: str = "h1") -> DesiredUnit:
    return DesiredUnit(name, digest, DesiredState.LAUNCHED, f"text-{digest}")


def seen(name: str, digest: str = "h1") -> ObservedUnit:
    return ObservedUnit(name, digest, "loaded", "active", "running", True)


NEWER_CASES = [
    # (what, desired, observed, newer, actions)
    ("running, entry newer: not stopped", {}, {"a": seen("a")}, {"a"}, []),
    (
        "running, newer entry beside a readable one",
        {"b": want("b")},
        {"a": seen("a")},
        {"a"},
        [
            WriteUnit("b", "h1", "text-h1"),
            StartUnit("b"),
        ],
    ),
    ("not here yet, entry newer: not started", {}, {}, {"a"}, []),
    (
        "running, readable entry: as before",
        {},
        {"a": seen("a")},
        set(),
        [
            StopUnit("a"),
            RemoveUnit("a"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("what", "desired", "observed", "newer", "actions"),
    NEWER_CASES,
    ids=[case[0] for case in NEWER_CASES],
)
def test_the_agent_leaves_a_unit_with_a_newer_entry_as_it_is(
    what: str,
    desired: dict[str, DesiredUnit],
    observed: dict[str, ObservedUnit],
    newer: set[str],
    actions: list[Any],
) -> None:
    assert plan(desired, observed, None, newer).actions == actions
