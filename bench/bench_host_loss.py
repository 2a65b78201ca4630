"""A host killed: how long until its units are active elsewhere, at TTL 5 and TTL 2.

    python bench/bench_host_loss.py [--ttls 5,2] [--hosts 3] [--units 30]
                                    [--engine-tree DIR] [--output FILE]

For each TTL: real etcd (EtcdServer), --hosts systemd-nspawn hosts (HostPool) whose
agents run at that TTL, the engine as its own process (`fleetpy engine`; with
--engine-tree its code comes from DIR, for A/B runs against another commit), --units
simple units started with the `fleetpy` CLI. Then the host holding the most units is
killed (its init and nspawn, SIGKILL) and, from the kill, the bench follows etcd with
three watches (no polling):

  lease expired:    the killed machine's record deleted (its lease ended)
  placement written: every one of its units scheduled on another machine
  active elsewhere: every one of them reported active on another machine

The lease ends between 2/3 TTL and TTL after the kill (agents renew every TTL/3, the kill
falls anywhere in that period) and etcd checks leases every 0.5 s, so "lease expired"
varies from run to run by design; the engine's own reaction is "active elsewhere" minus
"lease expired". Prints a table and writes bench/results/host-loss.json (with the load
average and CPU count); medians come from bench/median.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import HostPool, ensure_rootfs
from fleetpy.model.events import MachineEvent, ScheduleEvent, StateEvent, WatchBatch
from fleetpy.registry import Registry, RegistryConfig

RESULTS = ROOT / "bench" / "results"
PREFIX = "/bench-host-loss"
SIMPLE_UNIT = "[Service]\nExecStart=/bin/sleep infinity\n"


def log(message: str) -> None:
    print(f"bench_host_loss: {message}", file=sys.stderr, flush=True)


class Tracker:
    """Machines, schedule and states followed by watches from one read; times are
    time.monotonic() when a watch response arrived here."""

    def __init__(self, registry: Registry) -> None:
        self.cond = threading.Condition()
        view = registry.read_view(with_states=True, with_text=False)
        self.machines: set[str] = set(view.machines)
        self.schedule: dict[str, str] = {u: m for u, (m, _) in view.schedule.items()}
        self.active: dict[str, set[str]] = {
            u: {m for m, s in by.items() if s.active == "active"} for u, by in view.states.items()
        }
        # Every time each was seen (a lease lost and renewed before the kill is not it).
        self.machine_gone: dict[str, list[float]] = {}
        self.placed_at: dict[tuple[str, str], list[float]] = {}  # (unit, machine) -> times
        self.active_at: dict[tuple[str, str], list[float]] = {}
        self.errors = 0
        start = view.revision + 1
        self._cancels = [
            registry.watch_machines(self._on_machines, start),
            registry.watch_schedule(self._on_schedule, start),
            registry.watch_states(self._on_states, start),
        ]

    def _apply(self, batch: WatchBatch[Any], each: Callable[[Any, float], None]) -> None:
        now = time.monotonic()
        with self.cond:
            if batch.error is not None:
                self.errors += 1
                log(f"a watch failed: {batch.error!r}")
                return
            for event in batch.events:
                each(event, now)
            self.cond.notify_all()

    def _on_machines(self, batch: WatchBatch[MachineEvent]) -> None:
        def each(event: MachineEvent, now: float) -> None:
            if event.record is None:
                self.machines.discard(event.machine)
                self.machine_gone.setdefault(event.machine, []).append(now)
            else:
                self.machines.add(event.machine)

        self._apply(batch, each)

    def _on_schedule(self, batch: WatchBatch[ScheduleEvent]) -> None:
        def each(event: ScheduleEvent, now: float) -> None:
            if event.entry is not None:
                self.schedule[event.unit] = event.machine
                self.placed_at.setdefault((event.unit, event.machine), []).append(now)
            elif self.schedule.get(event.unit) == event.machine:
                del self.schedule[event.unit]

        self._apply(batch, each)

    def _on_states(self, batch: WatchBatch[StateEvent]) -> None:
        def each(event: StateEvent, now: float) -> None:
            on = self.active.setdefault(event.unit, set())
            if event.state is not None and event.state.active == "active":
                on.add(event.machine)
                self.active_at.setdefault((event.unit, event.machine), []).append(now)
            else:
                on.discard(event.machine)

        self._apply(batch, each)

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise SystemExit(f"bench_host_loss: timed out after {timeout:g}s: {what}")

    def close(self) -> None:
        for cancel in self._cancels:
            cancel()


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_host_loss: timed out after {timeout:g}s: {what}")
        time.sleep(0.1)


def one_ttl(args: argparse.Namespace, ttl: int, workdir: Path) -> dict[str, Any]:
    """A fresh etcd, hosts at TTL and an engine; one host killed; its figures."""
    cleanup: list[Callable[[], None]] = []
    try:
        return _one_ttl(args, ttl, workdir, cleanup)
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:
                log(f"cleanup step failed: {exc!r}")


def _one_ttl(
    args: argparse.Namespace, ttl: int, workdir: Path, cleanup: list[Callable[[], None]]
) -> dict[str, Any]:
    server = EtcdServer(data_dir=workdir / "etcd", log_path=workdir / "etcd.log").start()
    cleanup.append(server.stop)
    pool = HostPool(
        rootfs=ensure_rootfs(), state_root=workdir / "hosts", etcd_endpoints=[server.endpoint]
    )
    cleanup.append(pool.close)
    hosts = pool.start(args.hosts, ttl=ttl, etcd_prefix=PREFIX)
    registry = Registry(RegistryConfig(endpoints=(server.endpoint,), prefix=PREFIX, timeout=30))
    cleanup.append(registry.close)
    wait_until("hosts registered", lambda: len(registry.list_machines()) == args.hosts, 120)

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    env.update(FLEETPY_ENDPOINT=server.endpoint, FLEETPY_ETCD_PREFIX=PREFIX)
    engine_env = dict(env)
    if args.engine_tree:
        engine_env["PYTHONPATH"] = str(args.engine_tree)
    engine_log = workdir / "engine.log"
    with open(engine_log, "ab") as out:
        engine = subprocess.Popen(
            [sys.executable, "-m", "fleetpy", "engine"],
            env=engine_env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )

    def stop_engine() -> None:
        engine.terminate()
        try:
            engine.wait(15)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()

    cleanup.append(stop_engine)
    wait_until("an engine leader", lambda: registry.leader() is not None, 60)

    units = workdir / "units"
    units.mkdir()
    files = []
    for i in range(args.units):
        path = units / f"loss-{i:03d}.service"
        path.write_text(SIMPLE_UNIT)
        files.append(str(path))
    names = [Path(f).name for f in files]
    tracker = Tracker(registry)
    cleanup.append(tracker.close)
    subprocess.run(
        [sys.executable, "-m", "fleetpy", "start", "--no-block", *files],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=300,
    )
    tracker.wait(
        f"{len(names)} units active",
        lambda: all(tracker.active.get(n) for n in names),
        args.timeout,
    )
    # Whatever the start set going has settled (reports, the engine's pass), and the
    # engine's witness has a full window behind it, as in a cluster that has been up.
    time.sleep(max(3.0, 2 * ttl + 1))

    by_machine = {
        h.machine_id: [n for n in names if tracker.schedule.get(n) == h.machine_id] for h in hosts
    }
    victim = max(hosts, key=lambda h: len(by_machine[h.machine_id]))
    moving = by_machine[victim.machine_id]
    gone = victim.machine_id
    log(f"TTL {ttl}: killing {victim.name} holding {len(moving)} of {len(names)} units")
    killed = time.monotonic()
    victim.kill()

    def elsewhere(times: dict[tuple[str, str], list[float]]) -> float | None:
        """When the last of the moving units reached another machine (None: not yet)."""
        last = 0.0
        for unit in moving:
            at = [
                t
                for (u, m), ts in times.items()
                for t in ts
                if u == unit and m != gone and t > killed
            ]
            if not at:
                return None
            last = max(last, min(at))
        return last

    tracker.wait(
        "the killed host's units active elsewhere",
        lambda: elsewhere(tracker.active_at) is not None,
        ttl + args.timeout,
    )
    with tracker.cond:
        expired = next((t for t in tracker.machine_gone.get(gone, []) if t > killed), None)
        placed = elsewhere(tracker.placed_at)
        active = elsewhere(tracker.active_at)
    assert expired is not None and placed is not None and active is not None
    engine_lines = engine_log.read_text(errors="replace").splitlines()
    return {
        "ttl": ttl,
        "units_on_killed_host": len(moving),
        "lease_expired_s": round(expired - killed, 3),
        "placement_written_s": round(placed - killed, 3),
        "active_elsewhere_s": round(active - killed, 3),
        "over_ttl_s": round(active - killed - ttl, 3),
        "after_expiry": {
            "placement_written_s": round(placed - expired, 3),
            "active_s": round(active - expired, 3),
        },
        "placement_to_active_s": round(active - placed, 3),
        "engine_doubtful_losses": sum("machine_loss_doubtful" in line for line in engine_lines),
        "engine_units_moved": sum("event=unit_moved" in line for line in engine_lines),
    }


def table(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for key, r in results.items():
        if not key.startswith("ttl_"):
            continue
        ttl = r["ttl"]
        rows += [
            (
                f"TTL {ttl}: {r['units_on_killed_host']} units active elsewhere (from the kill)",
                f"{r['active_elsewhere_s']:.2f} s (TTL {r['over_ttl_s']:+.2f} s)",
                f"<= {ttl + 0.5:g} s (TTL + 0.5)",
            ),
            (
                f"TTL {ttl}: lease expired (record gone)",
                f"{r['lease_expired_s']:.2f} s",
                f"{2 * ttl / 3:.2f}-{ttl} s + etcd's 0.5 s check",
            ),
            (
                f"TTL {ttl}: placement written, after the expiry",
                f"{r['after_expiry']['placement_written_s']:.2f} s",
                "",
            ),
            (
                f"TTL {ttl}: active elsewhere, after the expiry",
                f"{r['after_expiry']['active_s']:.2f} s",
                "",
            ),
        ]
    load = results["load_average_1m"]
    rows.append(("load average (1 min) before / after", f"{load[0]:.2f} / {load[1]:.2f}", ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ttls", default="5,2", type=lambda s: [int(x) for x in s.split(",") if x])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--units", type=int, default=30)
    parser.add_argument(
        "--engine-tree", type=Path, default=None, help="run the engine from this source tree"
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS / "host-loss.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_host_loss: needs root (systemd-nspawn)")

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    started = time.time()
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    for ttl in args.ttls:
        workdir = Path(tempfile.mkdtemp(prefix=f"fleetpy-bench-loss-{ttl}-"))
        log(f"TTL {ttl}: workdir {workdir}")
        try:
            results[f"ttl_{ttl}"] = one_ttl(args, ttl, workdir)
        finally:
            if not args.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    results["load_average_1m"] = [load_before, os.getloadavg()[0]]

    rows = table(results)
    header = ("figure", "measured", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    document = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "hosts": args.hosts,
        "units": args.units,
        "engine_tree": str(args.engine_tree) if args.engine_tree else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "table": [dict(zip(header, row)) for row in rows],
        **results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
