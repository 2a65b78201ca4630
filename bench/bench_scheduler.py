"""Micro-benchmark for fleetpy.scheduler.plan (timing print, no assertions).

/work/venv/bin/python bench/bench_scheduler.py [units] [machines]
"""

from __future__ import annotations

import sys
import time

from fleetpy.scheduler import (
    Machine,
    PlacementPlan,
    Schedule,
    Scheduled,
    SetReason,
    Snapshot,
    UnitSpec,
)
from fleetpy.scheduler import plan_placements as plan
from fleetpy.unitfile.unit import FleetOptions

ZONES = ("a", "b", "c")


def cluster(machine_count: int) -> dict[str, Machine]:
    return {
        f"m{i:05d}": Machine(
            f"m{i:05d}", {"zone": ZONES[i % len(ZONES)], "disk": "ssd" if i % 2 else "hdd"}
        )
        for i in range(machine_count)
    }


def mixed_units(unit_count: int) -> dict[str, UnitSpec]:
    """Mostly unconstrained units plus a share of every constraint kind."""
    units: dict[str, UnitSpec] = {}
    for i in range(unit_count):
        kind = i % 10
        if kind == 0:
            name, options = f"ssd@{i}.service", FleetOptions(machine_metadata=(("disk", ("ssd",)),))
        elif kind == 1:
            name, options = f"spread@{i}.service", FleetOptions(spread="zone")
        elif kind == 2:
            name, options = f"capped@{i}.service", FleetOptions(max_per_machine=3)
        elif kind == 3:
            name, options = f"lonely@{i}.service", FleetOptions(conflicts=("lonely@*.service",))
        elif kind == 4:
            name, options = (
                f"sidecar-{i}.service",
                FleetOptions(machine_of=(f"app-{i + 1}.service",)),
            )
        else:
            name, options = f"app-{i}.service", FleetOptions()
        units[name] = UnitSpec(name, f"h{i}", "launched", options)
    return units


def timed(label: str, snapshot: Snapshot) -> PlacementPlan:
    started = time.perf_counter()
    result = plan(snapshot)
    elapsed = time.perf_counter() - started
    print(f"{label:<44} {elapsed * 1000:8.1f} ms  {len(result):6d} changes")
    return result


def main() -> None:
    unit_count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    machine_count = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    machines = cluster(machine_count)
    print(f"{unit_count} units x {machine_count} machines")

    plain = {
        f"app-{i}.service": UnitSpec(f"app-{i}.service", f"h{i}", "launched", FleetOptions())
        for i in range(unit_count)
    }
    first = timed("new, unconstrained", Snapshot(units=plain, machines=machines))
    placed = {
        c.unit: Scheduled(c.machine, c.desired, c.hash) for c in first if isinstance(c, Schedule)
    }
    timed("steady state, unconstrained", Snapshot(units=plain, machines=machines, schedule=placed))

    mixed = mixed_units(unit_count)
    first = timed("new, mixed constraints", Snapshot(units=mixed, machines=machines))
    placed = {
        c.unit: Scheduled(c.machine, c.desired, c.hash) for c in first if isinstance(c, Schedule)
    }
    reasons = {c.unit: c.reason for c in first if isinstance(c, SetReason) and c.reason is not None}
    steady = Snapshot(units=mixed, machines=machines, schedule=placed, reasons=reasons)
    timed("steady state, mixed constraints", steady)

    survivors = dict(list(machines.items())[machine_count // 10 :])
    timed(
        "10% of machines lost, mixed",
        Snapshot(units=mixed, machines=survivors, schedule=placed, reasons=reasons),
    )


if __name__ == "__main__":
    main()
