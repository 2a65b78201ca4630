"""The audit trail's rules (fleetpy.model.audit) and its API route, as tables: the verb of a
change, the bound, the revision each entry learns, what a record written around fleetpy
looks like, and the route's answers."""

from __future__ import annotations

import json

import pytest

from fleetpy.api.audit import AuditRoute
from fleetpy.api.messages import ApiRequest
from fleetpy.client.history import UnitHistory, history_json
from fleetpy.errors import RegistryError, UnitNameError, UnknownUnitError
from fleetpy.model.audit import (
    AUDIT_KEPT,
    MAX_FIELD_CHARS,
    TRAIL_BYTES,
    AuditEntry,
    AuditTrail,
    AuditVerb,
    verb_of,
)
from fleetpy.model.codecs import MalformedRecord, RecordTooNew
from fleetpy.states import DesiredState

H1, H2 = "a" * 64, "b" * 64
INACTIVE, LOADED, LAUNCHED = DesiredState.INACTIVE, DesiredState.LOADED, DesiredState.LAUNCHED


@pytest.mark.parametrize(
    ("before", "after", "verb"),
    [
        ((None, None, None), (H1, INACTIVE, None), AuditVerb.SUBMIT),
        ((None, None, None), (H1, LOADED, None), AuditVerb.LOAD),
        ((None, None, None), (H1, LAUNCHED, "s"), AuditVerb.START),
        ((H1, INACTIVE, None), (H1, LOADED, None), AuditVerb.LOAD),
        ((H1, INACTIVE, None), (H1, LAUNCHED, None), AuditVerb.START),
        ((H1, LOADED, None), (H1, LAUNCHED, None), AuditVerb.START),
        ((H1, LAUNCHED, None), (H1, LOADED, None), AuditVerb.STOP),
        ((H1, LAUNCHED, None), (H1, INACTIVE, None), AuditVerb.UNLOAD),
        ((H1, LOADED, None), (H1, INACTIVE, None), AuditVerb.UNLOAD),
        ((H1, LAUNCHED, None), (H2, LAUNCHED, "s"), AuditVerb.REPLACE),  # apply, rollback
        ((H1, LAUNCHED, None), (H2, INACTIVE, None), AuditVerb.REPLACE),  # API's new contents
        ((H1, LAUNCHED, "s1"), (H1, LAUNCHED, "s2"), AuditVerb.RESIGN),
        ((H1, LAUNCHED, None), (H1, LAUNCHED, "s2"), AuditVerb.RESIGN),
        ((H1, LAUNCHED, "s1"), (H1, LAUNCHED, "s1"), AuditVerb.ORIGIN),  # only the commit
    ],
)
def test_the_verb_of_a_change(
    before: tuple[str | None, DesiredState | None, str | None],
    after: tuple[str, DesiredState, str | None],
    verb: AuditVerb,
) -> None:
    assert verb_of(*before, *after) is verb


def entry(verb: AuditVerb = AuditVerb.START, revision: int = 0, **fields: object) -> AuditEntry:
    base: dict[str, object] = {
        "verb": verb,
        "time": 1700000000.5,
        "user": "fleetpy-operator",
        "local_user": "ops",
        "host": "laptop",
        "hash": H1,
        "desired": LAUNCHED,
        "revision": revision,
    }
    return AuditEntry(**{**base, **fields})  # type: ignore[arg-type]


def test_appending_stamps_the_last_entry_with_the_revision_read_and_keeps_the_last_n() -> None:
    trail = AuditTrail("web.service")
    trail = trail.appended(entry(AuditVerb.SUBMIT))
    assert trail.entries[0].revision == 0  # not known until written
    trail = AuditTrail("web.service", trail.entries, revision=7).appended(entry())
    assert [e.revision for e in trail.entries] == [7, 0]
    for i in range(AUDIT_KEPT + 5):
        trail = AuditTrail("web.service", trail.entries, revision=10 + i).appended(entry())
    assert len(trail.entries) == AUDIT_KEPT
    assert [e.revision for e in trail.entries][-3:] == [10 + AUDIT_KEPT + 3, 10 + AUDIT_KEPT + 4, 0]


def test_a_trail_round_trips_and_its_last_entry_takes_the_key_revision() -> None:
    entries = (entry(AuditVerb.SUBMIT, 3, keys=("0123456789abcdef",), origin="c1"), entry())
    raw = AuditTrail("web.service", entries).to_json().encode()
    read = AuditTrail.from_json("web.service", raw, revision=9)
    assert read.entries[0] == entries[0]
    assert read.entries[1].revision == 9 and read.revision == 9
    destroyed = entry(AuditVerb.DESTROY, hash=None, desired=None)
    raw = AuditTrail("web.service", (destroyed,)).to_json().encode()
    assert AuditTrail.from_json("web.service", raw).entries[0].hash is None
    assert len(raw) < TRAIL_BYTES / AUDIT_KEPT


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'{"entries": 3}',
        b'{"entries": [3]}',
        b'{"entries": [{"verb": "reboot"}]}',
        b'{"entries": [{"verb": "start", "hash": "xyz"}]}',
        b'{"entries": [{"verb": "start", "desired": "running"}]}',
        b'{"entries": [{"verb": "start", "keys": [1]}]}',
        b'{"entries": [{"verb": "start", "revision": -1}]}',
        b'{"entries": [{"verb": "start", "revision": true}]}',
    ],
)
def test_malformed_trails_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedRecord):
        AuditTrail.from_json("web.service", raw)


def test_a_newer_trail_is_too_new_and_forged_fields_are_cut() -> None:
    with pytest.raises(RecordTooNew):
        AuditTrail.from_json("web.service", b'{"v": 99, "entries": []}')
    big = {"verb": "start", "host": "h" * 10_000, "keys": ["k"] * 100, "user": "u" * 999}
    trail = AuditTrail.from_json("web.service", json.dumps({"entries": [big] * 50}).encode())
    assert len(trail.entries) == AUDIT_KEPT
    assert len(trail.entries[0].host) == MAX_FIELD_CHARS and len(trail.entries[0].keys) == 4
    assert len(trail.to_json()) <= 2 * TRAIL_BYTES  # what a transaction may have to carry


@pytest.mark.parametrize(
    ("entries", "unit_revision", "unrecorded"),
    [
        ((), 5, True),  # a record no fleetpy change wrote (or one from before trails)
        ((entry(revision=5),), 5, False),
        ((entry(revision=4),), 5, True),  # written again, around fleetpy
        ((entry(revision=4), entry(AuditVerb.DESTROY, revision=6)), None, False),
        ((entry(revision=4),), None, True),  # deleted around fleetpy
        ((), None, False),
    ],
)
def test_a_record_written_around_fleetpy_shows(
    entries: tuple[AuditEntry, ...], unit_revision: int | None, unrecorded: bool
) -> None:
    assert AuditTrail("web.service", entries).unrecorded(unit_revision) is unrecorded


def history(name: str) -> UnitHistory:
    if name == "none.service":
        raise UnknownUnitError("unit none.service has no history: it was never submitted")
    if name == "down.service":
        raise RegistryError("etcd is unreachable")
    if "/" in name or name == "bad":
        raise UnitNameError(f"invalid unit name {name!r}")
    return UnitHistory(name, (entry(revision=4),), False, 4)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/units/web.service/history", 200),
        ("HEAD", "/units/web.service/history", 200),
        ("GET", "/units/none.service/history", 404),
        ("GET", "/units/bad/history", 404),
        ("GET", "/units/down.service/history", 503),
        ("PUT", "/units/web.service/history", 405),
        ("DELETE", "/units/web.service/history", 405),
        ("GET", "/units/web.service", 404),
        ("GET", "/units//history", 404),
        ("GET", "/units/web.service/history/x", 404),
        ("GET", "", 404),
    ],
)
def test_the_history_route(method: str, path: str, status: int) -> None:
    response = AuditRoute(history)(ApiRequest(method, path))
    assert response.status == status
    body = json.loads(response.body)
    if status == 200:
        assert body == history_json(history("web.service"))
        assert body["entries"][0]["at"] == "2023-11-14T22:13:20Z"
    else:
        assert set(body) == {"error"} and body["error"]["code"] == status


def test_roll_and_restart_steps_are_counted_in_one_entry_per_run() -> None:
    trail = AuditTrail("mon.service", (entry(AuditVerb.REPLACE, revision=0),), revision=5)
    trail = trail.stepped(entry(AuditVerb.ROLL), 2)
    trail = AuditTrail("mon.service", trail.entries, revision=6).stepped(entry(AuditVerb.ROLL), 1)
    assert [(e.verb, e.detail, e.revision) for e in trail.entries] == [
        (AuditVerb.REPLACE, "", 5),
        (AuditVerb.ROLL, "3 machines", 0),
    ]
    # Another client's steps, or another kind of step, or another version: a new entry.
    trail = trail.stepped(entry(AuditVerb.ROLL, host="other"), 1)
    trail = trail.stepped(entry(AuditVerb.RESTART, host="other"), 2)
    trail = trail.stepped(entry(AuditVerb.RESTART, host="other"), 0)  # the batch started again
    trail = trail.stepped(entry(AuditVerb.RESTART, host="other", hash=H2), 1)
    assert [(e.verb, e.host, e.detail) for e in trail.entries[2:]] == [
        (AuditVerb.ROLL, "other", "1 machine"),
        (AuditVerb.RESTART, "other", "2 machines"),
        (AuditVerb.RESTART, "other", "1 machine"),
    ]
    # Steps write the global entry, not the record: the record's revision is the replace's.
    assert not trail.unrecorded(5) and trail.unrecorded(6)
