"""Class 3: records fleetpy did not write (hand-edited, other tools' keys) are skipped
with one warning naming the key; destroy can still remove them; nested prefixes are
refused. fleetpy in process; the engine and an agent as processes beside them, and a
blocking wait fed malformed events: tests/system/hostile/test_hostile_records.py."""

from __future__ import annotations

import json

import pytest

from support.hostile_harness import (
    CONTROL,
    SERVICE,
    Hostile,
    assert_one_clean_error,
    pollute,
    warnings,
)


@pytest.fixture(scope="module")
def polluted(seeded: Hostile) -> Hostile:
    return pollute(seeded)


@pytest.mark.parametrize(
    "args",
    [
        ("list-unit-files",),
        ("list-unit-files", "-o", "json"),
        ("list-units",),
        ("list-units", "-o", "json"),
        ("list-machines",),
        ("list-machines", "-o", "json"),
        ("list-unit-files", "--full", "--no-legend"),
    ],
    ids=" ".join,
)
def test_listings_skip_malformed_records_with_one_warning_each(
    polluted: Hostile, args: tuple[str, ...]
) -> None:
    outcome = polluted.ok(*args)
    assert not CONTROL.search(outcome.stdout + outcome.stderr), outcome.describe()
    lines = warnings(outcome.stderr)
    assert lines == [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == len(set(lines))
    assert all(f"{polluted.prefix}/" in line and "not a fleetpy record" in line for line in lines)
    if args[0] == "list-unit-files":
        units = {f"unit/{name}" for name in ("notjson.service", "binary.service", "deep.service")}
        for key in units:
            assert any(f"{polluted.prefix}/{key}:" in line for line in lines), key
        if "json" in args:
            assert {row["unit"] for row in json.loads(outcome.stdout)} == {
                "hello.service",
                "db.service",
                "web@.service",
                "web@1.service",
                "web@2.service",
            }
        assert any("esc\\x1b]0;pwned\\x07.service" in line for line in lines)


def test_commands_on_good_units_work_beside_malformed_ones(polluted: Hostile) -> None:
    assert polluted.ok("cat", "web@1.service").stdout == SERVICE
    outcome = polluted.run("cat", "notjson.service")
    assert outcome.code == 1 and "Traceback" not in outcome.stderr
    assert outcome.stderr.splitlines() == [
        f"fleetpy: warning: skipped {polluted.prefix}/unit/notjson.service: not a fleetpy "
        "record (not JSON (JSONDecodeError))",
        "fleetpy: error: unit notjson.service is not submitted",
    ]
    outcome = polluted.ok("start", "--no-block", "web@3.service")
    assert "Triggered unit web@3.service start" in outcome.stdout
    polluted.ok("stop", "--no-block", "web@3.service")
    polluted.ok("destroy", "web@3.service")


def test_destroy_removes_malformed_records(polluted: Hostile) -> None:
    prefix = polluted.prefix
    outcome = polluted.ok(
        "destroy", "notjson.service", "binary.service", "deep.service", "Weird Name", "nohash*"
    )
    assert sorted(outcome.stdout.splitlines()) == sorted(
        f"Destroyed {name}"
        for name in (
            "notjson.service",
            "binary.service",
            "deep.service",
            "Weird Name",
            "nohash.service",
        )
    )
    keys = polluted.keyspace().state(f"{prefix}/unit/")[1]
    for gone in ("notjson.service", "binary.service", "deep.service", "nohash.service"):
        assert f"{prefix}/unit/{gone}" not in keys
    outcome = polluted.ok("destroy", "esc*")
    assert outcome.stdout == "Destroyed esc\\x1b]0;pwned\\x07.service\n"
    assert "hello.service" in polluted.units()


def test_prefix_inside_a_fleetpy_prefix_is_refused(seeded: Hostile) -> None:
    for inner in (f"{seeded.prefix}/unit", f"{seeded.prefix}/x/y", f"{seeded.prefix}/content"):
        path = seeded.write("nested.service")
        seeded.rejects(
            "--etcd-prefix",
            inner,
            "start",
            "--no-block",
            path,
            match=f"lies inside the fleetpy prefix {seeded.prefix}",
        )
        seeded.rejects("--etcd-prefix", inner, "submit", path, match="lies inside")
        seeded.rejects("--etcd-prefix", inner, "destroy", "hello.service", match="lies inside")


def test_prefix_holding_a_fleetpy_prefix_is_refused(hostile: Hostile) -> None:
    inner = hostile.derived(prefix=f"{hostile.prefix}/inner")
    inner.seed()
    path = hostile.write("outer.service")
    hostile.rejects("start", "--no-block", path, match=f"holds the fleetpy prefix {inner.prefix}")


def test_daemon_with_a_nested_prefix_exits_with_one_line(seeded: Hostile) -> None:
    for args in (["engine"], ["agent", "--unit-manager", "simulated", "--machine-id", "m9"]):
        outcome = seeded.run("--etcd-prefix", f"{seeded.prefix}/engine", *args, timeout=30)
        assert_one_clean_error(outcome, match="lies inside the fleetpy prefix")


@pytest.mark.parametrize(
    "prefix", ["relative/../x", "/a//b", "/a b", "/a/./b", "/\x1b[2J", "/" + "x" * 300, "/a\nb"]
)
def test_invalid_prefixes(hostile: Hostile, prefix: str) -> None:
    hostile.rejects("--etcd-prefix", prefix, "list-units", match="invalid etcd prefix")
