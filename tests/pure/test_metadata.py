"""Machine metadata: fleet's PATCH /machines body read into changes (table tests of a pure
function), and the operators' overlay on an agent's own metadata."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleetpy.api.metadata_patch import MAX_OPERATIONS, parse_metadata_patch
from fleetpy.errors import MetadataError
from fleetpy.metadata import (
    MAX_ITEMS,
    MAX_OVERLAY_ENTRIES,
    MetadataChange,
    apply_changes,
    effective,
)
from fleetpy.model.records import MachineRecord

M = "a" * 32  # a systemd machine id


def op(kind: Any, path: Any, value: Any = None, **extra: Any) -> dict[str, Any]:
    item = {"op": kind, "path": path, **extra}
    if value is not None:
        item["value"] = value
    return item


@pytest.mark.parametrize(
    ("body", "changes"),
    [
        ([op("add", f"/{M}/metadata/role", "web")], [MetadataChange(M, "role", "web")]),
        ([op("replace", "/m1/metadata/az", "b")], [MetadataChange("m1", "az", "b")]),
        ([op("remove", "/m1/metadata/az")], [MetadataChange("m1", "az", None)]),
        ([op("remove", "/m1/metadata/az", "ignored")], [MetadataChange("m1", "az", None)]),
        (
            [op("add", "/m1/metadata/a.b_c-d", "x y=z"), op("remove", "/m2/metadata/k")],
            [MetadataChange("m1", "a.b_c-d", "x y=z"), MetadataChange("m2", "k", None)],
        ),
        ([op("add", "/m1/metadata/k", "v", extra="ignored")], [MetadataChange("m1", "k", "v")]),
        ([], []),
        (None, []),  # fleet's decoder took null for no operations
    ],
)
def test_valid_patches(body: Any, changes: list[MetadataChange]) -> None:
    assert list(parse_metadata_patch(json.dumps(body).encode())) == changes


BAD = [
    (b"{nope", "unable to decode body"),
    (b"\xff", "unable to decode body"),
    (b"[" * 100000, "unable to decode body"),
    (json.dumps({"op": "add"}).encode(), "expected a JSON array"),
    (json.dumps(["add"]).encode(), "operation 1: expected an object"),
    (json.dumps([op("noop", "/m1/metadata/k", "v")]).encode(), "invalid op 'noop': expect add"),
    (json.dumps([op(None, "/m1/metadata/k", "v")]).encode(), "invalid op None"),
    (json.dumps([op("move", "/m1/metadata/k", "v")]).encode(), "invalid op 'move'"),
    (json.dumps([op("ADD", "/m1/metadata/k", "v")]).encode(), "invalid op 'ADD'"),
    (json.dumps([op("add", "/m1/k", "v")]).encode(), "machine metadata path invalid: '/m1/k'"),
    (json.dumps([op("add", "m1/metadata/k", "v")]).encode(), "machine metadata path invalid"),
    (json.dumps([op("add", "/m1/metadata/k/x", "v")]).encode(), "machine metadata path invalid"),
    (json.dumps([op("add", "/m1/metadata/", "v")]).encode(), "machine metadata path invalid"),
    (json.dumps([op("add", 5, "v")]).encode(), "machine metadata path invalid: 5"),
    (json.dumps([op("add", "/-m1/metadata/k", "v")]).encode(), "invalid machine id '-m1'"),
    (json.dumps([op("add", "/m 1/metadata/k", "v")]).encode(), "invalid machine id"),
    (json.dumps([op("add", "/m1/metadata/k=v", "v")]).encode(), "invalid metadata key 'k=v'"),
    (json.dumps([op("add", "/m1/metadata/" + "k" * 65, "v")]).encode(), "invalid metadata key"),
    (json.dumps([op("add", "/m1/metadata/k")]).encode(), "add and replace require a value"),
    (json.dumps([op("replace", "/m1/metadata/k", "")]).encode(), "require a value"),
    (json.dumps([op("add", "/m1/metadata/k", 5)]).encode(), "require a value (a string)"),
    (json.dumps([op("add", "/m1/metadata/k", "a,b")]).encode(), "invalid metadata value 'a,b'"),
    (json.dumps([op("add", "/m1/metadata/k", "a\nb")]).encode(), "invalid metadata value"),
    (json.dumps([op("add", "/m1/metadata/k", "v" * 257)]).encode(), "at most 256 characters"),
    (
        json.dumps([op("add", "/m1/metadata/k", "v"), op("add", "/m1/k", "v")]).encode(),
        "operation 2: machine metadata path invalid",
    ),
    (
        json.dumps([op("remove", "/m1/metadata/k")] * (MAX_OPERATIONS + 1)).encode(),
        f"at most {MAX_OPERATIONS}",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_invalid_patches_say_why_in_one_short_line(body: bytes, message: str) -> None:
    with pytest.raises(
        MetadataError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as info:
        parse_metadata_patch(body)
    text = str(info.value)
    assert "\n" not in text and len(text) < 300, text


def test_a_huge_key_or_value_is_cut_short_in_the_message() -> None:
    body = json.dumps([op("add", "/m1/metadata/k", "x," * 500_000)]).encode()
    with pytest.raises(MetadataError) as info:
        parse_metadata_patch(body)
    assert len(str(info.value)) < 300


def test_the_overlay_sets_and_hides_keys_of_the_agents_own() -> None:
    own = {"role": "db", "az": "a", "disk": "ssd"}
    overlay = {"role": "web", "disk": None, "rack": "r1"}
    assert effective(own, overlay) == {"role": "web", "az": "a", "rack": "r1"}
    assert effective(own, {}) == own
    # A removal hides the key whatever the agent says, also one it adds later.
    assert effective({"gpu": "yes"}, {"gpu": None}) == {}
    record = MachineRecord("m1", "10.0.0.1", own, operator_metadata=overlay)
    assert record.metadata == {"role": "web", "az": "a", "rack": "r1"}
    assert json.loads(record.to_json())["metadata"] == own  # the agent's record: its own only


def test_changes_apply_in_order_and_the_overlay_is_bounded() -> None:
    changes = [
        MetadataChange("m1", "k", "1"),
        MetadataChange("m1", "k", None),
        MetadataChange("m1", "j", "2"),
    ]
    assert apply_changes({"x": "0"}, changes) == {"x": "0", "k": None, "j": "2"}
    full = {f"k{i}": "v" for i in range(MAX_ITEMS)}
    assert len(apply_changes(full, [MetadataChange("m1", "k0", None)])) == MAX_ITEMS
    with pytest.raises(MetadataError, match="too much operator metadata for machine m1"):
        apply_changes(full, [MetadataChange("m1", "new", "v")])
    # removals do not count toward the keys set: a removed key frees its place
    removed = {f"k{i}": None for i in range(MAX_ITEMS)}
    assert len(apply_changes(removed, [MetadataChange("m1", "new", "v")])) == MAX_ITEMS + 1
    assert (
        len(apply_changes(full, [MetadataChange("m1", "k0", None), MetadataChange("m1", "n", "v")]))
        == MAX_ITEMS + 1
    )
    # but an overlay of set and removed keys stays bounded
    many = {f"r{i}": None for i in range(MAX_OVERLAY_ENTRIES)}
    with pytest.raises(MetadataError, match="keys set or removed"):
        apply_changes(many, [MetadataChange("m1", "one", None)])
