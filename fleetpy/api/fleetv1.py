"""fleet's HTTP API v1 (what fleetctl --driver=API speaks), answered from the live view.

Reads are pure functions of a ClusterView (and the units' texts): no etcd request per
client request. Writes go through the same library calls as the CLI (client.operations.put_unit,
destroy_unit), so validation and error messages are shared, and then wait (briefly)
until the view shows them, so a client that writes and reads again sees its write.

fleet's JSON names are kept exactly; fleetpy's own additions (why a unit is not placed, the
deployment and commit it came from, the content hash) are in an extra "fleetpy" object
that fleet's clients ignore.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..client.listings import cordon_json, resources_json, summary_state
from ..client.operations import PutOutcome, PutResult
from ..errors import FleetpyError, RegistryError, StateError, UnknownUnitError
from ..files import MAX_UNIT_FILE_BYTES, over_limit
from ..log import log_event
from ..metadata import MetadataChange
from ..model.cordons import CordonRecord
from ..model.records import ClusterView, MachineRecord, UnitState
from ..states import ActiveState, DesiredState
from ..unitfile.unit import UnitFile, fleet_notes, parse_name, parse_unit
from .messages import JSON, ApiRequest, ApiResponse, error_response, json_response, no_content
from .metadata_patch import parse_metadata_patch

# fleet's page size (its PageToken's default limit): fleetctl follows nextPageToken.
PAGE_SIZE = 100
# How long a write waits for the view to show it before answering anyway.
READ_YOUR_WRITES_SECONDS = 5.0
MAX_TOKEN_LENGTH = 1024


class ViewSource(Protocol):
    """What the handlers read: the live view (fleetpy.live_view.LiveView) or a test's."""

    def current(self) -> ClusterView: ...

    def text(self, content_hash: str) -> str | None: ...

    def wait_until(self, done: Callable[[ClusterView], bool], timeout: float) -> bool: ...


class Writer(Protocol):
    """The writes, bound to a registry (client.operations.put_unit / destroy_unit) or a test's."""

    def put_unit(self, name: str, text: str | None, desired: DesiredState | None) -> PutResult: ...

    def destroy_unit(self, name: str) -> bool: ...

    def change_metadata(self, changes: Sequence[MetadataChange]) -> int:
        """Operators' metadata changes, in one transaction; etcd's revision after it."""
        ...


class BadRequest(Exception):
    """The request itself is wrong (400), before anything is looked up."""


# ----------------------------------------------------------------------------- JSON shapes


def options_of(text: str) -> list[dict[str, str]]:
    """fleet's unit options, [{section, name, value}]: each assignment as written and in
    file order (sections merged), which is what fleet gave back for what it was sent, so
    fleetctl's "differs from local unit file" check stays quiet on an unchanged file."""
    unit = parse_unit(text)
    return [
        {"section": section, "name": key, "value": value}
        for section, assignments in unit.contents
        for key, value in assignments
    ]


def text_of(options: Sequence[Any]) -> str:
    """Unit file text from fleet's options, as fleet stored them: sections merged in
    first-seen order, assignments in order, values as its parser reads them back."""
    triples: list[tuple[str, str, str]] = []
    for option in options:
        if not isinstance(option, dict):
            raise BadRequest("each option must be an object {section, name, value}")
        # fleet's Go client leaves out empty fields (omitempty): `Key=` has no "value".
        values = [option.get(k, "") for k in ("section", "name", "value")]
        if not all(isinstance(v, str) for v in values):
            raise BadRequest("each option needs string fields section, name and value")
        section, key, value = (str(v) for v in values)
        triples.append((section, key, value))
    try:
        return UnitFile.from_options(triples).serialize()
    except FleetpyError as exc:
        raise BadRequest(f"invalid unit options: {exc}") from None


def unit_json(view: ClusterView, name: str, options: list[dict[str, str]]) -> dict[str, Any]:
    record = view.units[name]
    placed = view.schedule.get(name)
    data: dict[str, Any] = {
        "name": name,
        "options": options,
        "desiredState": str(record.desired),
        "currentState": str(summary_state(view.states.get(name))),
    }
    if placed is not None and not record.is_global:
        data["machineID"] = placed[0]
    extra: dict[str, Any] = {"hash": record.hash, "global": record.is_global}
    if name in view.reasons:
        extra["reason"] = view.reasons[name]
    if record.owner:
        extra["owner"] = record.owner
    if record.origin:
        extra["commit"] = record.origin
    data["fleetpy"] = extra
    return data


def state_rows_of(view: ClusterView, unit: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{unit}\0{machine}", _state_json(unit, machine, state))
        for machine, state in sorted(view.states.get(unit, {}).items())
    ]


def _state_json(unit: str, machine: str, state: UnitState) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": unit,
        "hash": state.hash,
        "machineID": machine,
        "systemdLoadState": state.load,
        "systemdActiveState": state.active,
        "systemdSubState": state.sub,
    }
    extra = {"message": state.message, "health": state.health}
    if any(extra.values()):  # fleetpy's own fields, apart from fleet's
        data["fleetpy"] = {key: value for key, value in extra.items() if value}
    return data


def _machine_json(machine: MachineRecord, cordon: CordonRecord | None) -> dict[str, Any]:
    """fleet's machine; fleetpy's extra (a cordon, drain or maintenance window; its CPUs
    and memory, and what its units use) under "fleetpy", as a state's message is, where
    fleet's clients ignore it."""
    data: dict[str, Any] = {
        "id": machine.id,
        "primaryIP": machine.ip,
        "metadata": dict(sorted(machine.metadata.items())),
    }
    extra: dict[str, Any] = {}
    if cordon is not None:
        extra["cordon"] = cordon_json(cordon)
    if machine.capacity is not None:
        extra["capacity"] = resources_json(machine.capacity)
    if machine.used is not None:
        extra["used"] = resources_json(machine.used)
    if extra:
        data["fleetpy"] = extra
    return data


def machine_rows(view: ClusterView) -> list[tuple[str, dict[str, Any]]]:
    return [
        (m.id, _machine_json(m, view.cordons.get(m.id))) for _, m in sorted(view.machines.items())
    ]


# ----------------------------------------------------------------------------- pages


def encode_token(after: str) -> str:
    raw = json.dumps({"after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> str:
    """The key a page starts after; BadRequest for anything this server did not make."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise BadRequest("invalid nextPageToken")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadRequest("invalid nextPageToken") from None
    if not isinstance(data, dict) or not isinstance(data.get("after"), str):
        raise BadRequest("invalid nextPageToken")
    return str(data["after"])


def page_of(keys: Sequence[str], token: str | None) -> tuple[int, int, str | None]:
    """(start, end, next token) of the page of sorted `keys` that `token` asks for."""
    start = 0 if token is None else bisect_right(keys, decode_token(token))
    end = min(start + PAGE_SIZE, len(keys))
    return start, end, encode_token(keys[end - 1]) if end < len(keys) else None


def page_body(field: str, items: Sequence[bytes], next_token: str | None) -> bytes:
    """{"<field>": [...], "nextPageToken": ...} from items already encoded."""
    body = b'{"' + field.encode() + b'":[' + b",".join(items) + b"]"
    if next_token is not None:
        body += b',"nextPageToken":' + json.dumps(next_token).encode()
    return body + b"}"


def _encode(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


DISCOVERY: dict[str, Any] = {
    "kind": "discovery#restDescription",
    "discoveryVersion": "v1",
    "id": "fleet:v1",
    "name": "fleet",
    "version": "v1",
    "title": "fleet API (served by fleetpy)",
    "protocol": "rest",
    "servicePath": "fleet/v1/",
    "resources": {
        "Machines": {"methods": {"List": {"httpMethod": "GET", "path": "machines"}}},
        "Units": {
            "methods": {
                "List": {"httpMethod": "GET", "path": "units"},
                "Get": {"httpMethod": "GET", "path": "units/{unitName}"},
                "Set": {"httpMethod": "PUT", "path": "units/{unitName}"},
                "Delete": {"httpMethod": "DELETE", "path": "units/{unitName}"},
            }
        },
        "UnitState": {"methods": {"List": {"httpMethod": "GET", "path": "state"}}},
    },
}


# ----------------------------------------------------------------------------- handler


# Pages encoded, kept for the view they were made from (a walk of every page by fleetctl
# reads each once; clients polling the first page share it): at most this many.
PAGES_KEPT = 64


@dataclass(frozen=True)
class _Sorted:
    """A view's unit names, or (unit, machine) state keys, sorted once: kept while the
    view's dict they come from is the same object (live_view copies a dict only when an
    event changes it), so a state report does not sort the units again."""

    source: object  # view.units or view.states
    keys: list[str]
    machines: list[str]  # state keys only: each key's machine


class FleetV1:
    """The /fleet/v1 (and /v1-alpha) route."""

    def __init__(self, source: ViewSource, writer: Writer) -> None:
        self.source = source
        self.writer = writer
        self._lock = threading.Lock()
        self._unit_names: _Sorted | None = None
        self._state_keys: _Sorted | None = None
        self._pages: dict[tuple[str, int], bytes] = {}  # (route, start) -> page, of _paged
        self._paged: ClusterView | None = None  # the view _pages were made from
        self._options: dict[str, list[dict[str, str]]] = {}  # content hash -> options

    def __call__(self, request: ApiRequest) -> ApiResponse:
        try:
            return self._route(request)
        except BadRequest as exc:
            return error_response(400, str(exc))

    def _route(self, request: ApiRequest) -> ApiResponse:
        if request.path == "":
            return error_response(405, f"method {request.method} not allowed")  # as fleet's
        # fleet's router: segments of the decoded path; an empty one (`units/a%2f` is
        # `units/a/`) names nothing, so it is not dropped to make `units/a`.
        parts = request.path.split("/")[1:]
        if "" in parts:
            return error_response(404, "not found")
        method = request.method
        if parts == ["units"] and method == "GET":
            return self.list_units(request)
        if len(parts) == 2 and parts[0] == "units":
            name = parts[1]
            if method == "GET":
                return self.get_unit(name)
            if method == "PUT":
                return self.put_unit(request, name)
            if method == "DELETE":
                return self.delete_unit(request, name)
        elif parts == ["state"] and method == "GET":
            return self.list_states(request)
        elif len(parts) == 2 and parts[0] == "state" and method == "GET":
            return self.get_state(parts[1])
        elif parts == ["machines"] and method == "GET":
            rows = machine_rows(self.source.current())
            return self._page("machines", rows, request.param("nextPageToken"))
        elif parts == ["machines"] and method == "PATCH":
            return self.patch_machines(request)
        elif parts == ["discovery"] and method == "GET":
            return json_response(200, DISCOVERY)
        else:
            return error_response(404, "not found")
        return error_response(405, f"method {method} not allowed on {request.path}")

    # -- reads

    def _unit_options(self, content_hash: str) -> list[dict[str, str]]:
        options = self._options.get(content_hash)
        if options is None:
            text = self.source.text(content_hash)
            if text is None:
                return []  # not read yet (or its blob is missing): no options to show
            try:
                options = options_of(text)
            except FleetpyError:
                options = []
            self._options[content_hash] = options
        return options

    def _page_cache(self, view: ClusterView) -> dict[tuple[str, int], bytes]:
        """The pages kept for `view` (under the lock): none once the view changed."""
        if self._paged is not view:
            self._paged, self._pages = view, {}
        elif len(self._pages) >= PAGES_KEPT:
            self._pages.pop(next(iter(self._pages)))
        return self._pages

    def list_units(self, request: ApiRequest) -> ApiResponse:
        view = self.source.current()
        with self._lock:
            names = self._unit_names
            if names is None or names.source is not view.units:
                names = self._unit_names = _Sorted(view.units, sorted(view.units), [])
            start, end, token = page_of(names.keys, request.param("nextPageToken"))
            pages = self._page_cache(view)
            body = pages.get(("units", start))
            if body is None:
                items = [
                    _encode(unit_json(view, n, self._unit_options(view.units[n].hash)))
                    for n in names.keys[start:end]
                ]
                body = pages[("units", start)] = page_body("units", items, token)
        return ApiResponse(200, body)

    def get_unit(self, name: str) -> ApiResponse:
        view = self.source.current()
        record = view.units.get(name)
        if record is None:
            return error_response(404, "unit does not exist")
        with self._lock:
            options = self._unit_options(record.hash)
        return json_response(200, unit_json(view, name, options))

    def _sorted_states(self, view: ClusterView) -> _Sorted:
        with self._lock:
            keys = self._state_keys
            if keys is None or keys.source is not view.states:
                rows = [
                    (f"{unit}\0{machine}", machine)
                    for unit in sorted(view.states)
                    for machine in sorted(view.states[unit])
                ]
                keys = self._state_keys = _Sorted(
                    view.states, [k for k, _ in rows], [m for _, m in rows]
                )
            return keys

    def list_states(self, request: ApiRequest) -> ApiResponse:
        machines = set(request.query.get("machineID", ()))
        units = set(request.query.get("unitName", ()))
        token = request.param("nextPageToken")
        view = self.source.current()
        if units:  # a few units: their rows alone
            rows = [
                row
                for unit in sorted(units)
                for row in state_rows_of(view, unit)
                if not machines or row[1]["machineID"] in machines
            ]
            return self._page("states", rows, token)
        every = self._sorted_states(view)
        keys = every.keys
        if machines:
            keys = [k for k, machine in zip(keys, every.machines) if machine in machines]
        start, end, next_token = page_of(keys, token)
        items = []
        for key in keys[start:end]:
            unit, _, machine = key.partition("\0")
            items.append(_encode(_state_json(unit, machine, view.states[unit][machine])))
        return ApiResponse(200, page_body("states", items, next_token))

    def get_state(self, name: str) -> ApiResponse:
        """One unit's state (fleetctl's blocking start polls it). A submitted unit that no
        machine reports yet gets empty systemd states, not 404: fleetctl v1.0 would
        dereference the missing state and crash."""
        view = self.source.current()
        rows = [data for _, data in state_rows_of(view, name)]
        if not rows:
            if name not in view.units:
                return error_response(404, "unit does not exist")
            rows = [
                {
                    "name": name,
                    "hash": "",
                    "machineID": "",
                    "systemdLoadState": "",
                    "systemdActiveState": "",
                    "systemdSubState": "",
                }
            ]
        # A global unit runs on several machines: show an active one if there is one.
        rows.sort(key=lambda d: d["systemdActiveState"] != ActiveState.ACTIVE)
        return json_response(200, rows[0])

    def _page(
        self, field: str, rows: Sequence[tuple[str, Mapping[str, Any]]], token: str | None
    ) -> ApiResponse:
        start, end, next_token = page_of([key for key, _ in rows], token)
        items = [_encode(data) for _, data in rows[start:end]]
        return ApiResponse(200, page_body(field, items, next_token))

    # -- writes

    def put_unit(self, request: ApiRequest, name: str) -> ApiResponse:
        if request.read_only:
            return error_response(403, "these credentials may only read")
        if request.content_type.split(";")[0].strip().lower() != JSON:
            return error_response(415, f"unsupported content type, expected {JSON}")
        body = decode_json(request.body)
        if not isinstance(body, dict):
            raise BadRequest("unable to decode body: not a JSON object")
        given = body.get("name") or name
        if given != name:
            raise BadRequest(
                f"name in URL {name!r} differs from unit name in request body {given!r}"
            )
        desired = _desired(body.get("desiredState"))
        options = body.get("options") or []
        if not isinstance(options, list):
            raise BadRequest("options must be a list")
        text = text_of(options) if options else None
        excess = (
            None if text is None else over_limit(text, limit=MAX_UNIT_FILE_BYTES, what="unit file")
        )
        if excess is not None:
            raise BadRequest(f"unit {name} of {excess}")
        try:
            parse_name(name)
            result = self.writer.put_unit(name, text, desired)
        except UnknownUnitError as exc:
            return error_response(409, str(exc))
        except StateError as exc:
            return error_response(409, str(exc))
        except RegistryError as exc:
            return error_response(503, str(exc))
        except FleetpyError as exc:
            return error_response(400, str(exc))
        if text is not None:
            for note in fleet_notes(parse_unit(text, name), name):
                log_event("unit_note", unit=name, note=note)
        if result.revision:
            self.source.wait_until(
                lambda view: view.revision >= result.revision, READ_YOUR_WRITES_SECONDS
            )
        if result.outcome is PutOutcome.CREATED:
            return ApiResponse(201, b"", "")
        return no_content()

    def patch_machines(self, request: ApiRequest) -> ApiResponse:
        """fleet's JSON Patch of machines' metadata: every operation checked, then all
        applied in one transaction (fleet applied them one by one); 204."""
        if request.read_only:
            return error_response(403, "these credentials may only read")
        try:
            revision = self.writer.change_metadata(parse_metadata_patch(request.body))
        except RegistryError as exc:
            return error_response(503, str(exc))
        except FleetpyError as exc:
            return error_response(400, str(exc))
        if revision:
            self.source.wait_until(lambda view: view.revision >= revision, READ_YOUR_WRITES_SECONDS)
        return no_content()

    def delete_unit(self, request: ApiRequest, name: str) -> ApiResponse:
        if request.read_only:
            return error_response(403, "these credentials may only read")
        try:
            destroyed = self.writer.destroy_unit(name)
        except RegistryError as exc:
            return error_response(503, str(exc))
        except FleetpyError as exc:
            return error_response(400, str(exc))
        if not destroyed:
            return error_response(404, "unit does not exist")
        self.source.wait_until(lambda view: name not in view.units, READ_YOUR_WRITES_SECONDS)
        return no_content()


def decode_json(body: bytes) -> Any:
    """A request's JSON body; BadRequest for anything that is not JSON text, including
    nesting deeper than the parser's recursion allows and a lone surrogate (valid JSON
    escapes, `"\\ud800"`, but no text: it could never be stored)."""
    try:
        data = json.loads(body)
        json.dumps(data, ensure_ascii=False).encode()
    except RecursionError:
        raise BadRequest("unable to decode body: nested too deeply") from None
    except UnicodeEncodeError as exc:
        raise BadRequest(
            f"unable to decode body: a lone surrogate ({exc.object[exc.start]!a}) in a string"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"unable to decode body: {exc}") from None
    return data


def _desired(value: Any) -> DesiredState | None:
    if value in (None, ""):
        return None
    try:
        return DesiredState(value)
    except ValueError:
        raise BadRequest(
            f"invalid desiredState {value!r} (one of: {', '.join(DesiredState)})"
        ) from None


__all__ = ["FleetV1", "ViewSource", "Writer", "options_of", "text_of"]
