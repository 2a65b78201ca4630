"""Reconnect benchmark: how soon long-lived etcd clients work again after an outage.

    python bench/bench_reconnect.py [--outages 5,20,60] [--runs 3] [--transports 5]
                                    [--baseline] [--pool-cost 1000]

Per outage and run: a real etcd (started here), several long-lived EtcdTransports in
this process, each with a watch and a thread calling range() in a loop; etcd is
SIGKILLed, kept down for the outage, restarted on the same data dir and ports. Measured
from the moment etcd reports healthy again (negative = before that, clamped to 0):
  longlived_max   the last long-lived transport's first successful call
  fresh           a transport created right then, in the same process
  watch           watch() confirmed again on a long-lived transport
--baseline adds the same measurement for raw gRPC channels with gRPC's default
options (what pyetcd's client builds). --pool-cost N measures N transports (a call and
a watch each) in a child process with the global and with a local subchannel pool:
TCP connections, file descriptors, threads, RSS.

Prints a table (median of runs) and writes bench/results/reconnect.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from pyetcd import etcdrpc  # type: ignore[import-untyped]

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.registry import transport as transport_module
from fleetpy.registry.transport import Endpoint, EtcdError, EtcdTransport, WatchEnded, WatchResponse

RESULTS = Path(__file__).resolve().parent / "results"
KEY = "/bench-reconnect/k"


def _endpoint(server: EtcdServer) -> Endpoint:
    return Endpoint("127.0.0.1", server.client_port)


class _Poller:
    """Calls `call` in a loop on its own thread; remembers the first success after `armed`."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.call = call
        self.armed = threading.Event()
        self.first_ok: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            armed = self.armed.is_set()
            try:
                self.call()
            except (EtcdError, grpc.RpcError):
                continue
            if armed and self.first_ok is None:
                self.first_ok = time.monotonic()
            time.sleep(0.01)


def _outage(server: EtcdServer, pollers: list[_Poller], outage: float) -> tuple[float, float]:
    """Kill etcd, wait, restart; returns (listening_at, healthy_at) in monotonic time."""
    server.kill()
    for poller in pollers:
        poller.thread.start()
    time.sleep(outage)
    for poller in pollers:
        poller.armed.set()
    server.restart(wait=False)
    while True:  # etcd accepts connections ~1-2 s before it reports healthy
        try:
            socket.create_connection(("127.0.0.1", server.client_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.005)
    listening = time.monotonic()
    server.wait_healthy(30)
    return listening, time.monotonic()


def _finish(pollers: list[_Poller], healthy: float, timeout: float = 60) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.first_ok is None for p in pollers):
        time.sleep(0.01)
    for poller in pollers:
        poller.stop.set()
    for poller in pollers:
        poller.thread.join()
    return [
        max(0.0, (p.first_ok if p.first_ok is not None else float("inf")) - healthy)
        for p in pollers
    ]


def run_transport(outage: float, count: int) -> dict[str, float]:
    with EtcdServer() as server:
        clients = [EtcdTransport([_endpoint(server)], timeout=1.0) for _ in range(count)]
        ended = threading.Semaphore(0)

        def on_watch(item: WatchResponse | WatchEnded) -> None:
            if isinstance(item, WatchEnded):
                ended.release()

        for client in clients:
            client.put(KEY, "x")
            client.watch(KEY, None, None, on_watch)
        pollers = [_Poller(functools.partial(client.range, KEY)) for client in clients]
        listening, healthy = _outage(server, pollers, outage)
        fresh = EtcdTransport([_endpoint(server)], timeout=10.0)
        fresh.range(KEY)
        fresh_s = time.monotonic() - healthy
        fresh.close()
        # the long-lived watch streams broke with the outage: a new watch() must work
        watch_started = time.monotonic()
        clients[0].watch(KEY, None, None, on_watch)
        watch_s = max(0.0, time.monotonic() - healthy)
        watch_call_s = time.monotonic() - watch_started
        latencies = _finish(pollers, healthy)
        watches_ended = sum(ended.acquire(timeout=5) for _ in clients)
        for client in clients:
            client.close()
    return {
        "longlived_max": max(latencies),
        "longlived_median": statistics.median(latencies),
        "fresh": max(0.0, fresh_s),
        "watch": watch_s,
        "watch_call": watch_call_s,
        "listening_to_healthy": healthy - listening,
        "longlived_max_after_listening": max(latencies) + healthy - listening,
        "watches_ended": float(watches_ended),
    }


def run_baseline(outage: float, count: int) -> dict[str, float]:
    """Raw gRPC channels, default options: what the registry had before the transport."""
    with EtcdServer() as server:
        target = _endpoint(server).target
        channels = [grpc.insecure_channel(target) for _ in range(count)]
        request = etcdrpc.RangeRequest(key=KEY.encode())
        stubs = [etcdrpc.KVStub(channel) for channel in channels]
        for stub in stubs:
            stub.Range(request, timeout=5)
        pollers = [_Poller(functools.partial(stub.Range, request, timeout=1.0)) for stub in stubs]
        listening, healthy = _outage(server, pollers, outage)
        fresh = grpc.insecure_channel(target)
        fresh_s = float("inf")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # retried like a caller would
            try:
                etcdrpc.KVStub(fresh).Range(request, timeout=1.0)
                fresh_s = time.monotonic() - healthy
                break
            except grpc.RpcError:
                time.sleep(0.01)
        latencies = _finish(pollers, healthy)
        fresh.close()
        for channel in channels:
            channel.close()
    return {
        "longlived_max": max(latencies),
        "longlived_median": statistics.median(latencies),
        "fresh": max(0.0, fresh_s),
        "listening_to_healthy": healthy - listening,
        "longlived_max_after_listening": max(latencies) + healthy - listening,
    }


# ----------------------------------------------------------------------------- pool cost


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _fd_targets() -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the listing's own descriptor, already closed
    return targets


def _tcp_to(port: int, fd_targets: list[str]) -> int:
    """This process's TCP connections to `port` (sockets matched by inode)."""
    inodes = {t[len("socket:[") : -1] for t in fd_targets if t.startswith("socket:[")}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                count += 1
    return count


def pool_probe(port: int, count: int, local: bool) -> dict[str, Any]:
    """Child process: `count` transports, one call and one watch each."""
    if local:
        transport_module.CHANNEL_OPTIONS = (
            *transport_module.CHANNEL_OPTIONS,
            ("grpc.use_local_subchannel_pool", 1),
        )
    rss_before = _proc_status("VmRSS")
    started = time.monotonic()
    clients = [EtcdTransport([Endpoint("127.0.0.1", port)], timeout=30.0) for _ in range(count)]
    for client in clients:
        client.range(KEY)
        client.watch(KEY, None, None, lambda item: None)
    seconds = time.monotonic() - started
    fds = _fd_targets()
    result = {
        "transports": count,
        "local_pool": local,
        "tcp_connections": _tcp_to(port, fds),
        "fds": len(fds),
        "threads": threading.active_count(),
        "os_threads": _proc_status("Threads"),
        "rss_mib": round(_proc_status("VmRSS") / 1024, 1),
        "rss_added_mib": round((_proc_status("VmRSS") - rss_before) / 1024, 1),
        "setup_seconds": round(seconds, 2),
    }
    for client in clients:
        client.close()
    return result


def pool_cost(count: int) -> list[dict[str, Any]]:
    results = []
    with EtcdServer() as server:
        for local in (False, True):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--_pool-probe",
                    str(server.client_port),
                    str(count),
                    "local" if local else "global",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outages", default="5,20,60")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transports", type=int, default=5)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--pool-cost", type=int, default=0)
    parser.add_argument("--_pool-probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    probe = args._pool_probe
    if probe:
        print(json.dumps(pool_probe(int(probe[0]), int(probe[1]), probe[2] == "local")))
        return

    loadavg_before = list(os.getloadavg())
    outages = [float(x) for x in args.outages.split(",") if x]
    clients: list[tuple[str, Callable[[float, int], dict[str, float]]]] = [
        ("transport", run_transport)
    ]
    if args.baseline:
        clients.append(("grpc-default", run_baseline))
    rows: list[dict[str, Any]] = []
    for outage in outages:
        for name, runner in clients:
            runs = []
            for run in range(args.runs):
                result = runner(outage, args.transports)
                runs.append(result)
                print(
                    f"outage={outage:g}s client={name} run={run + 1} "
                    + " ".join(f"{k}={v:.2f}" for k, v in result.items()),
                    file=sys.stderr,
                )
            median = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
            rows.append({"outage_s": outage, "client": name, "runs": len(runs), **median})

    print(
        f"\nreconnect after etcd is healthy again (median of {args.runs}, "
        f"{args.transports} long-lived clients per process)"
    )
    print(f"{'outage':>7} {'client':<13} {'longlived_max':>13} {'fresh':>7} {'watch':>7}")
    for row in rows:
        watch = f"{row['watch']:7.2f}" if "watch" in row else f"{'-':>7}"
        print(
            f"{row['outage_s']:6g}s {row['client']:<13} {row['longlived_max']:12.2f}s "
            f"{row['fresh']:6.2f}s {watch}"
        )
    pools = pool_cost(args.pool_cost) if args.pool_cost else []
    if pools:
        print(f"\nsubchannel pool cost, {args.pool_cost} transports (a call and a watch each)")
        for p in pools:
            print(
                f"  {'local ' if p['local_pool'] else 'global'} "
                f"tcp_connections={p['tcp_connections']} "
                f"fds={p['fds']} os_threads={p['os_threads']} rss_mib={p['rss_mib']} "
                f"(+{p['rss_added_mib']}) setup={p['setup_seconds']}s"
            )

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "reconnect.json"
    existing: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    report: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": list(os.getloadavg()),
        "channel_options": dict(transport_module.CHANNEL_OPTIONS),
        "transports_per_process": args.transports,
        "reconnect": rows or existing.get("reconnect", []),
        "pool_cost": pools or existing.get("pool_cost", []),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
