"""Agents' CPU: N real agent processes (the simulated unit manager) and U units, placed and
reported, against one client's single-key transaction rate measured in the same run.

    python bench/bench_agents.py [--agents 40] [--units 2000] [--profile DIR]

Real etcd (started here), the real engine as its own process, each agent its own
`fleetpy-agent` process (`python -m fleetpy.entrypoints --unit-manager simulated`). The
units are submitted before the engine starts; the clock runs from the engine's start
until every unit is reported active. The figure: units active per second as a multiple
of the raw rate (etcd's speed here). Agents' CPU (user + system, from /proc) is counted
from the submission to the end. `--profile DIR` (needs `pip install yappi`): agent 0
runs under yappi (every thread, CPU clock) and leaves DIR/agent0.pstats and a top-30
text. Prints a table and writes bench/results/agents-<agents>x<units>.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import cpu_seconds, raw_txn_rate, wait_until, write_figures

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitfile.unit import parse_unit

RESULTS = Path(__file__).resolve().parent / "results"


def profiled_agent(out: str, argv: list[str]) -> None:
    """Run the agent (agent_main) under yappi; SIGTERM writes the profile and exits."""
    import pstats

    import yappi

    from fleetpy.entrypoints import agent_main

    yappi.set_clock_type("cpu")
    yappi.start()

    def dump(signum: int, frame: Any) -> None:
        yappi.stop()
        yappi.get_func_stats().save(out + ".pstats", type="pstat")
        with open(out + ".txt", "w") as text:
            stats = pstats.Stats(out + ".pstats", stream=text)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(30)
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    agent_main(argv)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--profile", help="directory: profile agent 0 with yappi")
    parser.add_argument("--profiled-agent", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.profiled_agent:
        profiled_agent(args.profiled_agent, [a for a in rest if a != "--"])
        return

    RESULTS.mkdir(exist_ok=True)
    log = open(RESULTS / "agents-processes.log", "w")
    server = EtcdServer(extra_args=("--quota-backend-bytes", str(4 * 1024**3))).start()
    processes: list[subprocess.Popen[bytes]] = []
    agents: list[subprocess.Popen[bytes]] = []
    scratch = tempfile.TemporaryDirectory(prefix="bench-agents-")
    try:
        config = RegistryConfig(endpoints=(server.endpoint,), prefix="/bench", timeout=30)
        registry = Registry(config)
        raw_rate = raw_txn_rate(server.endpoint, "/bench")
        env = dict(os.environ, FLEETPY_ENDPOINT=server.endpoint, FLEETPY_ETCD_PREFIX="/bench")
        registry.ensure_layout()
        for i in range(args.agents):
            agent_args = [
                "--unit-manager",
                "simulated",
                "--machine-id",
                f"a{i:03d}",
                "--ttl",
                "30",
                "--unit-dir",
                f"{scratch.name}/a{i:03d}",
            ]
            if i == 0 and args.profile:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                command = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--profiled-agent",
                    str(Path(args.profile) / "agent0"),
                    "--",
                    *agent_args,
                ]
            else:
                command = [sys.executable, "-m", "fleetpy.entrypoints", *agent_args]
            agent = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            agents.append(agent)
            processes.append(agent)
        wait_until(lambda: registry.count("machines") >= args.agents, args.timeout)

        text = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n").serialize()
        unit_hash = parse_unit(text).hash
        names = [f"agents{i:05d}.service" for i in range(args.units)]
        cpu_before = sum(cpu_seconds(a.pid) for a in agents)
        chunks = [names[i : i + 40] for i in range(0, len(names), 40)]
        submitters = [
            threading.Thread(
                target=lambda part: [
                    registry.change_units([UnitChange(n, "launched", text, unit_hash) for n in c])
                    for c in part
                ],
                args=(chunks[k::4],),
            )
            for k in range(4)
        ]
        for t in submitters:
            t.start()
        for t in submitters:
            t.join()

        t_engine = time.perf_counter()
        engine = subprocess.Popen(
            [sys.executable, "-m", "fleetpy", "engine", "--reconcile-interval", "600"],
            env=env,
            stdout=log,
            stderr=log,
        )
        processes.append(engine)
        wait_until(lambda: registry.count("schedule") >= args.units, args.timeout, 0.005)
        placed_seconds = time.perf_counter() - t_engine
        wait_until(lambda: registry.count("state") >= args.units, args.timeout, 0.005)
        active_seconds = time.perf_counter() - t_engine
        agents_cpu = sum(cpu_seconds(a.pid) for a in agents) - cpu_before
        figures = {
            "agents": args.agents,
            "units": args.units,
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "raw_single_key_txn_per_s": round(raw_rate, 1),
            "seconds_engine_start_to_all_placed": round(placed_seconds, 3),
            "seconds_engine_start_to_all_active": round(active_seconds, 3),
            "units_active_per_s": round(args.units / active_seconds, 1),
            "units_active_per_s_fraction_of_raw_txn_rate": round(
                args.units / active_seconds / raw_rate, 2
            ),
            "agents_cpu_seconds": round(agents_cpu, 3),
            "agent_cpu_ms_per_unit": round(agents_cpu / args.units * 1000, 3),
        }
        write_figures(figures, RESULTS / f"agents-{args.agents}x{args.units}.json")
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        server.stop()
        scratch.cleanup()


if __name__ == "__main__":
    main()
