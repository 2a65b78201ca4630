"""Drain benchmark ([15] item 1): `fleetpy drain` of one machine, and what the engine pays
while it runs, against a real etcd.

    python bench/bench_drain.py [--units 1000] [--machines 50] [--max-unavailable 1,5] \
        [--start-seconds S]

Real etcd (started here), the real engine as its own process (`fleetpy engine`, as
bench_engine.py starts it, its Prometheus metrics on), one simulated agent per machine
(bench/sim_agents.py: each its own lease and watches; a unit is active at once, or
activating for --start-seconds first, as a slower service or a container). UNITS units
are submitted and placed (spread evenly: UNITS / MACHINES on each), then for each
--max-unavailable N in turn one machine (m00000, then m00001, ...) is drained by the real
CLI, `fleetpy drain MACHINE --max-unavailable N`, run as a process and timed from exec to
exit; then it is uncordoned, the engine left to settle, and the cluster measured idle for
as long as that drain took. Measured in both periods: the engine's CPU (user + system),
its reconcile passes and their summed time (its metrics), etcd's requests (all clients;
and the engine's own), etcd's and the agents' CPU; during the drain the CLI's CPU.
Checked from what each simulated machine ran (RecordingUnitManager: when each unit was
active where, not samples): no unit active on two machines at once, no unit outside the
drained machine stopped, started or moved, every unit of the drained machine elsewhere.

Prints a table and writes bench/results/drain-<units>x<machines>.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from bench_api import free_port
from bench_engine import (
    RESULTS,
    cpu_seconds,
    start_engine,
    submit_units,
    wait_until,
    write_figures,
)
from sim_agents import Worker, machine_id, runs_since, spawn_workers

from fleetpy.client.drain import uncordon
from fleetpy.cluster.etcd import EtcdServer, grpc_request_count
from fleetpy.registry import Registry, RegistryConfig

from support.metrics_text import Samples, scrape, value


def engine_counters(port: int) -> dict[str, float]:
    """The engine's passes, their summed time and its etcd requests, from its metrics."""
    samples: Samples = scrape(port)
    return {
        "passes": value(samples, "fleetpy_engine_passes_total"),
        "pass_seconds": value(samples, "fleetpy_engine_reconcile_seconds_sum"),
        "full_reads": value(samples, "fleetpy_engine_full_reads_total"),
        "etcd_requests": sum(
            v for (name, _), v in samples.items() if name == "fleetpy_etcd_requests_total"
        ),
    }


class Meter:
    """Counters of the processes a period is measured on; `since` gives their growth."""

    def __init__(
        self,
        server: EtcdServer,
        engine: subprocess.Popen[bytes],
        port: int,
        workers: Sequence[Worker],
    ) -> None:
        assert server.process is not None
        self.server, self.etcd_pid, self.engine, self.port = (
            server,
            server.process.pid,
            engine,
            port,
        )
        self.worker_pids = [w.process.pid for w in workers]

    def read(self) -> dict[str, float]:
        return {
            "seconds": time.monotonic(),
            "engine_cpu_seconds": cpu_seconds(self.engine.pid),
            "etcd_cpu_seconds": cpu_seconds(self.etcd_pid),
            "agents_cpu_seconds": sum(map(cpu_seconds, self.worker_pids)),
            "etcd_requests_all_clients": grpc_request_count(self.server.metrics()),
            **{f"engine_{k}": v for k, v in engine_counters(self.port).items()},
        }

    @staticmethod
    def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: round(after[k] - before[k], 3) for k in before}


def settle(port: int, timeout: float, quiet: float = 3.0) -> None:
    """Wait until the engine has made no pass for QUIET seconds."""
    deadline = time.monotonic() + timeout
    last, since = engine_counters(port)["passes"], time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise SystemExit(f"the engine did not settle within {timeout}s")
        time.sleep(0.25)
        now = engine_counters(port)["passes"]
        if now != last:
            last, since = now, time.monotonic()


def placement(registry: Registry) -> dict[str, str]:
    return {u: m for u, (m, _) in registry.read_view(with_states=False).schedule.items()}


def overlaps(runs: dict[str, list[list[Any]]]) -> tuple[int, float]:
    """Units active on two machines at once (from every machine's runs), and the longest
    such overlap in seconds."""
    by_unit: dict[str, list[tuple[str, float, float]]] = {}
    for machine, entries in runs.items():
        for unit, started, stopped in entries:
            end = float("inf") if stopped is None else stopped
            by_unit.setdefault(unit, []).append((machine, started, end))
    twice, longest = 0, 0.0
    for spans in by_unit.values():
        worst = max(
            (
                min(a[2], b[2]) - max(a[1], b[1])
                for i, a in enumerate(spans)
                for b in spans[i + 1 :]
                if a[0] != b[0]
            ),
            default=0.0,
        )
        if worst > 0:
            twice += 1
            longest = max(longest, worst)
    return twice, longest


def drain_one(
    args: argparse.Namespace,
    env: dict[str, str],
    registry: Registry,
    meter: Meter,
    workers: Sequence[Worker],
    machine: str,
    max_unavailable: int,
) -> dict[str, Any]:
    """Drain MACHINE with the CLI; then uncordon it and measure as long idle."""
    before = placement(registry)
    here = {u for u, m in before.items() if m == machine}
    command = [sys.executable, "-m", "fleetpy", "drain", machine]
    command += ["--max-unavailable", str(max_unavailable), "--timeout", str(args.drain_timeout)]
    print(f"draining {machine} ({len(here)} units, max {max_unavailable})...", file=sys.stderr)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = meter.read()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    end = meter.read()
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"fleetpy drain failed ({done.returncode}): {done.stderr[-2000:]}")
    drain = Meter.since(start, end)
    after = placement(registry)
    runs = runs_since(workers, start["seconds"])
    twice, longest = overlaps(runs)
    arrivals = [
        started
        for m, entries in runs.items()
        if m != machine
        for u, started, _ in entries
        if u in here
    ]
    touched_outside = {u for entries in runs.values() for u, _, _ in entries if u not in here}
    moved = {u for u, m in before.items() if after.get(u) != m}
    print(f"drained in {drain['seconds']:.2f}s; idle as long...", file=sys.stderr)

    if not uncordon(registry, machine)[1]:
        raise SystemExit(f"{machine} was not cordoned after its drain")
    settle(meter.port, args.timeout)
    idle_start = meter.read()
    time.sleep(drain["seconds"])
    idle = Meter.since(idle_start, meter.read())

    def per_second(period: dict[str, float], key: str) -> float:
        return round(period[key] / period["seconds"], 3)

    return {
        "machine": machine,
        "units_on_the_machine": len(here),
        "seconds_cli_exec_to_exit": drain["seconds"],
        "seconds_cli_exec_to_last_unit_active_elsewhere": round(
            max(arrivals, default=start["seconds"]) - start["seconds"], 3
        ),
        "cli_cpu_seconds": round(
            after_children.ru_utime
            + after_children.ru_stime
            - children.ru_utime
            - children.ru_stime,
            3,
        ),
        **{f"drain_{k}": v for k, v in drain.items() if k != "seconds"},
        **{f"idle_{k}": v for k, v in idle.items() if k != "seconds"},
        "engine_cpu_drain_over_idle": round(
            drain["engine_cpu_seconds"] / max(idle["engine_cpu_seconds"], 0.01), 1
        ),
        "engine_cpu_share_of_a_core_drain": per_second(drain, "engine_cpu_seconds"),
        "engine_cpu_share_of_a_core_idle": per_second(idle, "engine_cpu_seconds"),
        "engine_seconds_per_pass_drain": round(
            drain["engine_pass_seconds"] / max(drain["engine_passes"], 1), 3
        ),
        "etcd_requests_per_s_drain": per_second(drain, "etcd_requests_all_clients"),
        "etcd_requests_per_s_idle": per_second(idle, "etcd_requests_all_clients"),
        "units_moved": len(moved),
        "units_moved_from_elsewhere": len(moved - here),
        "units_left_on_the_machine": sum(1 for m in after.values() if m == machine),
        "units_started_or_stopped_elsewhere": len(touched_outside),
        "units_active_on_two_machines_at_once": twice,
        "longest_overlap_seconds": round(longest, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--max-unavailable", default="1,5", help="one drain each, in turn")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--drain-timeout", type=float, default=600)
    parser.add_argument(
        "--start-seconds",
        type=float,
        default=0.0,
        help="a unit started on a simulated machine is activating this long before active",
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    limits = [int(n) for n in args.max_unavailable.split(",")]
    if len(limits) > args.machines - 1:
        raise SystemExit("one machine drained per --max-unavailable value: too few machines")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    load_before = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    agent_log = open(RESULTS / "agents-drain.log", "w")
    engine_log = open(RESULTS / "engine-drain.log", "w")
    server = EtcdServer(extra_args=("--quota-backend-bytes", str(4 * 1024**3))).start()
    engine: subprocess.Popen[bytes] | None = None
    workers: list[Worker] = []
    config = RegistryConfig(endpoints=(server.endpoint,), prefix="/bench", timeout=30)
    registry = Registry(config)
    try:
        print(f"starting {args.machines} simulated agents...", file=sys.stderr)
        workers = spawn_workers(
            server.endpoint,
            "/bench",
            args.machines,
            agent_log,
            timeout=args.timeout,
            start_seconds=args.start_seconds,
        )
        print(f"submitting {args.units} units...", file=sys.stderr)
        submit_units(config, [f"bench{i:06d}.service" for i in range(args.units)])
        port = free_port()
        env = dict(
            os.environ,
            FLEETPY_ENDPOINT=server.endpoint,
            FLEETPY_ETCD_PREFIX="/bench",
            FLEETPY_METRICS_LISTEN=f"127.0.0.1:{port}",
        )
        engine = start_engine(env, engine_log)
        env.pop("FLEETPY_METRICS_LISTEN")  # the CLI's
        wait_until(lambda: registry.count("state") >= args.units, args.timeout, interval=0.2)
        wait_until(lambda: _scrapes(port), args.timeout)
        settle(port, args.timeout)
        meter = Meter(server, engine, port, workers)
        figures: dict[str, Any] = {
            "units": args.units,
            "machines": args.machines,
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "start_seconds": args.start_seconds,
        }
        for index, limit in enumerate(limits):
            drained = drain_one(args, env, registry, meter, workers, machine_id(index), limit)
            figures.update((f"max{limit}_{key}", v) for key, v in drained.items())
        figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        slow = f"-start{args.start_seconds:g}s" if args.start_seconds else ""
        out = args.output or RESULTS / f"drain-{args.units}x{args.machines}{slow}.json"
        write_figures(figures, out)
    finally:
        if engine is not None and engine.poll() is None:
            engine.terminate()
            engine.wait(timeout=20)
        for worker in workers:
            worker.stop()
        registry.close()
        server.stop()


def _scrapes(port: int) -> bool:
    try:
        engine_counters(port)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main()
