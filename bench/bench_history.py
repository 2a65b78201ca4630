"""Soak benchmark of etcd's history: does the database level off under a long churn?

    python bench/bench_history.py [--cycles 20] [--units 20] [--machines 5] [--interval 2]

Real etcd (started here, one per mode), the real engine and M simulated agents in this
process. One cycle starts every unit, waits until all run, stops them all and waits until
all are reported stopped: submissions, schedule writes and state reports, as an
operator's day does. After CYCLES cycles and after 10 x CYCLES, etcd's revision (writes so
far) and its database size are read. Run twice: with the engine leader compacting every
INTERVAL seconds, and with compaction off. Prints a table and writes
bench/results/history.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetpy.agent import Agent
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.config import AgentSettings, EngineSettings
from fleetpy.engine import Engine
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.states import DesiredState
from fleetpy.unitmanager import SimulatedUnitManager

RESULTS = Path(__file__).resolve().parent / "results"


def wait(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out")
        time.sleep(0.02)


def active_count(agents: list[Agent]) -> int:
    return sum(
        1
        for agent in agents
        for unit in agent.manager.observe().values()
        if unit.active == "active"
    )


def reported_active(registry: Registry) -> int:
    return sum(
        1
        for states in registry.list_states().values()
        for state in states.values()
        if state.active == "active"
    )


def churn(
    registry: Registry, agents: list[Agent], names: list[str], text: str, cycles: int
) -> None:
    content = hashlib.sha256(text.encode()).hexdigest()
    for _ in range(cycles):
        for desired, running in ((DesiredState.LAUNCHED, len(names)), (DesiredState.LOADED, 0)):
            registry.change_units([UnitChange(n, desired, text, content) for n in names])
            wait(lambda running=running: active_count(agents) == running)
            wait(lambda running=running: reported_active(registry) == running)


def measure(args: argparse.Namespace, interval: float) -> dict[str, Any]:
    with EtcdServer() as etcd:
        config = RegistryConfig(endpoints=(etcd.endpoint,), prefix="/bench", timeout=10.0)
        registry = Registry(config)
        engine = Engine(
            Registry(config),
            EngineSettings(lease_ttl=5, reconcile_interval=30, compaction_interval=interval),
        ).start()
        agents = [
            Agent(
                Registry(config), SimulatedUnitManager(), AgentSettings(machine_id=f"m{i}", ttl=10)
            ).start()
            for i in range(args.machines)
        ]
        for agent in agents:
            agent.ready.wait(10)
        names = [f"churn{i}.service" for i in range(args.units)]
        text = "[Service]\nExecStart=/bin/sleep infinity\n"
        figures: dict[str, Any] = {}
        started = time.monotonic()
        for label, cycles in (("n", args.cycles), ("10n", 9 * args.cycles)):
            churn(registry, agents, names, text, cycles)
            time.sleep(interval + 1 if interval else 0)  # one more compaction is due
            (member,), _ = registry.etcd_status()
            figures[label] = {
                "cycles": args.cycles if label == "n" else 10 * args.cycles,
                "revision": member.revision,
                "db_bytes": member.db_size,
                "seconds": round(time.monotonic() - started, 1),
            }
        for agent in agents:
            agent.stop()
        engine.stop()
        registry.close()
        return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--units", type=int, default=20)
    parser.add_argument("--machines", type=int, default=5)
    parser.add_argument("--interval", type=float, default=2.0, help="compaction interval (s)")
    args = parser.parse_args()
    load = os.getloadavg()
    results: dict[str, Any] = {
        "cycles": args.cycles,
        "units": args.units,
        "machines": args.machines,
        "interval": args.interval,
        "load_before": [round(x, 2) for x in load],
    }
    for mode, interval in (("compacted", args.interval), ("uncompacted", 0.0)):
        results[mode] = measure(args, interval)
        n, ten = results[mode]["n"], results[mode]["10n"]
        results[mode]["growth"] = round(ten["db_bytes"] / n["db_bytes"], 2)
    print(f"{'mode':<12} {'cycles':>7} {'revision':>9} {'db MiB':>8}   growth N->10N")
    for mode in ("compacted", "uncompacted"):
        for label in ("n", "10n"):
            row = results[mode][label]
            print(
                f"{mode:<12} {row['cycles']:>7} {row['revision']:>9} "
                f"{row['db_bytes'] / 2**20:>8.2f}"
                + (f"   x{results[mode]['growth']}" if label == "10n" else "")
            )
    print(f"load average before: {' '.join(str(x) for x in results['load_before'])}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "history.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
