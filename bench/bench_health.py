"""A container turning unhealthy: how soon its agent restarts it in place, and how soon it
is listed healthy again.

    python bench/bench_health.py [--units 3] [--interval 1s] [--output FILE]

Real etcd (EtcdServer), one systemd-nspawn host with the machine's dockerd, the engine as
its own process, --units container units (HealthCmd=test -e /tmp/ok, HealthInterval=
--interval, HealthOnFailure= restart by default) started with the `fleetpy` CLI. Then,
for every unit at once, `docker exec rm /tmp/ok`; the bench follows docker's events
(health_status) and the units' states in etcd (a watch), no polling:

  docker unhealthy:   docker's health_status: unhealthy for the container (docker's part:
                      3 failed checks, about 3 intervals)
  restart seen:       the unit reported not active any more (deactivating/activating)
                      after that, in etcd: the agent's part, from docker's event
  healthy again:      the unit reported active with health "healthy" again: docker stop,
                      a new container, its start and first passed check

Times are time.monotonic() when the line or the watch response arrived here. Prints a
table and writes bench/results/health.json (with the load average and CPU count);
medians come from bench/median.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
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
from fleetpy.cluster.nspawn import (
    AGENT_UNIT,
    HostPool,
    ensure_busybox_image,
    ensure_dockerd,
    ensure_rootfs,
)
from fleetpy.model.events import StateEvent, WatchBatch
from fleetpy.registry import Registry, RegistryConfig

RESULTS = ROOT / "bench" / "results"
PREFIX = "/bench-health"
UNIT = """\
[Container]
Image={image}
Exec=sh -c "touch /tmp/ok; exec sleep 100000"
HealthCmd=test -e /tmp/ok
HealthInterval={interval}
StopTimeout=2
"""


def log(message: str) -> None:
    print(f"bench_health: {message}", file=sys.stderr, flush=True)


class Seen:
    """Docker's health events and the units' reported states, with when they arrived."""

    def __init__(self, registry: Registry, containers: dict[str, str]) -> None:
        self.cond = threading.Condition()
        self.containers = containers  # container -> unit
        self.unhealthy: dict[str, float] = {}  # unit -> docker's first unhealthy
        self.states: dict[str, list[tuple[float, str, str]]] = {}  # unit -> (t, active, health)
        revision = registry.read_view(with_states=False).revision
        self._cancel = registry.watch_states(self._on_states, revision + 1)
        self._events = subprocess.Popen(
            [
                *("docker", "events", "--filter=type=container", "--filter=event=health_status"),
                *("--format", "{{.Action}} {{.Actor.Attributes.name}}"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_events, daemon=True).start()

    def _read_events(self) -> None:
        assert self._events.stdout is not None
        for line in self._events.stdout:
            now = time.monotonic()
            action, _, name = line.strip().rpartition(" ")
            unit = self.containers.get(name)
            if unit is not None and action == "health_status: unhealthy":
                with self.cond:
                    self.unhealthy.setdefault(unit, now)
                    self.cond.notify_all()

    def _on_states(self, batch: WatchBatch[StateEvent]) -> None:
        now = time.monotonic()
        with self.cond:
            for event in batch.events:
                if event.state is not None:
                    self.states.setdefault(event.unit, []).append(
                        (now, event.state.active, event.state.health)
                    )
            self.cond.notify_all()

    def after(self, unit: str, since: float, test: Callable[[str, str], bool]) -> float | None:
        return next((t for t, a, h in self.states.get(unit, []) if t > since and test(a, h)), None)

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise SystemExit(f"bench_health: timed out after {timeout:g}s: {what}")

    def close(self) -> None:
        self._cancel()
        self._events.terminate()
        self._events.wait()


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_health: timed out after {timeout:g}s: {what}")
        time.sleep(0.1)


def run(
    args: argparse.Namespace, workdir: Path, cleanup: list[Callable[[], object]]
) -> dict[str, Any]:
    ensure_dockerd()
    image = ensure_busybox_image()
    server = EtcdServer(data_dir=workdir / "etcd", log_path=workdir / "etcd.log").start()
    cleanup.append(server.stop)
    pool = HostPool(
        rootfs=ensure_rootfs(), state_root=workdir / "hosts", etcd_endpoints=[server.endpoint]
    )
    cleanup.append(pool.close)
    (host,) = pool.start(1, etcd_prefix=PREFIX)
    registry = Registry(RegistryConfig(endpoints=(server.endpoint,), prefix=PREFIX, timeout=30))
    cleanup.append(registry.close)
    wait_until("the host registered", lambda: len(registry.list_machines()) == 1, 120)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    env.update(FLEETPY_ENDPOINT=server.endpoint, FLEETPY_ETCD_PREFIX=PREFIX)
    with open(workdir / "engine.log", "ab") as out:
        engine = subprocess.Popen(
            [sys.executable, "-m", "fleetpy", "engine"],
            env=env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )

    def stop_engine() -> None:
        engine.terminate()
        engine.wait(15)

    cleanup.append(stop_engine)
    wait_until("an engine leader", lambda: registry.leader() is not None, 60)

    names = [f"health-{i:02d}.service" for i in range(args.units)]
    containers = {f"fleetpy-health-{i:02d}-{host.machine_id}": n for i, n in enumerate(names)}
    files = []
    for name in names:
        path = workdir / name
        path.write_text(UNIT.format(image=image, interval=args.interval))
        files.append(str(path))
    seen = Seen(registry, containers)
    cleanup.append(seen.close)
    subprocess.run(
        [sys.executable, "-m", "fleetpy", "start", "--block-attempts", "120", *files],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=300,
    )
    seen.wait(
        "every unit listed healthy",
        lambda: all(seen.after(n, 0, lambda a, h: h == "healthy") for n in names),
        args.timeout,
    )
    broken = time.monotonic()
    for container in containers:
        subprocess.run(["docker", "exec", container, "rm", "/tmp/ok"], check=True)

    def back(name: str) -> float | None:
        restarted = seen.after(name, seen.unhealthy.get(name, broken), lambda a, h: a != "active")
        if restarted is None:
            return None
        return seen.after(name, restarted, lambda a, h: a == "active" and h == "healthy")

    seen.wait(
        "every unit restarted and healthy again",
        lambda: all(back(n) is not None for n in names),
        args.timeout,
    )
    with seen.cond:
        rows = []
        for name in names:
            unhealthy = seen.unhealthy[name]
            restarted = seen.after(name, unhealthy, lambda a, h: a != "active")
            healthy = back(name)
            assert restarted is not None and healthy is not None
            rows.append(
                {
                    "docker_unhealthy_s": unhealthy - broken,
                    "restart_seen_s": restarted - unhealthy,
                    "healthy_again_s": healthy - unhealthy,
                }
            )
    journal = host.journal(AGENT_UNIT, lines=5000)
    return {
        "per_unit": rows,
        "docker_unhealthy_s": round(statistics.median(r["docker_unhealthy_s"] for r in rows), 3),
        "restart_seen_s": round(statistics.median(r["restart_seen_s"] for r in rows), 3),
        "healthy_again_s": round(statistics.median(r["healthy_again_s"] for r in rows), 3),
        "restarts_logged": journal.count("event=unit_unhealthy_restart"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=3)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--output", type=Path, default=RESULTS / "health.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_health: needs root (systemd-nspawn)")

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    started = time.time()
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="fleetpy-bench-health-"))
    cleanup: list[Callable[[], object]] = []
    try:
        results = run(args, workdir, cleanup)
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:
                log(f"cleanup step failed: {exc!r}")
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_average_1m"] = [load_before, os.getloadavg()[0]]
    rows = [
        ("docker marks it unhealthy (from the file's removal)", results["docker_unhealthy_s"]),
        ("restart seen in etcd (from docker's event)", results["restart_seen_s"]),
        ("listed healthy again (from docker's event)", results["healthy_again_s"]),
    ]
    for label, value in rows:
        print(f"{label:55} {value:.2f} s")
    load = results["load_average_1m"]
    print(f"{'load average (1 min) before / after':55} {load[0]:.2f} / {load[1]:.2f}")
    document = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "units": args.units,
        "interval": args.interval,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        **results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
