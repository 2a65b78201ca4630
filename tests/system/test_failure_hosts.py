"""RescheduleOnFailure= on real hosts: systemd's own Restart= restarts a crashing unit, the
agent counts its failures as systemd signals them (each once), the engine moves the unit to
the other host, then, at RescheduleLimit=, leaves it there and says so; `force-reschedule
UNIT` forgets it."""

from __future__ import annotations

import json

import pytest

from support.hosts_fixtures import SharedHosts
from support.waiting import until

pytestmark = pytest.mark.hosts

SHARED_HOSTS: tuple[dict[str, str], ...] = ({}, {})


def crashing(name: str, crashes: int, threshold: int) -> str:
    """A unit that exits 3 its first CRASHES runs on a host, then runs; restarted by
    systemd (Restart=on-failure), moved at THRESHOLD failures, at most once."""
    count = f"/run/{name}.runs"
    script = (
        f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}; "
        f"[ $n -ge {crashes} ] && exec sleep 1000; sleep 0.3; exit 3"
    )
    return (
        f"[Service]\nExecStart=/bin/sh -c '{script}'\nRestart=on-failure\nRestartSec=0.3\n\n"
        f"[X-Fleet]\nRescheduleOnFailure={threshold}\nRescheduleWindow=1min\nRescheduleLimit=1\n"
    )


def row(shared: SharedHosts, name: str) -> dict[str, str]:
    rows = json.loads(shared.fleet("list-unit-files", "-o", "json").stdout)
    found: dict[str, str] = next(r for r in rows if r["unit"] == name)
    return found


def active_on(shared: SharedHosts, name: str) -> str | None:
    states = shared.registry.list_states().get(name, {})
    running = [m for m, s in states.items() if s.active == "active" and s.sub == "running"]
    return running[0] if len(running) == 1 else None


def test_a_crashing_unit_moves_once_then_stays_until_reset(on_shared_hosts: SharedHosts) -> None:
    shared = on_shared_hosts
    twice = shared.fleet.write("twice.service", crashing("twice", 2, 3))  # below the threshold
    crash = shared.fleet.write("crash.service", crashing("crash", 3, 3))
    shared.fleet("start", "--no-block", twice, crash)
    until(lambda: shared.registry.read_failures()[1] != [], timeout=60, what="a first record")
    (first,) = shared.registry.read_failures()[1]  # never twice's: each failure counted once
    assert (first.unit, first.failures) == ("crash.service", 3)
    until(
        lambda: row(shared, "crash.service").get("machine") not in (None, first.machine),
        timeout=60,
        what="moved to the other host",
    )
    assert row(shared, "crash.service")["reason"].startswith(
        f"failed 3 times in 1min on {first.machine}"
    )
    until(
        lambda: not shared.host(first.machine).is_active("crash.service"),
        what="stopped where it failed",
    )
    # It fails 3 times on the other host too: RescheduleLimit=1, so it stays, and runs.
    until(
        lambda: "RescheduleLimit=1 reached" in (row(shared, "crash.service").get("reason") or ""),
        timeout=60,
        what="failed on both hosts: it stays",
    )
    second = row(shared, "crash.service")["machine"]
    assert second != first.machine
    until(lambda: active_on(shared, "crash.service") == second, timeout=60, what="running")

    result = shared.fleet("force-reschedule", "crash.service")
    assert result.stdout.startswith("Reset crash.service: its failures on ")
    until(lambda: not row(shared, "crash.service").get("reason"), what="reason cleared")
    assert shared.registry.read_failures()[1] == []
    assert active_on(shared, "crash.service") == second  # reset moves nothing
    # twice.service crashed twice, then ran, where it was placed: no record, no move.
    host = shared.host(row(shared, "twice.service")["machine"])
    assert host.run(["cat", "/run/twice.runs"]).stdout.strip() == "3"
    assert active_on(shared, "twice.service") == host.machine_id
    assert not row(shared, "twice.service").get("reason")
