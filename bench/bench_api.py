"""API benchmark: `fleetpy api` serving GET /fleet/v1/units with 10,000 units.

    python bench/bench_api.py [--units 10000] [--machines 100] [--clients 20] [--seconds 10]

Real etcd, the real engine and `fleetpy api` as processes of their own, M simulated agents
in this process (so every unit is placed and reports a state). Then, against the API on
TCP (127.0.0.1, --insecure):

- `wrk` (Debian's) with `--clients` connections for `--seconds`: GET /fleet/v1/units (the
  first page: fleet's pages are 100 units) and GET /fleet/v1/state, latency p50/p99 and
  requests/s; and etcd's own count of unary requests (Range/Txn/Put/DeleteRange) during
  that load, which the watch-fed view keeps at zero;
- the real fleetctl v1.0.0 (`$FLEETCTL`, PATH, or ../shared/tools/fleetctl) listing every
  unit, following all 100 pages;
- a unit started from the CLI (`start --no-block`) until the dashboard's event stream
  (/events) shows it active, and until GET /fleet/v1/state does.

Prints a table and writes bench/results/api-<units>.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_engine import rss_kib, wait_until, write_figures
from sim_agents import start_agents, stop_agents

from fleetpy.agent import Agent
from fleetpy.api.dashboard_model import apply_delta
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitfile.unit import parse_unit

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
AGENTS_PER_CONNECTION = 100
UNARY = ("Range", "Txn", "Put", "DeleteRange")


def etcd_unary_requests(metrics_text: str) -> int:
    """Unary requests etcd has handled (reads and writes; watches and keepalives are
    streams, counted only when they end)."""
    total = 0.0
    for line in metrics_text.splitlines():
        match = re.match(r'grpc_server_handled_total\{.*grpc_method="(\w+)".*\} (\S+)', line)
        if match and match.group(1) in UNARY:
            total += float(match.group(2))
    return int(total)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        conn.close()


def fleetctl_binary() -> str | None:
    for candidate in (
        os.environ.get("FLEETCTL"),
        shutil.which("fleetctl"),
        str(ROOT.parent / "shared" / "tools" / "fleetctl"),
        "/work/shared/tools/fleetctl",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _ms(value: str) -> float:
    """wrk's '1.23ms', '850.00us', '1.02s' in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise ValueError(f"wrk latency {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    return round(number * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit], 3)


def run_wrk(url: str, clients: int, seconds: float) -> dict[str, float]:
    threads = min(clients, os.cpu_count() or 1, 4)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = {}
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        match = re.search(rf"^\s+{re.escape(label)}\s+(\S+)", out, re.M)
        if match is None:
            raise SystemExit(f"wrk printed no {label} latency:\n{out}")
        figures[key] = _ms(match.group(1))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if rate is None or total is None:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    figures["requests_per_s"] = float(rate.group(1))
    figures["requests"] = int(total.group(1))
    figures["non_2xx"] = int(errors.group(1)) if errors else 0
    return figures


def read_event(response: Any) -> tuple[str, bytes]:
    """The next server-sent event of a stream: (event, data)."""
    event, data = "", b""
    while True:
        line = response.fp.readline()
        if not line:
            raise SystemExit("/events ended")
        if line.startswith(b"event: "):
            event = line[7:].strip().decode()
        elif line.startswith(b"data: "):
            data = line[6:].rstrip(b"\n")
        elif line == b"\n" and event:
            return event, data


def events_until_active(
    port: int, unit: str, connected: threading.Event, sizes: list[int] | None = None
) -> float:
    """perf_counter() when the dashboard's event stream first shows `unit` active (the
    snapshot, then each delta applied as the page does); `sizes` gets each delta's size."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"/events answered {response.status}")
    document: dict[str, Any] | None = None
    try:
        while True:
            event, data = read_event(response)
            if event == "view":
                document = json.loads(data)
                connected.set()  # the first document: the stream is live
            elif document is not None:
                delta = json.loads(data)
                document = apply_delta(document, delta)
                if sizes is not None:
                    sizes.append(len(data))
                if any(u["name"] == unit and u["active"] == "active" for u in delta["units"]):
                    return time.perf_counter()
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=10000)
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_api: wrk is not installed (apt-get install wrk)")

    RESULTS.mkdir(exist_ok=True)
    log = open(RESULTS / "api-bench.log", "w")
    real_stderr, sys.stderr = sys.stderr, log  # agents log one line per action
    server = EtcdServer(extra_args=("--quota-backend-bytes", str(4 * 1024**3))).start()
    processes: list[subprocess.Popen[bytes]] = []
    agents: list[Agent] = []
    registries: list[Registry] = []
    try:
        config = RegistryConfig(endpoints=(server.endpoint,), prefix="/benchapi", timeout=30)
        registry = Registry(config)
        registries.append(registry)
        print(f"starting {args.machines} simulated agents...", file=real_stderr)
        agents.extend(start_agents(config, range(args.machines), registries))

        text = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n").serialize()
        unit_hash = parse_unit(text).hash
        names = [f"api{i:05d}.service" for i in range(args.units)]
        print(f"submitting {args.units} units...", file=real_stderr)
        for start in range(0, len(names), 40):
            chunk = names[start : start + 40]
            registry.change_units([UnitChange(n, "launched", text, unit_hash) for n in chunk])

        env = dict(os.environ, FLEETPY_ENDPOINT=server.endpoint, FLEETPY_ETCD_PREFIX="/benchapi")
        fleetpy = [sys.executable, "-m", "fleetpy"]
        processes.append(
            subprocess.Popen(
                [*fleetpy, "engine", "--reconcile-interval", "600"],
                env=env,
                stdout=log,
                stderr=log,
            )
        )
        print("waiting until every unit is active...", file=real_stderr)
        wait_until(lambda: registry.count("state") >= args.units, args.timeout, interval=0.2)

        port = free_port()
        api = subprocess.Popen(
            [*fleetpy, "api", "--listen", f"127.0.0.1:{port}", "--insecure"],
            env=env,
            stdout=log,
            stderr=log,
        )
        processes.append(api)

        def answering() -> bool:
            try:
                return get_json(port, "/fleet/v1/machines")[0] == 200
            except OSError:
                return False

        api_start_seconds = wait_until(answering, 120, interval=0.02)

        # every page once, the way fleetctl list-unit-files walks them
        t_pages = time.perf_counter()
        listed, token = 0, ""
        while True:
            status, body = get_json(
                port, "/fleet/v1/units" + (f"?nextPageToken={token}" if token else "")
            )
            assert status == 200, status
            listed += len(body.get("units", []))
            token = body.get("nextPageToken", "")
            if not token:
                break
        all_pages_seconds = time.perf_counter() - t_pages
        if listed != args.units:
            raise SystemExit(f"the API listed {listed} units, expected {args.units}")

        print(f"wrk: {args.clients} clients, {args.seconds:g}s per route...", file=real_stderr)
        loads: dict[str, dict[str, float]] = {}
        etcd_during: dict[str, int] = {}
        for route in ("/fleet/v1/units", "/fleet/v1/state"):
            before = etcd_unary_requests(server.metrics())
            loads[route] = run_wrk(f"http://127.0.0.1:{port}{route}", args.clients, args.seconds)
            etcd_during[route] = etcd_unary_requests(server.metrics()) - before

        figures: dict[str, Any] = {
            "units": args.units,
            "machines": args.machines,
            "clients": args.clients,
            "cpu_count": os.cpu_count(),
            "api_start_to_first_answer_seconds": round(api_start_seconds, 3),
            "all_pages_python_client_seconds": round(all_pages_seconds, 3),
        }
        for route, key in (("/fleet/v1/units", "get_units"), ("/fleet/v1/state", "get_state")):
            figures[f"{key}_p50_ms"] = loads[route]["p50_ms"]
            figures[f"{key}_p99_ms"] = loads[route]["p99_ms"]
            figures[f"{key}_requests_per_s"] = loads[route]["requests_per_s"]
            figures[f"{key}_non_2xx"] = loads[route]["non_2xx"]
            figures[f"{key}_etcd_requests_during_load"] = etcd_during[route]

        fleetctl = fleetctl_binary()
        if fleetctl is not None:
            endpoint = f"http://127.0.0.1:{port}"
            for verb in ("list-unit-files", "list-units"):
                t_ctl = time.perf_counter()
                done = subprocess.run(
                    [fleetctl, "--driver=API", f"--endpoint={endpoint}", verb, "--no-legend"],
                    capture_output=True,
                    text=True,
                )
                if done.returncode != 0:
                    raise SystemExit(f"fleetctl {verb} failed: {done.stderr.strip()}")
                out = done.stdout
                seconds = time.perf_counter() - t_ctl
                rows = len(out.splitlines())
                if rows != args.units:
                    raise SystemExit(f"fleetctl {verb} printed {rows} rows")
                figures[f"fleetctl_{verb.replace('-', '_')}_seconds"] = round(seconds, 3)

        # start -> active, seen by the dashboard's stream and by GET /state
        last = "last.service"
        unit_file = RESULTS / last
        unit_file.write_text(text)
        connected = threading.Event()
        dashboard: dict[str, float] = {}

        def watch_dashboard() -> None:
            dashboard["active_at"] = events_until_active(port, last, connected)

        watcher = threading.Thread(target=watch_dashboard, daemon=True)
        watcher.start()
        if not connected.wait(30):
            raise SystemExit("the dashboard's event stream sent nothing")
        t_start = time.perf_counter()
        subprocess.run(
            [*fleetpy, "start", "--no-block", str(unit_file)],
            env=env,
            check=True,
            capture_output=True,
        )
        cli_seconds = time.perf_counter() - t_start  # the CLI process, start to exit

        def state_active() -> bool:
            status, body = get_json(port, f"/fleet/v1/state?unitName={last}")
            states = body.get("states", []) if status == 200 else []
            return any(s.get("systemdActiveState") == "active" for s in states)

        wait_until(state_active, 60, interval=0.01)
        api_active_seconds = time.perf_counter() - t_start
        watcher.join(60)
        unit_file.unlink()
        if "active_at" not in dashboard:
            raise SystemExit("the dashboard never showed the unit active")
        figures["start_no_block_to_dashboard_active_seconds"] = round(
            dashboard["active_at"] - t_start, 3
        )
        figures["start_no_block_to_api_state_active_seconds"] = round(api_active_seconds, 3)
        figures["of_which_cli_process_seconds"] = round(cli_seconds, 3)
        figures["api_rss_mib"] = round(rss_kib(api.pid) / 1024, 1)

        write_figures(figures, RESULTS / f"api-{args.units}.json")
    finally:
        sys.stderr = real_stderr
        for proc in reversed(processes):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        stop_agents(agents, registries)
        server.stop()


if __name__ == "__main__":
    main()
