"""The JSON codecs of fleetpy's records: schema versions, and the checks every value read
from the store goes through (what fleetpy did not write is a MalformedRecord; what a newer
fleetpy wrote is RecordTooNew, never misread)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import FleetpyError
from ..metadata import Overlay, key_problem, value_problem
from ..states import DesiredState
from ..unitfile.unit import parse_name

_MISSING: Any = object()


class MalformedRecord(Exception):
    """A value under the prefix that is not a record fleetpy wrote (hand-edited, or
    another tool's key); readers skip it with one warning naming the key."""


# The schema version of the records this fleetpy writes: field "v" of each JSON record.
# A record without one is version 1, what every release before versions wrote, in the
# same shape (releases before ignore the field). A change a reader of an older version
# would misread takes a new version; fields an older reader may ignore do not.
SCHEMA_VERSION = 1
VERSION_FIELD = "v"
# Operators' overlays are flat maps of metadata keys; their version, from 2 on, goes
# under a key no metadata key can be (releases before versions skip such an overlay).
OVERLAY_VERSION_KEY = "@v"


class RecordTooNew(MalformedRecord):
    """A record of a schema version newer than this fleetpy's: written by a newer
    release. Never misread, and never taken for an absent record: left alone."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(
            f"written by a newer fleetpy (record version {version}; "
            f"this one reads up to {SCHEMA_VERSION})"
        )


@dataclass(frozen=True)
class Newer:
    """Stands for a record too new to read where one was found (a read, a watch event):
    what it is is unknown, that it is there is not."""

    version: int


CONTENT_HASH = re.compile(r"[0-9a-f]{64}")
# Machine ids: systemd's 32 hex digits, or any short name of these characters
# (simulated hosts); never '/', which would break the key layout.
MACHINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise MalformedRecord(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise MalformedRecord(f"a JSON {type(data).__name__}, not an object")
    return data


def check_version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MalformedRecord("field 'v' is not a schema version")
    if value > SCHEMA_VERSION:
        raise RecordTooNew(value)
    return value


def read_record(raw: bytes) -> dict[str, Any]:
    """A JSON record of a version this fleetpy reads (RecordTooNew otherwise)."""
    data = json_object(raw)
    check_version(data.get(VERSION_FIELD, 1))
    return data


def versioned_json(data: dict[str, Any]) -> str:
    return dumps({VERSION_FIELD: SCHEMA_VERSION, **data})


def typed_field(
    data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _MISSING
) -> Any:
    value = data.get(name, default)
    if value is _MISSING:
        raise MalformedRecord(f"no {name!r} field")
    if not isinstance(value, kind) and not (default is None and value is None):
        raise MalformedRecord(f"field {name!r} is a {type(value).__name__}")
    return value


def check_unit_name(name: str) -> str:
    try:
        parsed = parse_name(name)
    except FleetpyError as exc:
        raise MalformedRecord(str(exc)) from None
    if parsed.name != name:
        raise MalformedRecord(f"invalid unit name {name!r}")
    return name


def check_machine_id(machine: str) -> str:
    if not MACHINE_ID.fullmatch(machine):
        raise MalformedRecord(f"invalid machine id {machine!r}")
    return machine


def check_content_hash(value: Any) -> str:
    if not isinstance(value, str) or not CONTENT_HASH.fullmatch(value):
        raise MalformedRecord("field 'hash' is not a sha256 hex digest")
    return value


def parse_desired(value: Any) -> DesiredState:
    try:
        return DesiredState(value)
    except ValueError:
        raise MalformedRecord(f"field 'desired' is not one of {', '.join(DesiredState)}") from None


def utf8_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRecord("not UTF-8 text") from None


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def overlay_to_json(overlay: Overlay) -> str:
    return dumps(dict(overlay))


def overlay_from_json(machine_id: str, raw: bytes) -> dict[str, str | None]:
    """An operators' metadata overlay: {key: value or null}, each valid as metadata."""
    check_machine_id(machine_id)
    data = json_object(raw)
    if OVERLAY_VERSION_KEY in data:
        check_version(data.pop(OVERLAY_VERSION_KEY))
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise MalformedRecord(f"metadata {key!r} is a {type(value).__name__}")
        problem = key_problem(key) or (value_problem(key, value) if value is not None else None)
        if problem:
            raise MalformedRecord(problem)
    return data
