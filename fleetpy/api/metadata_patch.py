"""fleet's `PATCH /machines` body, read into metadata changes (a pure function).

The body is a JSON Patch array: `[{"op": "add"|"remove"|"replace", "path":
"/<machineID>/metadata/<key>", "value": "..."}]`. As fleet did, every operation is checked
before any is applied, `add` and `replace` are the same (set the value) and both need a
value, and `remove` ignores one. fleet's messages are kept, with the operation's position
and what was wrong added; keys, values and machine ids must also be what an agent's own
metadata and machine id may be.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from ..errors import MetadataError
from ..metadata import MetadataChange, key_problem, value_problem
from ..model.codecs import MACHINE_ID

# Far more than a person sends; bounds the work one request can ask for.
MAX_OPERATIONS = 1000
# fleet's path: /<machine id>/metadata/<key> (ids and keys are checked separately).
_PATH = re.compile(r"/([^/]+)/metadata/([^/]+)")


class PatchOp(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


def parse_metadata_patch(body: bytes) -> tuple[MetadataChange, ...]:
    """The changes a PATCH /machines body asks for, in order; MetadataError (the API's
    400) if any operation is invalid, and then none is applied."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MetadataError(f"unable to decode body: {type(exc).__name__}") from None
    if data is None:
        return ()  # fleet's decoder took `null` for an empty patch
    if not isinstance(data, list):
        raise MetadataError("unable to decode body: expected a JSON array of operations")
    if len(data) > MAX_OPERATIONS:
        raise MetadataError(f"{len(data)} operations; at most {MAX_OPERATIONS} in one request")
    return tuple(_change(index, item) for index, item in enumerate(data, 1))


def _change(index: int, item: Any) -> MetadataChange:
    where = f"operation {index}"
    if not isinstance(item, dict):
        raise MetadataError(f"{where}: expected an object {{op, path, value}}")
    given = item.get("op")
    try:
        op = PatchOp(given if isinstance(given, str) else "")
    except ValueError:
        raise MetadataError(
            f"{where}: invalid op {_shown(given)}: expect add, remove, or replace"
        ) from None
    path = item.get("path")
    match = _PATH.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise MetadataError(
            f"{where}: machine metadata path invalid: {_shown(path)} "
            "(expected /<machineID>/metadata/<key>)"
        )
    machine, key = match.groups()
    if not MACHINE_ID.fullmatch(machine):
        raise MetadataError(f"{where}: invalid machine id {_shown(machine)}")
    problem = key_problem(key)
    if problem:
        raise MetadataError(f"{where}: {problem}")
    if op is PatchOp.REMOVE:
        return MetadataChange(machine, key, None)
    value = item.get("value")
    if not isinstance(value, str) or not value:
        raise MetadataError(f"{where}: invalid value: add and replace require a value (a string)")
    problem = value_problem(key, value)
    if problem:
        raise MetadataError(f"{where}: {problem}")
    return MetadataChange(machine, key, value)


def _shown(value: Any) -> str:
    """A client's value in a message: repr, cut short (messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["MAX_OPERATIONS", "PatchOp", "parse_metadata_patch"]
