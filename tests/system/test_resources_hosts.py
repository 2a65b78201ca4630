"""Resource reports on a real host (issue 25 item 1): the agent, under real systemd,
reports its machine's CPUs and memory and what systemd accounts to fleetpy's units
(MemoryCurrent over D-Bus); the engine keeps a reservation larger than any machine off
every machine, saying why."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from fleetpy.cluster.nspawn import Host
from fleetpy.registry import Registry
from fleetpy.resources import Resources

from support.fleet import Fleet
from support.waiting import until

pytestmark = pytest.mark.hosts

MiB = 1024**2
# 200 MiB written (so resident), then idle; MemoryMax= is its reservation.
HOG = (
    "[Service]\n"
    "ExecStart=/usr/bin/python3 -c \"import time; b = b'x' * (200 * 2**20); time.sleep(1000)\"\n"
    "MemoryMax=1G\n"
)
HUGE = "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nReserveMemory=100T\n"


def used(registry: Registry, machine: str) -> Resources:
    record = registry.list_machines().get(machine)
    return Resources() if record is None or record.used is None else record.used


def test_a_real_host_reports_capacity_and_what_systemd_accounts_to_its_units(
    hosts: Callable[..., list[Host]], fleet: Fleet, registry: Registry
) -> None:
    (host,) = hosts(1, ttl=5)
    until(lambda: host.machine_id in registry.list_machines(), what="machine")
    record = registry.list_machines()[host.machine_id]
    assert record.capacity is not None
    assert record.capacity.cpu >= 1000 and record.capacity.memory >= 512 * MiB
    fleet("start", "--block-attempts", "60", fleet.write("hog.service", HOG))
    assert host.is_active("hog.service")
    # Registering again, the agent reports what systemd accounts now (the usage alone
    # is written again only past 5 % of this machine's memory).
    host.restart_agent()
    until(lambda: "unit_adopted" in host.journal("fleetpy-agent"), what="the agent back")
    accounted = host.systemctl("show", "hog.service", "-p", "MemoryCurrent").stdout.strip()
    rows: list[dict[str, Any]] = []

    def listed() -> bool:
        rows[:] = json.loads(fleet("list-machines", "-o", "json").stdout)
        return rows[0]["capacity"] is not None

    until(listed, timeout=30, what="the machine listed again")
    assert rows[0]["capacity"]["memory"] == record.capacity.memory
    if accounted == "MemoryCurrent=[not set]":
        # These hosts are nspawn containers on a cgroup v1 machine: their systemd has no
        # memory or cpu controller, so it accounts nothing, which is said as "not
        # reported" (list-machines: "-"), never as a usage of 0.
        assert rows[0]["used"] is None
    else:
        until(
            lambda: used(registry, host.machine_id).memory >= 200 * MiB,
            timeout=60,
            what="the machine record with the unit's memory",
        )

    fleet("submit", fleet.write("huge.service", HUGE))
    fleet("start", "--no-block", "huge.service")

    def reason() -> str:
        listed = json.loads(fleet("list-unit-files", "-o", "json").stdout)
        return next((u.get("reason") or "" for u in listed if u["unit"] == "huge.service"), "")

    until(lambda: "more than any machine has" in reason(), timeout=30, what="the reason")
    assert reason().startswith("it reserves 100 TiB, more than any machine has (largest ")
    assert not host.is_active("huge.service")
