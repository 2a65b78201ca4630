"""Readers at scale: `list-units`, `list-unit-files`, `fleetpy api` and its dashboard with
100,000 units on 5,000 machines (issue [14] items 5 and 6).

    python bench/bench_api_scale.py [--units 100000] [--machines 5000] [--clients 20]
        [--seconds 10] [--rss-units 10000] [--code DIR] [--output FILE]

A real etcd started here; the cluster's records written straight through the registry
(bench/api_seed.py: machine records under one lease, units each with a text of its own,
each placed and reported active; no agent or engine runs, so nothing moves but what the
benchmark changes). Then, each reader as its own process:

- `fleetpy list-units` and `list-unit-files`, CLI start included, output to a pipe;
- `fleetpy api` on TCP: start to first answer; `wrk` on GET /fleet/v1/units (the first
  page) for `--seconds`, quiet and then with one unit's state changing 10 times a second
  (each change a new view: pages encoded again); every page once, as fleetctl walks them;
- its dashboard: the first snapshot's size and time, then 5 state changes, each timed
  from the write until the event stream's delta shows it, and each delta's size;
- `fleetpy api` RSS (VmHWM) at `--units`, and in a second prefix of `--rss-units` units
  on `--rss-units / 20` machines.

`--code DIR` runs the readers from another checkout (the same command on an older commit,
alternated with this one). Prints a table and writes bench/results/api-<units>.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_seed import seed, set_active, unit_name
from bench_api import free_port, get_json, read_event, run_wrk
from bench_engine import rss_kib, wait_until, write_figures

from fleetpy.api.dashboard_model import apply_delta
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.registry import Registry, RegistryConfig

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


class Readers:
    """The fleetpy commands under test, from this checkout or `--code DIR`."""

    def __init__(self, endpoint: str, code: Path) -> None:
        self.code = code
        self.env = dict(
            os.environ,
            FLEETPY_ENDPOINT=endpoint,
            FLEETPY_REQUEST_TIMEOUT="120",
            PYTHONPATH=str(code),
        )

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fleetpy", *args]

    def run(self, prefix: str, *args: str) -> tuple[float, int]:
        """(seconds, lines printed) of one CLI command, stdout to a pipe."""
        began = time.perf_counter()
        done = subprocess.run(
            self.command(*args),
            env=dict(self.env, FLEETPY_ETCD_PREFIX=prefix),
            cwd=self.code,
            capture_output=True,
        )
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {done.stderr.decode()[-500:]}")
        return seconds, done.stdout.count(b"\n")

    def api(self, prefix: str, port: int, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command("api", "--listen", f"127.0.0.1:{port}", "--insecure"),
            env=dict(self.env, FLEETPY_ETCD_PREFIX=prefix),
            cwd=self.code,
            stdout=log,
            stderr=log,
        )


def answering(port: int) -> bool:
    try:
        return get_json(port, "/fleet/v1/machines")[0] == 200
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def all_pages(port: int) -> tuple[float, int]:
    began = time.perf_counter()
    listed, token = 0, ""
    while True:
        path = "/fleet/v1/units" + (f"?nextPageToken={token}" if token else "")
        status, body = get_json(port, path)
        if status != 200:
            raise SystemExit(f"GET {path}: {status}")
        listed += len(body.get("units", []))
        token = body.get("nextPageToken", "")
        if not token:
            return time.perf_counter() - began, listed


class Events:
    """The dashboard's event stream, read in a thread as the page reads it."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.began = time.perf_counter()
        self.conn.request("GET", "/events")
        self.response = self.conn.getresponse()
        self.document: dict[str, Any] | None = None
        self.snapshot_bytes = 0
        self.snapshot_seconds = 0.0
        self.deltas: list[tuple[float, int, dict[str, Any]]] = []  # (when, size, delta)
        self.changed = threading.Condition()
        self.snapshots = 0
        self.error: BaseException | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                event, data = read_event(self.response)
                with self.changed:
                    if event == "view":
                        self.document = json.loads(data)
                        self.snapshots += 1
                        if self.snapshots == 1:
                            self.snapshot_bytes = len(data)
                            self.snapshot_seconds = time.perf_counter() - self.began
                        else:  # a server that sends whole snapshots (before deltas)
                            change = {"units": self.document["units"]}
                            self.deltas.append((time.perf_counter(), len(data), change))
                    elif self.document is not None:
                        delta = json.loads(data)
                        self.document = apply_delta(self.document, delta)
                        self.deltas.append((time.perf_counter(), len(data), delta))
                    self.changed.notify_all()
        except (OSError, SystemExit, ValueError) as exc:
            self.error = exc
            with self.changed:
                self.changed.notify_all()

    def wait(self, done: Any, timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        with self.changed:
            while not done():
                left = deadline - time.perf_counter()
                if left <= 0 or self.error is not None:
                    raise SystemExit(f"the dashboard's stream did not show it ({self.error})")
                self.changed.wait(left)
        return time.perf_counter()

    def close(self) -> None:
        self.conn.close()


def churn(registry: Registry, machines: int, lease: int, stop_event: threading.Event) -> int:
    """One unit's state flipping 10 times a second until `stop_event`; returns the count."""
    count = 0
    while not stop_event.wait(0.1):
        set_active(registry, [1], machines, lease, "active" if count % 2 else "failed")
        count += 1
    set_active(registry, [1], machines, lease, "active")
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--machines", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rss-units", type=int, default=10_000)
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--output", type=Path, help="default: bench/results/api-UNITS.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_api_scale: wrk is not installed (apt-get install wrk)")
    RESULTS.mkdir(exist_ok=True)
    log = open(RESULTS / "api-scale-bench.log", "w")
    server = EtcdServer(extra_args=("--quota-backend-bytes", str(8 * 1024**3))).start()
    figures: dict[str, Any] = {
        "units": args.units,
        "machines": args.machines,
        "clients": args.clients,
        "cpu_count": os.cpu_count(),
        "code": str(args.code),
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        prefix = "/scale"
        config = RegistryConfig(endpoints=(server.endpoint,), prefix=prefix, timeout=120)
        registry = Registry(config)
        print(f"writing {args.units} units on {args.machines} machines...", file=sys.stderr)
        began = time.perf_counter()
        lease = seed(registry, args.units, args.machines)
        figures["seed_seconds"] = round(time.perf_counter() - began, 1)
        readers = Readers(server.endpoint, args.code)

        for verb in ("list-units", "list-unit-files"):
            seconds, lines = readers.run(prefix, verb)
            if lines != args.units + 1:
                raise SystemExit(f"{verb} printed {lines} lines, expected {args.units + 1}")
            figures[f"{verb.replace('-', '_')}_seconds"] = round(seconds, 3)

        port = free_port()
        began = time.perf_counter()
        api = readers.api(prefix, port, log)
        processes.append(api)
        wait_until(lambda: answering(port), 600, interval=0.05)
        figures["api_start_to_first_answer_seconds"] = round(time.perf_counter() - began, 3)
        seconds, listed = all_pages(port)
        if listed != args.units:
            raise SystemExit(f"the API listed {listed} units, expected {args.units}")
        figures["api_all_pages_seconds"] = round(seconds, 3)

        url = f"http://127.0.0.1:{port}/fleet/v1/units"
        quiet = run_wrk(url, args.clients, args.seconds)
        stop_churn = threading.Event()
        changes: list[int] = []
        churner = threading.Thread(
            target=lambda: changes.append(churn(registry, args.machines, lease, stop_churn))
        )
        churner.start()
        busy = run_wrk(url, args.clients, args.seconds)
        stop_churn.set()
        churner.join()
        for label, load in (("quiet", quiet), ("changing", busy)):
            figures[f"get_units_{label}_p50_ms"] = load["p50_ms"]
            figures[f"get_units_{label}_p99_ms"] = load["p99_ms"]
            figures[f"get_units_{label}_requests_per_s"] = load["requests_per_s"]
            figures[f"get_units_{label}_non_2xx"] = load["non_2xx"]
        figures["state_changes_during_changing_run"] = changes[0] if changes else 0

        events = Events(port)
        events.wait(lambda: events.document is not None, 300)
        figures["dashboard_snapshot_mib"] = round(events.snapshot_bytes / 2**20, 2)
        figures["dashboard_snapshot_seconds"] = round(events.snapshot_seconds, 3)
        latencies, sizes = [], []
        for round_ in range(5):
            index = 10 + round_
            name = unit_name(index)
            seen = len(events.deltas)
            active = "failed"  # each round another unit, seeded active
            began = time.perf_counter()
            set_active(registry, [index], args.machines, lease, active)

            def shown(name: str = name, active: str = active, seen: int = seen) -> bool:
                return any(
                    u["name"] == name and u["active"] == active
                    for _, _, delta in events.deltas[seen:]
                    for u in delta["units"]
                )

            latencies.append(events.wait(shown, 60) - began)
            sizes.extend(size for _, size, _ in events.deltas[seen:])
            time.sleep(0.2)
        figures["dashboard_change_to_delta_seconds_median"] = round(statistics.median(latencies), 3)
        figures["dashboard_change_to_delta_seconds_max"] = round(max(latencies), 3)
        figures["dashboard_delta_bytes_max"] = max(sizes)
        figures["dashboard_snapshots_sent"] = events.snapshots
        events.close()
        figures[f"api_rss_mib_at_{args.units}"] = round(rss_kib(api.pid) / 1024, 1)
        stop(api)

        # RSS at --rss-units: a second prefix, a fresh server
        small = "/rss"
        small_config = RegistryConfig(endpoints=(server.endpoint,), prefix=small, timeout=120)
        small_registry = Registry(small_config)
        seed(small_registry, args.rss_units, max(1, args.rss_units // 20))
        port = free_port()
        api = readers.api(small, port, log)
        processes.append(api)
        wait_until(lambda: answering(port), 600, interval=0.05)
        all_pages(port)
        get_json(port, "/fleet/v1/state")
        small_events = Events(port)
        small_events.wait(lambda: small_events.document is not None, 300)
        small_events.close()
        time.sleep(1)
        figures[f"api_rss_mib_at_{args.rss_units}"] = round(rss_kib(api.pid) / 1024, 1)
        stop(api)
        write_figures(figures, args.output or RESULTS / f"api-{args.units}.json")
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)
        server.stop()


if __name__ == "__main__":
    main()
