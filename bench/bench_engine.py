"""Engine benchmark: place N units on M simulated machines against a real etcd.

    python bench/bench_engine.py [--units 10000] [--machines 1000]

Real etcd (started here), the real engine as its own process (`fleetpy engine`),
M simulated agents in this process: each agent has its own lease and its own watch on
its own schedule prefix (they share one gRPC connection per group of agents). Prints a
table and writes bench/results/engine-<units>x<machines>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetpy.agent import Agent
from fleetpy.cluster.etcd import EtcdServer, grpc_request_count
from fleetpy.config import AgentSettings
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.registry.transport import Compare, Endpoint, EtcdTransport, PutOp
from fleetpy.unitfile.unit import parse_unit
from fleetpy.unitmanager import SimulatedUnitManager

RESULTS = Path(__file__).resolve().parent / "results"
AGENTS_PER_CONNECTION = 100


def raw_txn_rate(endpoint: str, prefix: str, count: int = 2000) -> float:
    """Single-key guarded transactions per second from one client, one at a time (etcd's
    own speed here: what the engine's placements/s is compared with)."""
    host, _, port = endpoint.removeprefix("http://").rpartition(":")
    with EtcdTransport([Endpoint(host, int(port))]) as etcd:
        start = time.perf_counter()
        for i in range(count):
            key = f"{prefix}-bench-raw/{i}"
            etcd.txn([Compare.version(key, 0)], [PutOp(key.encode(), b"x")])
        return count / (time.perf_counter() - start)


def rss_kib(pid: int, field: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def wait_until(predicate, timeout: float, interval: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        time.sleep(interval)
    raise SystemExit(f"benchmark timed out after {timeout}s")


def start_agents(config: RegistryConfig, count: int, registries: list[Registry]) -> list[Agent]:
    """`count` simulated agents (m00000...), each with its own lease and watch, sharing one
    gRPC connection per AGENTS_PER_CONNECTION; their registries are added to `registries`
    (the caller closes them). Returns once every agent has registered."""
    agents: list[Agent] = []
    agent_registry: Registry | None = None
    for i in range(count):
        if agent_registry is None or i % AGENTS_PER_CONNECTION == 0:
            agent_registry = Registry(config)
            registries.append(agent_registry)
        agent = Agent(
            agent_registry,
            SimulatedUnitManager(),
            AgentSettings(machine_id=f"m{i:05d}", metadata={"zone": f"z{i % 3}"}, ttl=60),
        )
        agents.append(agent.start())
    for agent in agents:
        agent.ready.wait(60)
    return agents


def stop_agents(agents: list[Agent], registries: list[Registry]) -> None:
    """Tell every simulated agent to stop (without each revoking its lease: etcd goes
    next), then close the registries."""
    for agent in agents:
        agent._stop.set()
        agent._queue.put(("stop", None))
    for reg in registries:
        reg.close()


def write_figures(figures: dict[str, Any], out: Path) -> None:
    """The figures as JSON to `out`, and as a table on stdout."""
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    width = max(map(len, figures))
    print(f"{'figure':<{width}}  value")
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(f"written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=10000)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    # Agents log one line per action; keep the table readable.
    RESULTS.mkdir(exist_ok=True)
    agent_log = open(RESULTS / "agents-bench.log", "w")
    real_stderr, sys.stderr = sys.stderr, agent_log
    server = EtcdServer(extra_args=("--quota-backend-bytes", str(4 * 1024**3))).start()
    engine_proc = None
    agents: list[Agent] = []
    registries: list[Registry] = []
    try:
        config = RegistryConfig(endpoints=(server.endpoint,), prefix="/bench", timeout=30)
        registry = Registry(config)
        registries.append(registry)
        raw_rate = raw_txn_rate(server.endpoint, "/bench")

        # Machines first: one simulated agent per machine, each its own lease and watch.
        print(f"starting {args.machines} simulated agents...", file=real_stderr)
        agents.extend(start_agents(config, args.machines, registries))

        text = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n").serialize()
        unit_hash = parse_unit(text).hash
        names = [f"bench{i:05d}.service" for i in range(args.units)]

        requests_before = grpc_request_count(server.metrics())
        wakeups_before = sum(a.stats.wakeups for a in agents)

        # Submit every unit (desired launched) before the engine runs, through the
        # registry API the CLI uses, so placement throughput is measured on its own.
        t0 = time.perf_counter()
        chunks = [names[i : i + 40] for i in range(0, len(names), 40)]

        def submit(part: list[list[str]]) -> None:
            reg = Registry(config)
            for chunk in part:
                reg.change_units([UnitChange(n, "launched", text, unit_hash) for n in chunk])
            reg.close()

        threads = [threading.Thread(target=submit, args=(chunks[k::4],)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submit_seconds = time.perf_counter() - t0
        requests_after_submit = grpc_request_count(server.metrics())

        env = dict(os.environ, FLEETPY_ENDPOINT=server.endpoint, FLEETPY_ETCD_PREFIX="/bench")
        engine_log = open(RESULTS / "engine-bench.log", "w")
        t_engine = time.perf_counter()
        engine_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetpy",
                "engine",
                "--lease-ttl",
                "10",
                "--reconcile-interval",
                "600",
            ],
            env=env,
            stderr=engine_log,
            stdout=engine_log,
        )
        first_seconds = wait_until(
            lambda: registry.count("schedule") > 0, args.timeout, interval=0.005
        )
        place_seconds = (
            wait_until(
                lambda: registry.count("schedule") >= args.units, args.timeout, interval=0.01
            )
            + first_seconds
        )
        active_seconds = wait_until(lambda: registry.count("state") >= args.units, args.timeout)
        active_seconds += place_seconds
        requests_after = grpc_request_count(server.metrics())
        wakeups = sum(a.stats.wakeups for a in agents) - wakeups_before
        engine_rss = rss_kib(engine_proc.pid)

        # The last unit through the CLI, with everything else running: start → active.
        last = "last.service"
        (RESULTS / last).write_text(text)
        t_last = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "fleetpy", "start", "--no-block", str(RESULTS / last)],
            env=env,
            check=True,
            capture_output=True,
        )
        last_seconds = wait_until(
            lambda: any(
                s.active == "active" for s in registry.list_states().get(last, {}).values()
            ),
            args.timeout,
            interval=0.01,
        )
        (RESULTS / last).unlink()
        del t_engine, t_last

        placements = args.units
        figures = {
            "units": args.units,
            "machines": args.machines,
            "cpu_count": os.cpu_count(),
            "raw_single_key_txn_per_s": round(raw_rate, 1),
            "submit_seconds": round(submit_seconds, 3),
            "placement_seconds": round(place_seconds, 3),
            "placements_per_s": round(placements / place_seconds, 1),
            "placements_per_s_after_first_write": round(
                placements / (place_seconds - first_seconds), 1
            ),
            "engine_start_to_first_placement_seconds": round(first_seconds, 3),
            "placements_per_s_fraction_of_raw_txn_rate": round(
                placements / place_seconds / raw_rate, 2
            ),
            "etcd_requests_per_placement_engine_and_agents": round(
                (requests_after - requests_after_submit) / placements, 3
            ),
            "etcd_requests_per_placement_incl_submit": round(
                (requests_after - requests_before) / placements, 3
            ),
            "agent_wakeups_per_placement": round(wakeups / placements, 3),
            "agent_wakeups_without_own_work": sum(a.stats.empty_wakeups for a in agents),
            "seconds_engine_start_to_all_active": round(active_seconds, 3),
            "seconds_start_no_block_last_unit_to_active": round(last_seconds, 3),
            "engine_rss_mib": round(engine_rss / 1024, 1),
        }
        write_figures(figures, RESULTS / f"engine-{args.units}x{args.machines}.json")
        sys.stderr = real_stderr
    finally:
        if engine_proc is not None:
            engine_proc.terminate()
            engine_proc.wait(timeout=20)
        stop_agents(agents, registries)
        server.stop()


if __name__ == "__main__":
    main()
