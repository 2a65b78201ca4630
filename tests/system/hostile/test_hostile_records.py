"""Class 3: records fleetpy did not write, what needs fleetpy as processes: the engine and an
agent carry on beside them, and a blocking wait (the console script) survives malformed
events arriving mid-wait. The other cases, in process:
tests/integration/hostile/test_hostile_records.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support.hostile_harness import CONSOLE_SCRIPT, CONTROL, Hostile, Via, pollute
from support.waiting import until


@pytest.fixture(scope="module")
def polluted(seeded: Hostile) -> Hostile:
    return pollute(seeded)


def test_engine_and_agent_carry_on_beside_malformed_records(
    polluted: Hostile, tmp_path: Path
) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("engine", "agent")}
    commands = {
        "engine": ["engine", "--lease-ttl", "2"],
        "agent": ["agent", "--unit-manager", "simulated", "--machine-id", "m-good", "--ttl", "2"],
    }
    procs = []
    for name, args in commands.items():
        with open(logs[name], "wb") as log:
            procs.append(
                subprocess.Popen([CONSOLE_SCRIPT, *args], env=polluted.env, stdout=log, stderr=log)
            )
    try:
        outcome = polluted.ok("start", "--block-attempts", "30", "hello.service")
        assert "hello.service launched on m-good" in outcome.stdout
        keyspace = polluted.keyspace()
        keyspace.put(f"{polluted.prefix}/schedule/m-good/x.service", b"junk from another tool")
        keyspace.put(f"{polluted.prefix}/unit/late.service", b"{broken")
        polluted.ok("start", "--block-attempts", "30", "web@1.service")

        def both_skipped() -> bool:
            engine, agent = (logs[name].read_text() for name in ("engine", "agent"))
            return (
                "event=record_skipped" in engine
                and "unit/late.service" in engine
                and "schedule/m-good/x.service" in agent
            )

        # Each has met the junk (and said so) before we look whether they still run.
        until(both_skipped, timeout=20, what="the engine and the agent to skip the junk")
        assert all(proc.poll() is None for proc in procs)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        # Their leases expire by themselves: wait, so later cases see a quiet prefix.
        until(
            lambda: not polluted.keyspace().leased(polluted.prefix),
            timeout=15,
            what="the daemons' leased keys to expire",
        )
    for text in (logs["engine"].read_text(), logs["agent"].read_text()):
        assert "Traceback" not in text and not CONTROL.search(text)


def _desired(cluster: Hostile, unit: str) -> str | None:
    _, kvs = cluster.keyspace().state(f"{cluster.prefix}/unit/{unit}")
    value = kvs.get(f"{cluster.prefix}/unit/{unit}")
    return None if value is None else str(json.loads(value[0]).get("desired"))


def test_blocking_wait_survives_malformed_events(polluted: Hostile) -> None:
    """A blocking wait is fed by watches: malformed puts arriving mid-wait count as absent."""
    assert _desired(polluted, "db.service") == "loaded"
    proc = subprocess.Popen(
        [CONSOLE_SCRIPT, "start", "--block-attempts", "3", "db.service"],
        env=polluted.env,
        cwd=polluted.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Its change written, the command is waiting (its first read and watches follow within
    # milliseconds; a put that beats them is read as malformed instead, which counts alike).
    until(lambda: _desired(polluted, "db.service") == "launched", timeout=20, interval=0.02)
    for key in ("state/m-x/db.service", "schedule/m-x/db.service", "machines/m-x"):
        polluted.keyspace().put(f"{polluted.prefix}/{key}", b"\xff junk")
    _stdout, stderr = proc.communicate(timeout=30)
    text = stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, text
    assert "Traceback" not in text and not CONTROL.search(text)
    errors = [line for line in text.splitlines() if line.startswith("fleetpy: error:")]
    assert len(errors) == 1 and "timed out after 3s waiting for db.service" in errors[0]
    polluted.ok("stop", "--no-block", "db.service")


@pytest.mark.parametrize("args", [("list-unit-files",), ("cat", "notjson.service")], ids=" ".join)
def test_warnings_are_the_same_from_the_console_script(
    polluted: Hostile, args: tuple[str, ...]
) -> None:
    """The in-process runs of tests/integration/hostile/test_hostile_records.py stand for the
    console script: both print the same, byte for byte."""
    assert polluted.run(*args, via=Via.SCRIPT) == polluted.run(*args)
