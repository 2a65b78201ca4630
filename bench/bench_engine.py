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
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetpy.cluster.etcd import EtcdServer, grpc_request_count
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.registry.transport import Compare, Endpoint, EtcdTransport, PutOp
from fleetpy.unitfile.unit import parse_unit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_agents import Worker, gather, spawn_workers

RESULTS = Path(__file__).resolve().parent / "results"


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


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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


def write_figures(figures: dict[str, Any], out: Path) -> None:
    """The figures as JSON to `out`, and as a table on stdout."""
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    width = max(map(len, figures))
    print(f"{'figure':<{width}}  value")
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(f"written to {out}")


def start_engine(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetpy",
            "engine",
            "--lease-ttl",
            str(ENGINE_TTL),
            "--reconcile-interval",
            "600",
        ],
        env=env,
        stderr=log,
        stdout=log,
    )


ENGINE_TTL = 10  # the engines' lease: a killed leader is succeeded after about this long


UNIT_TEXT = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n").serialize()


def submit_units(config: RegistryConfig, names: list[str], text: str = UNIT_TEXT) -> None:
    """Submit units NAMES (desired launched) through the registry API the CLI uses, 40 a
    transaction, from 4 clients at once."""
    unit_hash = parse_unit(text).hash
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


def placed_twice(units: dict[str, list[str]]) -> int:
    """Units that more than one simulated machine's unit manager holds."""
    seen: dict[str, int] = {}
    for names in units.values():
        for name in names:
            seen[name] = seen.get(name, 0) + 1
    return sum(1 for n in seen.values() if n > 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=10000)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--agents-per-process", type=int, default=250, help="simulated agents per worker"
    )
    parser.add_argument(
        "--kill-leader-at",
        type=float,
        default=0.0,
        help="with a second engine standing by, SIGKILL the leader once this fraction "
        "of the units is placed (0: one engine, no kill)",
    )
    parser.add_argument("--profile-agents", help="file prefix: profile the first worker")
    args = parser.parse_args()
    # Terminated: clean up (engines, workers, etcd) as on any other exit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))

    RESULTS.mkdir(exist_ok=True)
    agent_log = open(RESULTS / "agents-bench.log", "w")
    server = EtcdServer(extra_args=("--quota-backend-bytes", str(4 * 1024**3))).start()
    engines: list[subprocess.Popen[bytes]] = []
    workers: list[Worker] = []
    registries: list[Registry] = []
    try:
        config = RegistryConfig(endpoints=(server.endpoint,), prefix="/bench", timeout=30)
        registry = Registry(config)
        registries.append(registry)
        raw_rate = raw_txn_rate(server.endpoint, "/bench")

        # Machines first: one simulated agent per machine, each its own lease and watch.
        print(f"starting {args.machines} simulated agents...", file=sys.stderr)
        t_agents = time.perf_counter()
        workers = spawn_workers(
            server.endpoint,
            "/bench",
            args.machines,
            agent_log,
            per_process=args.agents_per_process,
            timeout=args.timeout,
            profile=args.profile_agents,
        )
        agents_seconds = time.perf_counter() - t_agents

        text = UNIT_TEXT
        names = [f"bench{i:06d}.service" for i in range(args.units)]

        requests_before = grpc_request_count(server.metrics())
        wakeups_before = gather(workers)["wakeups"]

        # Submit every unit (desired launched) before the engine runs, through the
        # registry API the CLI uses, so placement throughput is measured on its own.
        print(f"submitting {args.units} units...", file=sys.stderr)
        t0 = time.perf_counter()
        submit_units(config, names, text)
        submit_seconds = time.perf_counter() - t0
        requests_after_submit = grpc_request_count(server.metrics())

        env = dict(os.environ, FLEETPY_ENDPOINT=server.endpoint, FLEETPY_ETCD_PREFIX="/bench")
        engine_log = open(RESULTS / "engine-bench.log", "w")
        print("engine started; placing...", file=sys.stderr)
        assert server.process is not None
        others = {"etcd": [server.process.pid], "agents": [w.process.pid for w in workers]}
        cpu_before = {k: sum(map(cpu_seconds, pids)) for k, pids in others.items()}
        engines.append(start_engine(env, engine_log))
        first_seconds = wait_until(
            lambda: registry.count("schedule") > 0, args.timeout, interval=0.005
        )
        takeover: dict[str, Any] = {}
        if args.kill_leader_at > 0:
            # The standby starts once the first leads, so the first one leads.
            engines.append(start_engine(env, engine_log))
            goal = int(args.units * args.kill_leader_at)
            wait_until(lambda: registry.count("schedule") >= goal, args.timeout, interval=0.02)
            engines[0].kill()
            t_kill = time.perf_counter()
            engines[0].wait()
            at_kill = registry.count("schedule")
            if at_kill >= args.units:
                raise SystemExit("every unit was placed before the kill: raise the units")
            wait_until(lambda: registry.count("schedule") > at_kill, args.timeout, interval=0.02)
            takeover = {
                "placed_when_the_leader_was_killed": at_kill,
                "seconds_kill_to_new_leader_placing": round(time.perf_counter() - t_kill, 3),
                "engine_lease_ttl": ENGINE_TTL,
            }
        place_seconds = (
            wait_until(
                lambda: registry.count("schedule") >= args.units, args.timeout, interval=0.02
            )
            + first_seconds
        )
        # CPU from the engine's start until every unit is placed: where the cores went.
        cpu = {k: sum(map(cpu_seconds, pids)) - cpu_before[k] for k, pids in others.items()}
        cpu["engine"] = cpu_seconds(engines[-1].pid)
        active_seconds = wait_until(lambda: registry.count("state") >= args.units, args.timeout)
        active_seconds += place_seconds
        requests_after = grpc_request_count(server.metrics())
        after = gather(workers)
        wakeups = after["wakeups"] - wakeups_before
        engine_rss = rss_kib(engines[-1].pid)

        # The last unit through the CLI, with everything else running: start → active.
        last = "last.service"
        (RESULTS / last).write_text(text)
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

        placements = args.units
        held = sum(len(n) for n in after["units"].values())
        figures = {
            "units": args.units,
            "machines": args.machines,
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "agent_processes": len(workers),
            "seconds_to_start_and_register_agents": round(agents_seconds, 3),
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
            "agent_wakeups_without_own_work": after["empty_wakeups"],
            "seconds_engine_start_to_all_active": round(active_seconds, 3),
            "seconds_start_no_block_last_unit_to_active": round(last_seconds, 3),
            "engine_rss_mib": round(engine_rss / 1024, 1),
            "cpu_seconds_while_placing": {k: round(v, 2) for k, v in cpu.items()},
            "units_held_by_agents": held,
            "units_on_two_machines": placed_twice(after["units"]),
            "schedule_entries": registry.count("schedule"),
            **takeover,
        }
        suffix = "-leader-killed" if takeover else ""
        write_figures(figures, RESULTS / f"engine-{args.units}x{args.machines}{suffix}.json")
    finally:
        for engine in engines:
            if engine.poll() is None:
                engine.terminate()
                engine.wait(timeout=20)
        for worker in workers:
            worker.stop()
        for reg in registries:
            reg.close()
        server.stop()


if __name__ == "__main__":
    main()
