"""Simulated agents for the benchmarks: many real `Agent`s (SimulatedUnitManager) in a
few worker processes, each agent with its own lease and its own watches.

    python bench/sim_agents.py --endpoint URL --prefix P --first 0 --count 250 [--ttl 60]

What is harness-only (a real host runs one agent in its own process):
- agents share a process (`--count` of them, 250 by default) and one etcd client per
  `--per-connection` agents (one gRPC channel and one watch stream; each agent still
  sends its own watch requests on it, grants and renews its own lease);
- each worker's GIL switch interval is 50 ms (SWITCH_INTERVAL), not 5;
- they start in waves of `--wave` (each wave registered before the next starts): a
  thousand agents registering at once in one process is a storm of blocking gRPC calls
  and GIL hand-offs that does not converge (at 2,000 agents in one process: load ~300
  and over 10 minutes without all registered), which a real cluster's agents, each on
  its own host, never see.

Protocol (line-oriented JSON, stdout): `{"ready": n, "seconds": s}` once all agents
registered; then on stdin `stats` answers `{"wakeups", "empty_wakeups", "units"}`
(units: machine -> names its unit manager holds), `runs SINCE` answers `{"runs"}`
(machine -> [unit, started, stopped or null] for each time a unit was active there that
started or ended after SINCE, time.monotonic(), one clock for every process here), and
`stop` (or EOF) ends the worker. Agents' logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.states import ActiveState
from fleetpy.unitmanager import Action, SimulatedUnitManager

# Harness-only: threads waiting for the GIL wake every switch interval (5 ms by default)
# to ask for it. With hundreds of agents' threads woken at once in one process (a wave
# of placements), those wake-ups alone saturated both cores (load 600+, etcd calls timing
# out) once the machine was busy; a longer interval cuts them tenfold. The agents' own
# work is I/O-bound and hands the GIL over at every call anyway.
SWITCH_INTERVAL = 0.05
# Workers starting (importing, registering their agents) at once: 50 at once on a busy
# machine starved each other until gRPC's keepalive pings timed out.
STARTING = 4


class RecordingUnitManager(SimulatedUnitManager):
    """A simulated unit manager that keeps when each unit was active here (`runs`): a
    benchmark checks from them that no unit ran on two machines at once, which sampling
    the managers could miss."""

    def __init__(self, start_seconds: float = 0.0) -> None:
        super().__init__(start_seconds)
        self.runs: list[list[Any]] = []  # [unit, started, stopped or None]
        self._open: dict[str, list[Any]] = {}

    def _note(self, name: str, now: float) -> None:
        with self._lock:
            unit = self._units.get(name)
        active = unit is not None and unit.active == ActiveState.ACTIVE
        run = self._open.get(name)
        if active and run is None:
            self._open[name] = [name, now, None]
            self.runs.append(self._open[name])
        elif not active and run is not None:
            run[2] = now
            del self._open[name]

    def execute(self, actions: Sequence[Action]) -> None:
        super().execute(actions)
        now = time.monotonic()
        for name in {action.name for action in actions}:
            self._note(name, now)

    def _started(self, name: str, content_hash: str) -> None:
        super()._started(name, content_hash)
        self._note(name, time.monotonic())

    def runs_since(self, since: float) -> list[list[Any]]:
        return [r for r in self.runs if r[1] >= since or (r[2] is not None and r[2] >= since)]


def machine_id(index: int) -> str:
    return f"m{index:05d}"


def start_agents(
    config: RegistryConfig,
    indexes: Sequence[int],
    registries: list[Registry],
    *,
    ttl: int = 60,
    per_connection: int = 100,
    wave: int = 25,
    start_seconds: float = 0.0,
) -> list[Agent]:
    """Agents for machines `indexes`, each with its own lease and watches, sharing one
    etcd client per `per_connection`; started `wave` at a time. Their registries are
    added to `registries` (the caller closes them)."""
    agents: list[Agent] = []
    registry: Registry | None = None
    for position, index in enumerate(indexes):
        if registry is None or position % per_connection == 0:
            registry = Registry(config)
            registries.append(registry)
        agent = Agent(
            registry,
            RecordingUnitManager(start_seconds),
            AgentSettings(
                machine_id=machine_id(index), metadata={"zone": f"z{index % 3}"}, ttl=ttl
            ),
        )
        agents.append(agent.start())
        if len(agents) % wave == 0 or position == len(indexes) - 1:
            for started in agents[-wave:]:
                if not started.ready.wait(120):
                    raise SystemExit(f"agent {started.machine_id} did not register in 120 s")
    return agents


def stop_agents(agents: Sequence[Agent], registries: Sequence[Registry]) -> None:
    """Tell every agent to stop without revoking its lease (etcd goes next), then close
    the registries."""
    for agent in agents:
        agent._stop.set()
        agent._queue.put(("stop", None))
    for registry in registries:
        registry.close()


def stats(agents: Sequence[Agent]) -> dict[str, Any]:
    return {
        "wakeups": sum(a.stats.wakeups for a in agents),
        "empty_wakeups": sum(a.stats.empty_wakeups for a in agents),
        "units": {a.machine_id: sorted(a.manager.observe()) for a in agents},
    }


def _runs(agent: Agent, since: float) -> list[list[Any]]:
    manager = agent.manager
    return manager.runs_since(since) if isinstance(manager, RecordingUnitManager) else []


@dataclass
class Worker:
    """One worker process of simulated agents, driven over its stdin/stdout."""

    process: subprocess.Popen[str]
    count: int

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"a simulated-agent worker ended (exit {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write("stop\n")
                self.process.stdin.flush()
            except OSError:
                pass
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn_workers(
    endpoint: str,
    prefix: str,
    machines: int,
    log: IO[str],
    *,
    per_process: int = 250,
    ttl: int = 60,
    timeout: float = 600,
    profile: str | None = None,
    start_seconds: float = 0.0,
) -> list[Worker]:
    """Start `machines` simulated agents in worker processes of `per_process` each, and
    return once every one has registered (`profile`: the first worker's, see --profile).
    STARTING workers register at a time, each its agents in waves."""
    workers: list[Worker] = []
    deadline = time.monotonic() + timeout

    def registered(worker: Worker) -> None:
        assert worker.process.stdout is not None
        line = worker.process.stdout.readline()
        if not line or time.monotonic() > deadline:
            raise SystemExit("simulated agents did not all register")

    for first in range(0, machines, per_process):
        count = min(per_process, machines - first)
        if len(workers) >= STARTING:
            registered(workers[-STARTING])
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--endpoint",
                endpoint,
                "--prefix",
                prefix,
                "--first",
                str(first),
                "--count",
                str(count),
                "--ttl",
                str(ttl),
                "--start-seconds",
                str(start_seconds),
                *(["--profile", profile] if profile and not first else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        workers.append(Worker(process, count))
    for worker in workers[-STARTING:]:
        registered(worker)
    return workers


def gather(workers: Sequence[Worker]) -> dict[str, Any]:
    """Every worker's stats, summed (units: merged by machine)."""
    total: dict[str, Any] = {"wakeups": 0, "empty_wakeups": 0, "units": {}}
    for worker in workers:
        answer = worker.ask("stats")
        total["wakeups"] += answer["wakeups"]
        total["empty_wakeups"] += answer["empty_wakeups"]
        total["units"].update(answer["units"])
    return total


def runs_since(workers: Sequence[Worker], since: float) -> dict[str, list[list[Any]]]:
    """Every worker's `runs SINCE` (RecordingUnitManager), merged by machine."""
    merged: dict[str, list[list[Any]]] = {}
    for worker in workers:
        merged.update(worker.ask(f"runs {since!r}")["runs"])
    return merged


def dump_profile(prefix: str) -> None:
    """yappi's figures so far: PREFIX.pstats and the top 40 in PREFIX.txt (dumped at
    each `stats`: before and after placing; the difference is the placing)."""
    import pstats

    import yappi

    yappi.get_func_stats().save(prefix + ".pstats", type="pstat")
    with open(prefix + ".txt", "w") as text:
        stats = pstats.Stats(prefix + ".pstats", stream=text)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ttl", type=int, default=60)
    parser.add_argument("--per-connection", type=int, default=100)
    parser.add_argument("--wave", type=int, default=25)
    parser.add_argument(
        "--profile", help="file prefix: profile this worker (yappi, CPU; pip install yappi)"
    )
    parser.add_argument("--switch-interval", type=float, default=SWITCH_INTERVAL)
    parser.add_argument(
        "--start-seconds", type=float, default=0.0, help="a started unit is activating this long"
    )
    args = parser.parse_args()
    sys.setswitchinterval(args.switch_interval)
    if args.profile:
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start()
    config = RegistryConfig(endpoints=(args.endpoint,), prefix=args.prefix, timeout=30)
    registries: list[Registry] = []
    started = time.perf_counter()
    agents = start_agents(
        config,
        range(args.first, args.first + args.count),
        registries,
        ttl=args.ttl,
        per_connection=args.per_connection,
        wave=args.wave,
        start_seconds=args.start_seconds,
    )
    print(json.dumps({"ready": len(agents), "seconds": time.perf_counter() - started}), flush=True)
    dumps = 0
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                print(json.dumps(stats(agents)), flush=True)
                if args.profile:
                    dumps += 1
                    dump_profile(f"{args.profile}-{dumps}")
            elif command.startswith("runs "):
                since = float(command.split()[1])
                runs = {a.machine_id: _runs(a, since) for a in agents}
                print(json.dumps({"runs": {m: r for m, r in runs.items() if r}}), flush=True)
            elif command == "stop":
                break
    finally:
        stop_agents(agents, registries)


if __name__ == "__main__":
    main()
