"""fleet's keyspace as its v2 tree: what fleet wrote read back, what it never wrote refused
with the key named (fleetpy.fleet_keyspace.parse_keyspace)."""

from __future__ import annotations

import json

import pytest

from fleetpy.fleet_keyspace import (
    FleetKeyspaceError,
    FleetMachine,
    FleetUnit,
    normalize_fleet_prefix,
    parse_keyspace,
)

from support.fleet_keys import PREFIX, machine_keys, object_json, unit_keys, v2_tree

HELLO = "[Unit]\nDescription=hello\n\n[Service]\nExecStart=/bin/sleep infinity\n"
M1 = "1" * 32


def test_units_machines_and_merged_metadata_are_read_as_fleet_had_them() -> None:
    keys = {
        **unit_keys("hello.service", HELLO, "launched", M1),
        **unit_keys("idle.service", HELLO),
        **machine_keys(M1, "10.0.0.5", {"rack": "r1", "disk": "ssd"}, {"disk": "", "zone": "z"}),
        # a machine whose lease ended keeps only operators' metadata: not listed by fleet
        **{f"machines/{'2' * 32}/metadata/rack": "r9"},
        # a job left without its object (a destroy's leftover): fleet skipped it
        "job/gone.service/target-state": "launched",
    }
    snapshot = parse_keyspace(v2_tree(keys), PREFIX)
    sha1 = json.loads(keys["job/hello.service/object"])["UnitHash"]
    assert snapshot.units == {
        "hello.service": FleetUnit("hello.service", HELLO, bytes(sha1).hex(), "launched", M1),
        "idle.service": FleetUnit("idle.service", HELLO, bytes(sha1).hex(), "inactive", None),
    }
    assert snapshot.machines == {
        M1: FleetMachine(M1, "10.0.0.5", {"rack": "r1", "zone": "z"}, "1.0.0")
    }
    assert snapshot.missing_contents == {}


def test_a_job_without_target_state_is_inactive_and_one_without_contents_is_named() -> None:
    keys = unit_keys("a.service", HELLO, state=None)
    keys["job/b.service/object"] = object_json("b.service", "[Service]\nExecStart=/bin/b\n")
    snapshot = parse_keyspace(v2_tree(keys), PREFIX)
    assert snapshot.units["a.service"].target_state == "inactive"
    assert list(snapshot.missing_contents) == ["b.service"]


def _broken(rel: str, value: str) -> dict[str, str]:
    keys = {**unit_keys("a.service", HELLO, "launched", M1), **machine_keys(M1)}
    keys[rel] = value
    return keys


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (_broken("job/a.service/object", "not json"), "job/a.service/object: not JSON"),
        (_broken("job/a.service/object", "[1]"), "not a JSON object"),
        (
            _broken("job/a.service/object", json.dumps({"Name": "a.service", "UnitHash": "ab"})),
            "UnitHash is not a sha1",
        ),
        (
            _broken(
                "job/a.service/object", json.dumps({"Name": "a.service", "UnitHash": [1] * 19})
            ),
            "UnitHash is not a sha1",
        ),
        (_broken("job/a.service/object", object_json("b.service", HELLO)), "Name is not"),
        (_broken("job/a.service/target-state", "running"), "not one of fleet's states"),
        (_broken("unit/" + "0" * 40, json.dumps({"Raw": HELLO})), "sha1 is not its key"),
        (_broken("unit/" + "0" * 40, json.dumps({"Text": HELLO})), "no Raw unit text"),
        (_broken(f"machines/{M1}/object", json.dumps({"ID": "other"})), "ID is not"),
        (
            _broken(f"machines/{M1}/object", json.dumps({"ID": M1, "Metadata": {"a": 1}})),
            "Metadata is not a map of strings",
        ),
        (_broken(f"machines/{M1}/object", json.dumps({"ID": M1, "PublicIP": 7})), "PublicIP"),
        ({"engine/version": "1"}, "no fleet data under /_coreos.com/fleet/"),
        ({}, "no fleet data"),
    ],
)
def test_what_fleet_never_wrote_is_refused_naming_the_key(
    keys: dict[str, str], message: str
) -> None:
    with pytest.raises(FleetKeyspaceError, match=message):
        parse_keyspace(v2_tree(keys), PREFIX)


def test_a_directory_where_fleet_wrote_a_value_is_refused() -> None:
    keys = _broken("job/a.service/target-state/x", "launched")
    del keys["job/a.service/target-state"]
    with pytest.raises(FleetKeyspaceError, match="a directory where fleet wrote a value"):
        parse_keyspace(v2_tree(keys), PREFIX)


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("/_coreos.com/fleet/", "/_coreos.com/fleet"),
        ("_coreos.com/fleet", "/_coreos.com/fleet"),
        ("//x//y/", "/x/y"),
        ("/", "/"),
    ],
)
def test_prefixes_are_joined_as_fleet_joined_them(given: str, normal: str) -> None:
    assert normalize_fleet_prefix(given) == normal


def test_a_prefix_climbing_out_is_refused() -> None:
    with pytest.raises(FleetKeyspaceError, match="are not key names"):
        normalize_fleet_prefix("/a/../b")
