"""fleet's API v1 handlers as pure functions of (view, request): table tests, no etcd."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from fleetpy.api.fleetv1 import PAGE_SIZE, BadRequest, FleetV1, decode_token, options_of, text_of
from fleetpy.api.messages import ApiRequest
from fleetpy.client.operations import PutOutcome, PutResult
from fleetpy.errors import (
    FleetOptionError,
    MetadataError,
    RegistryError,
    StateError,
    UnknownUnitError,
)
from fleetpy.metadata import MetadataChange
from fleetpy.model.records import ClusterView, MachineRecord, ScheduleEntry, UnitRecord, UnitState
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import content_hash

TEXT = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep 1000\n"
HASH = content_hash(TEXT)
OPTIONS = [
    {"section": "Unit", "name": "Description", "value": "Hello"},
    {"section": "Service", "name": "ExecStart", "value": "/bin/sleep 1000"},
]


def make_view(units: int = 2) -> ClusterView:
    names = [f"u{i:05d}.service" for i in range(units)]
    records = {
        n: UnitRecord(n, HASH, DesiredState.LAUNCHED, owner="web", origin="abc123") for n in names
    }
    entry = ScheduleEntry(names[0], HASH, DesiredState.LAUNCHED, "")
    return ClusterView(
        revision=7,
        units=records,
        machines={"m1": MachineRecord("m1", "10.0.0.1", {"rack": "r1"})},
        schedule={names[0]: ("m1", entry)},
        reasons={names[1]: "no machine matches MachineMetadata=rack=r9"} if units > 1 else {},
        states={names[0]: {"m1": UnitState(names[0], "m1", "loaded", "active", "running", HASH)}},
    )


class Source:
    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def current(self) -> ClusterView:
        return self.view

    def text(self, content_hash: str) -> str | None:
        return TEXT if content_hash == HASH else None

    def wait_until(self, done: Callable[[ClusterView], bool], timeout: float) -> bool:
        return True


class Writer:
    def __init__(self, error: Exception | None = None, outcome: PutOutcome = PutOutcome.CREATED):
        self.error = error
        self.outcome = outcome
        self.calls: list[tuple[Any, ...]] = []

    def put_unit(self, name: str, text: str | None, desired: DesiredState | None) -> PutResult:
        self.calls.append((name, text, desired))
        if self.error is not None:
            raise self.error
        return PutResult(self.outcome, 0)

    def destroy_unit(self, name: str) -> bool:
        self.calls.append((name,))
        return name in ("u00000.service",)

    def change_metadata(self, changes: Sequence[MetadataChange]) -> int:
        self.calls.append(tuple(changes))
        if self.error is not None:
            raise self.error
        return 8


def call(handler: FleetV1, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    query = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in kw.pop("query", {}).items()}
    request = ApiRequest(method, path, query, raw, kw.pop("content_type", "application/json"), **kw)
    response = handler(request)
    return response.status, json.loads(response.body) if response.body else None


def handler(units: int = 2, writer: Writer | None = None) -> FleetV1:
    return FleetV1(Source(make_view(units)), writer or Writer())


def test_units_in_fleets_shape_with_fleetpys_extras() -> None:
    status, body = call(handler(), "GET", "/units")
    assert status == 200 and "nextPageToken" not in body
    first, second = body["units"]
    assert first == {
        "name": "u00000.service",
        "options": OPTIONS,
        "desiredState": "launched",
        "currentState": "launched",
        "machineID": "m1",
        "fleetpy": {"hash": HASH, "global": False, "owner": "web", "commit": "abc123"},
    }
    assert second["currentState"] == "inactive" and "machineID" not in second
    assert second["fleetpy"]["reason"] == "no machine matches MachineMetadata=rack=r9"


def test_pages_follow_next_page_token_to_the_end() -> None:
    h = handler(units=PAGE_SIZE * 2 + 5)
    names: list[str] = []
    token = None
    pages = 0
    while True:
        status, body = call(h, "GET", "/units", query={"nextPageToken": token} if token else {})
        assert status == 200
        names += [u["name"] for u in body["units"]]
        pages += 1
        token = body.get("nextPageToken")
        if token is None:
            break
    assert pages == 3 and names == sorted(make_view(PAGE_SIZE * 2 + 5).units)


@pytest.mark.parametrize(
    ("method", "path", "status", "fields"),
    [
        ("GET", "/units/u00000.service", 200, {"name": "u00000.service"}),
        (
            "GET",
            "/units/nope.service",
            404,
            {"error": {"code": 404, "message": "unit does not exist"}},
        ),
        (
            "GET",
            "/state",
            200,
            {
                "states": [
                    {
                        "name": "u00000.service",
                        "hash": HASH,
                        "machineID": "m1",
                        "systemdLoadState": "loaded",
                        "systemdActiveState": "active",
                        "systemdSubState": "running",
                    }
                ]
            },
        ),
        ("GET", "/state/u00000.service", 200, {"systemdActiveState": "active"}),
        ("GET", "/state/u00001.service", 200, {"systemdActiveState": "", "machineID": ""}),
        ("GET", "/state/nope.service", 404, {}),
        (
            "GET",
            "/machines",
            200,
            {"machines": [{"id": "m1", "primaryIP": "10.0.0.1", "metadata": {"rack": "r1"}}]},
        ),
        ("GET", "/discovery", 200, {"id": "fleet:v1"}),
        ("GET", "/nothing", 404, {}),
        ("POST", "/units", 404, {}),
        ("PATCH", "/machines", 400, {}),
        ("DELETE", "/units/u00000.service", 204, None),
        ("DELETE", "/units/nope.service", 404, {}),
        ("GET", "/units", 400, {"error": {"code": 400, "message": "invalid nextPageToken"}}),
    ],
)
def test_routes(method: str, path: str, status: int, fields: dict[str, Any] | None) -> None:
    query = {"nextPageToken": "%%%"} if status == 400 else {}
    got, body = call(handler(), method, path, query=query)
    assert got == status
    if fields is None:
        assert body is None
    else:
        assert {k: body[k] for k in fields} == fields
        if status >= 400:
            assert set(body) == {"error"} and body["error"]["code"] == status


def test_state_carries_a_containers_health_as_fleetpys_extra() -> None:
    view = make_view()
    name = "u00000.service"
    sick = replace(view.states[name]["m1"], health="unhealthy", message="")
    h = FleetV1(Source(replace(view, states={name: {"m1": sick}})), Writer())
    _, body = call(h, "GET", f"/state/{name}")
    assert body["systemdActiveState"] == "active"  # fleet's fields as they were
    assert body["fleetpy"] == {"health": "unhealthy"}
    assert "fleetpy" not in call(handler(), "GET", f"/state/{name}")[1]  # no check: no extra


def test_state_filters() -> None:
    h = handler()
    assert call(h, "GET", "/state", query={"machineID": "m2"})[1] == {"states": []}
    _, body = call(h, "GET", "/state", query={"unitName": ["u00000.service", "x.service"]})
    assert [s["name"] for s in body["states"]] == ["u00000.service"]


def all_pages(h: FleetV1, path: str, field: str, query: dict[str, Any]) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        status, body = call(
            h, "GET", path, query={**query, **({"nextPageToken": token} if token else {})}
        )
        assert status == 200
        items += body[field]
        token = body.get("nextPageToken")
        if token is None:
            return items


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"machineID": "m2"},
        {"machineID": ["m1", "m3"]},
        {"unitName": ["u00007.service", "u00003.service", "x.service"]},
        {"unitName": ["u00007.service", "u00003.service"], "machineID": "m3"},
    ],
)
def test_state_pages_are_every_matching_state_in_order(query: dict[str, Any]) -> None:
    """The cached, sliced pages equal a plain filter of every state, sorted by unit and
    machine, across page boundaries."""
    machines = ["m1", "m2", "m3"]
    view = make_view(units=90)
    states = {
        name: {m: UnitState(name, m, "loaded", "active", "running", HASH) for m in machines}
        for name in view.units
    }
    h = FleetV1(Source(replace(view, states=states)), Writer())
    got = all_pages(h, "/state", "states", query)
    want_machines = set(
        query.get("machineID", machines)
        if not isinstance(query.get("machineID"), str)
        else [query["machineID"]]
    )
    want_units = set(query.get("unitName", states))
    want = [
        (name, m)
        for name in sorted(states)
        for m in machines
        if name in want_units and m in want_machines
    ]
    assert [(s["name"], s["machineID"]) for s in got] == want
    assert len(want) > PAGE_SIZE or query  # the unfiltered case spans pages


@pytest.mark.parametrize(
    ("body", "error", "status", "call_"),
    [
        # create with options -> 201
        (
            {"name": "a.service", "options": OPTIONS, "desiredState": "launched"},
            None,
            201,
            ("a.service", TEXT, DesiredState.LAUNCHED),
        ),
        # only a desired state -> 204
        ({"desiredState": "loaded"}, None, 204, ("a.service", None, DesiredState.LOADED)),
        # unknown without options -> 409 (the library's error, fleet's code)
        ({"desiredState": "loaded"}, UnknownUnitError("unit a.service does not exist"), 409, None),
        ({}, StateError("must provide desiredState to update existing unit"), 409, None),
        ({"options": OPTIONS}, FleetOptionError("[X-Fleet] bad"), 400, None),
        ({"options": OPTIONS}, RegistryError("etcd unreachable"), 503, None),
        # refused before the writer is called
        ({"name": "b.service", "desiredState": "launched"}, None, 400, "differs"),
        ({"desiredState": "running"}, None, 400, "invalid desiredState"),
        ({"options": [{"section": "Service", "name": 1}]}, None, 400, "string fields"),
        ({"options": [{"section": "Service"}]}, None, 400, "missing key before '='"),
        (
            {"options": [{"section": "Service", "name": "A", "value": "a \\\n\nB=evil"}]},
            None,
            400,
            "empty continuation line",
        ),
        ({"options": ["x"]}, None, 400, "each option"),
        ({"options": {"a": 1}}, None, 400, "options must be a list"),
        (
            {"options": [{"section": "Service", "name": "ExecStart", "value": "a\nb"}]},
            None,
            400,
            "invalid unit options",
        ),
        (b"{not json", None, 400, "unable to decode body"),
        (b"[1, 2]", None, 400, "not a JSON object"),
        (b"\xff\xfe", None, 400, "unable to decode body"),
    ],
)
def test_put(body: Any, error: Exception | None, status: int, call_: Any) -> None:
    outcome = PutOutcome.CHANGED if status == 204 else PutOutcome.CREATED
    writer = Writer(error, outcome)
    got, answer = call(handler(writer=writer), "PUT", "/units/a.service", body)
    assert got == status, answer
    if isinstance(call_, tuple):
        assert writer.calls == [call_]
    elif isinstance(call_, str):
        assert writer.calls == [] and call_ in answer["error"]["message"]
    if status >= 400:
        assert answer["error"]["code"] == status and "\n" not in answer["error"]["message"]


@pytest.mark.parametrize(
    ("body", "error", "status", "message"),
    [
        ([{"op": "add", "path": "/m1/metadata/role", "value": "web"}], None, 204, None),
        ([], None, 204, None),
        (
            [{"op": "noop", "path": "/m1/metadata/role", "value": "web"}],
            None,
            400,
            "operation 1: invalid op 'noop': expect add, remove, or replace",
        ),
        (
            [{"op": "add", "path": "/m1/role", "value": "web"}],
            None,
            400,
            "operation 1: machine metadata path invalid: '/m1/role' "
            "(expected /<machineID>/metadata/<key>)",
        ),
        (
            [{"op": "add", "path": "/m1/metadata/role"}],
            None,
            400,
            "operation 1: invalid value: add and replace require a value (a string)",
        ),
        (
            [{"op": "remove", "path": "/m1/metadata/role"}],
            MetadataError("too much operator metadata for machine m1"),
            400,
            "too much operator metadata for machine m1",
        ),
        (
            [{"op": "remove", "path": "/m1/metadata/role"}],
            RegistryError("etcd unreachable"),
            503,
            "etcd unreachable",
        ),
    ],
)
def test_patch_machines(body: Any, error: Exception | None, status: int, message: str) -> None:
    writer = Writer(error)
    got, answer = call(handler(writer=writer), "PATCH", "/machines", body, content_type="")
    assert got == status
    if message is None:
        assert answer is None and len(writer.calls) == 1
    else:
        assert answer == {"error": {"code": status, "message": message}}
    if status == 400 and error is None:
        assert writer.calls == []  # a bad operation: nothing applied, not even the good ones


def test_patch_machines_needs_write_access_and_reaches_the_writer_in_order() -> None:
    writer = Writer()
    body = [
        {"op": "add", "path": "/m1/metadata/role", "value": "web"},
        {"op": "remove", "path": "/m2/metadata/az"},
        {"op": "replace", "path": "/m1/metadata/role", "value": "db"},
    ]
    got, _ = call(handler(writer=writer), "PATCH", "/machines", body, read_only=True)
    assert got == 403 and writer.calls == []
    assert call(handler(writer=writer), "PATCH", "/machines", body)[0] == 204
    assert writer.calls == [
        (
            MetadataChange("m1", "role", "web"),
            MetadataChange("m2", "az", None),
            MetadataChange("m1", "role", "db"),
        )
    ]


def test_put_bad_names_content_type_and_read_only() -> None:
    writer = Writer()
    h = handler(writer=writer)
    assert call(h, "PUT", "/units/bad name", {"options": OPTIONS})[0] == 400
    assert (
        call(h, "PUT", "/units/a.service", {"options": OPTIONS}, content_type="text/plain")[0]
        == 415
    )
    status, _ = call(h, "PUT", "/units/a.service", {"options": OPTIONS}, read_only=True)
    assert status == 403 and writer.calls == []
    assert call(h, "DELETE", "/units/u00000.service", read_only=True)[0] == 403


def test_options_are_kept_as_fleetctl_sends_them() -> None:
    """What fleetctl's parser (go-systemd's) makes of a unit file: a value continued over
    lines keeps its backslashes and line feeds, `Key=` is an option whose empty value
    Go leaves out of the JSON, keys repeated apart stay apart. fleet gave them back the
    same, and fleetctl compares a hash of them with the file's."""
    sent = [
        {"section": "Unit", "name": "Requires", "value": "a.service"},
        {"section": "Unit", "name": "After", "value": "a.service"},
        {"section": "Service", "name": "ExecStart", "value": "/bin/sh -c \\\n  'sleep 1'"},
        {"section": "Unit", "name": "Requires", "value": "b.service"},
        {"section": "Service", "name": "Environment"},
        {"section": "Unit", "name": "After", "value": "b.service"},
    ]
    text = text_of(sent)
    assert text == (
        "[Unit]\nRequires=a.service\nAfter=a.service\nRequires=b.service\nAfter=b.service\n\n"
        "[Service]\nExecStart=/bin/sh -c \\\n  'sleep 1'\nEnvironment=\n"
    )
    back = options_of(text)
    # Grouped by section, as fleet's serializer does; otherwise as sent.
    assert back == [o for o in sent if o["section"] == "Unit"] + [
        sent[2],
        {"section": "Service", "name": "Environment", "value": ""},
    ]
    assert text_of(back) == text


def test_options_round_trip_and_tokens_are_opaque_but_checked() -> None:
    assert options_of(text_of(OPTIONS)) == OPTIONS
    assert text_of(OPTIONS) == TEXT
    with pytest.raises(BadRequest):
        decode_token("eyJub3QiOiAiaXQifQ")  # valid base64 JSON, not ours
