"""Class 3: records fleetpy did not write (hand-edited, other tools' keys) are skipped
with one warning naming the key; destroy can still remove them; nested prefixes are
refused. The engine and an agent carry on beside them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.hostile_harness import CONTROL, SERVICE, Hostile, assert_one_clean_error

GOOD_HASH = "ab" * 32

# key (relative to the prefix) -> raw value: each is not a record fleetpy would write.
MALFORMED: dict[str, bytes] = {
    "unit/notjson.service": b"not json",
    "unit/array.service": b"[]",
    "unit/nohash.service": b'{"desired": "launched"}',
    "unit/badhash.service": b'{"hash": 1, "desired": "launched"}',
    "unit/baddesired.service": json.dumps({"hash": GOOD_HASH, "desired": "running"}).encode(),
    "unit/badglobal.service": json.dumps(
        {"hash": GOOD_HASH, "desired": "loaded", "global": "yes"}
    ).encode(),
    "unit/binary.service": b"\xff\xfe\x00\x01",
    "unit/deep.service": b"[" * 100_000,
    "unit/Weird Name": b"{}",
    "unit/unit/nested.service": json.dumps({"hash": GOOD_HASH, "desired": "launched"}).encode(),
    "unit/esc\x1b]0;pwned\x07.service": b"x",
    "machines/m-bad": b"garbage",
    "machines/bad id!": json.dumps({"ip": "1.2.3.4"}).encode(),
    "machines/m-meta": json.dumps({"ip": "1.2.3.4", "metadata": {"a": 1}}).encode(),
    "schedule/m-x/hello.service": b"{",
    "schedule/m-x/Bad Unit": b"{}",
    "state/m-x/hello.service": b"nope",
    "state/noslash": b"{}",
    "reason/hello.service": b"\xff",
    "global/g.service": b"garbage",
    "content/not-a-hash": b"x",
}


def etcdctl(endpoint: str, *args: str, input: bytes | None = None) -> str:
    result = subprocess.run(
        ["etcdctl", "--endpoints", endpoint, *args],
        input=input,
        capture_output=True,
        check=True,
        timeout=30,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    return result.stdout.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def polluted(seeded: Hostile) -> Hostile:
    for key, value in MALFORMED.items():
        etcdctl(seeded.etcd.endpoint, "put", f"{seeded.prefix}/{key}", input=value)
    return seeded


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("fleetpy: warning: ")]


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
    endpoint, prefix = polluted.etcd.endpoint, polluted.prefix
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
    keys = etcdctl(endpoint, "get", "--prefix", "--keys-only", f"{prefix}/unit/").split()
    for gone in ("notjson.service", "binary.service", "deep.service", "nohash.service"):
        assert f"{prefix}/unit/{gone}" not in keys
    outcome = polluted.ok("destroy", "esc*")
    assert outcome.stdout == "Destroyed esc\\x1b]0;pwned\\x07.service\n"
    assert "hello.service" in polluted.units()


def test_engine_and_agent_carry_on_beside_malformed_records(
    polluted: Hostile, tmp_path: Path
) -> None:
    env = dict(polluted.env)
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("engine", "agent")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fleetpy", "engine", "--lease-ttl", "2"],
            env=env,
            stdout=logs["engine"],
            stderr=logs["engine"],
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetpy",
                "agent",
                "--unit-manager",
                "simulated",
                "--machine-id",
                "m-good",
                "--ttl",
                "2",
            ],
            env=env,
            stdout=logs["agent"],
            stderr=logs["agent"],
        ),
    ]
    try:
        outcome = polluted.ok("start", "--block-attempts", "30", "hello.service")
        assert "hello.service launched on m-good" in outcome.stdout
        etcdctl(
            polluted.etcd.endpoint,
            "put",
            f"{polluted.prefix}/schedule/m-good/x.service",
            input=b"junk from another tool",
        )
        etcdctl(
            polluted.etcd.endpoint, "put", f"{polluted.prefix}/unit/late.service", input=b"{broken"
        )
        polluted.ok("start", "--block-attempts", "30", "web@1.service")
        time.sleep(0.5)
        assert all(proc.poll() is None for proc in procs)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        # Their leases expire by themselves: wait, so later cases see a quiet prefix.
        deadline = time.monotonic() + 15
        while (
            time.monotonic() < deadline
            and etcdctl(
                polluted.etcd.endpoint,
                "get",
                "--prefix",
                "--keys-only",
                f"{polluted.prefix}/engine/",
            ).strip()
        ):
            time.sleep(0.2)
        time.sleep(0.5)
    engine_log = (tmp_path / "engine.log").read_text()
    agent_log = (tmp_path / "agent.log").read_text()
    for log in (engine_log, agent_log):
        assert "Traceback" not in log and not CONTROL.search(log)
    assert "event=record_skipped" in engine_log and "unit/late.service" in engine_log
    assert "schedule/m-good/x.service" in agent_log


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
    inner = Hostile(hostile.etcd, f"{hostile.prefix}/inner", hostile.workdir)
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


def test_blocking_wait_survives_malformed_events(polluted: Hostile) -> None:
    """A blocking wait is fed by watches: malformed puts arriving mid-wait count as absent."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetpy", "start", "--block-attempts", "3", "db.service"],
        env=polluted.env,
        cwd=polluted.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.2)
    for key in ("state/m-x/db.service", "schedule/m-x/db.service", "machines/m-x"):
        etcdctl(polluted.etcd.endpoint, "put", f"{polluted.prefix}/{key}", input=b"\xff junk")
    _stdout, stderr = proc.communicate(timeout=30)
    text = stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, text
    assert "Traceback" not in text and not CONTROL.search(text)
    errors = [line for line in text.splitlines() if line.startswith("fleetpy: error:")]
    assert len(errors) == 1 and "timed out after 3s waiting for db.service" in errors[0]
    polluted.ok("stop", "--no-block", "db.service")
