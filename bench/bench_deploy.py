"""Deployment benchmark: plan and apply of a 1,000-unit deployment, and a rolling update
of 50 instances, against a real etcd, an engine and simulated hosts in this process.

    python bench/bench_deploy.py [--units 1000] [--machines 50] [--roll 50]
                                 [--max-unavailable 5] [--min-ready 1]

Prints a table and writes bench/results/deploy-<units>.json (with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetpy.agent import Agent
from fleetpy.cluster.etcd import EtcdServer, grpc_request_count
from fleetpy.config import AgentSettings, EngineSettings
from fleetpy.deploy.deployment import digest, load_deployment, render_deployment
from fleetpy.deploy.rollout import ApplyOptions, apply_deployment, plan_deployment
from fleetpy.engine import Engine
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitmanager import SimulatedUnitManager

RESULTS = Path(__file__).resolve().parent / "results"
TEMPLATE = """\
[Unit]
Description=bench {{ instance }} version {{ version }}

[Service]
ExecStart=/bin/sleep infinity
"""


def write(directory: Path, name: str, instances: int, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.service.j2").write_text(TEMPLATE)
    (directory / "fleetpy.yaml").write_text(
        f"name: {name}\nvalues: {{version: '{version}'}}\nunits:\n"
        f"  - {{name: {name}@.service, template: app.service.j2, instances: {instances}}}\n"
    )
    return directory


def timed_plan(
    registry: Registry, directory: Path, server: EtcdServer
) -> tuple[float, float, int, object, object]:
    before = grpc_request_count(server.metrics())
    start = time.perf_counter()
    loaded = load_deployment(directory)
    units = render_deployment(loaded)
    rendered = time.perf_counter()
    plan = plan_deployment(registry, loaded.name, units, digest(units))
    seconds = time.perf_counter() - start
    requests = grpc_request_count(server.metrics()) - before
    return seconds, rendered - start, requests, plan, units


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--roll", type=int, default=50)
    parser.add_argument("--max-unavailable", type=int, default=5)
    parser.add_argument("--min-ready", type=float, default=1.0)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    log = open(RESULTS / "deploy-bench.log", "w")
    real_stderr, sys.stderr = sys.stderr, log  # agents and the engine log per action
    load_before = os.getloadavg()
    server = EtcdServer().start()
    config = RegistryConfig(endpoints=(server.endpoint,), prefix="/bench", timeout=30)
    registries = [Registry(config) for _ in range(1 + (args.machines + 49) // 50)]
    registry = registries[0]
    agents = [
        Agent(
            registries[1 + i // 50],
            SimulatedUnitManager(start_seconds=0.2),
            AgentSettings(machine_id=f"m{i:03d}", ttl=30),
        ).start()
        for i in range(args.machines)
    ]
    engine = Engine(Registry(config), EngineSettings(lease_ttl=10, reconcile_interval=600)).start()
    try:
        for agent in agents:
            agent.ready.wait(30)
        work = Path(tempfile.mkdtemp(prefix="fleetpy-bench-deploy-"))
        big = write(work / "big", "big", args.units, "1")

        plan_s, render_s, plan_requests, plan, units = timed_plan(registry, big, server)
        before = grpc_request_count(server.metrics())
        start = time.perf_counter()
        apply_deployment(
            registry,
            plan,
            units,  # type: ignore[arg-type]
            ApplyOptions(min_ready=0, timeout=600),
        )
        apply_s = time.perf_counter() - start
        apply_requests = grpc_request_count(server.metrics()) - before
        replan_s, _, replan_requests, replan, _ = timed_plan(registry, big, server)
        assert not replan.has_changes  # type: ignore[attr-defined]

        roll = write(work / "roll", "roll", args.roll, "1")
        _, _, _, plan, units = timed_plan(registry, roll, server)
        apply_deployment(registry, plan, units, ApplyOptions(min_ready=0, timeout=600))  # type: ignore[arg-type]
        write(work / "roll", "roll", args.roll, "2")
        _, _, _, plan, units = timed_plan(registry, roll, server)
        steps = -(-args.roll // args.max_unavailable)
        start = time.perf_counter()
        apply_deployment(
            registry,
            plan,
            units,
            ApplyOptions(  # type: ignore[arg-type]
                max_unavailable=args.max_unavailable, min_ready=args.min_ready, timeout=600
            ),
        )
        roll_s = time.perf_counter() - start
        waits = steps * args.min_ready

        figures = {
            "units": args.units,
            "machines": args.machines,
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "plan_new_seconds (render + diff)": round(plan_s, 3),
            "render_seconds": round(render_s, 3),
            "plan_new_etcd_requests": plan_requests,
            "apply_new_seconds (submit + all active)": round(apply_s, 3),
            "apply_new_etcd_requests (client + engine + agents)": apply_requests,
            "plan_unchanged_seconds": round(replan_s, 3),
            "plan_unchanged_etcd_requests": replan_requests,
            "rolling_update_instances": args.roll,
            "rolling_update_max_unavailable": args.max_unavailable,
            "rolling_update_seconds": round(roll_s, 3),
            "rolling_update_min_ready_waits_seconds": round(waits, 3),
            "rolling_update_overhead_per_step_seconds": round((roll_s - waits) / steps, 3),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
        out = RESULTS / f"deploy-{args.units}.json"
        out.write_text(json.dumps(figures, indent=2) + "\n")
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
        print(f"written to {out}")
    finally:
        sys.stderr = real_stderr
        engine.stop()
        for agent in agents:
            agent.stop()
        for reg in registries:
            reg.close()
        server.stop()


if __name__ == "__main__":
    main()
