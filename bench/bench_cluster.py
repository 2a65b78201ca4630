"""Benchmark of `fleetpy cluster up`: a networked local cluster (hosts on their own
addresses, see fleetpy/cluster/local.py).

    python bench/bench_cluster.py [--sizes 3,10] [--ttl 5] [--units 12]

For each size N: `cluster up --hosts N` time until every host is registered in etcd
(the host image cached, as after the first run), each agent's VmRSS, and the time
`cluster down` takes. On the first size, --units simple units are started, the link
of the host holding most of them is cut (`ip link set down` on its veth) and timed:
until all of them are placed elsewhere, until all are active elsewhere (both against
the agents' TTL), and, once the link is back, until that host has stopped its stale
copies. Prints a table and writes bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleetpy.cluster import local
from fleetpy.cluster.network import BridgeNetwork
from fleetpy.registry import Registry, RegistryConfig

RESULTS = ROOT / "bench" / "results"
NAME = "bench"
SUBNET = "10.213.90.0/24"


def log(message: str) -> None:
    print(f"bench_cluster: {message}", file=sys.stderr, flush=True)


def in_host(host: local.HostRecord, *argv: str) -> str:
    assert host.init is not None
    return subprocess.run(
        ["nsenter", "-t", str(host.init.pid), "-a", *argv],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def agent_rss_mib(host: local.HostRecord) -> float:
    pid = in_host(host, "systemctl", "show", "-p", "MainPID", "--value", "fleetpy-agent").strip()
    for line in in_host(host, "cat", f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"bench_cluster: timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def link_cut(state: local.ClusterState, ttl: int, units: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    env["FLEETPY_ENDPOINT"] = ",".join(state.endpoints)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for number in range(1, units + 1):
            path = Path(tmp) / f"cut-{number}.service"
            path.write_text("[Service]\nExecStart=/bin/sleep infinity\n")
            files.append(str(path))
        subprocess.run(
            [sys.executable, "-m", "fleetpy", "start", *files],
            env=env,
            check=True,
            capture_output=True,
        )
    registry = Registry(RegistryConfig(endpoints=tuple(state.endpoints)))
    network = BridgeNetwork(
        state.name,
        ipaddress.IPv4Network(state.subnet),
        {h.name: h.index for h in state.hosts},
    )
    try:
        view = registry.read_view(with_text=False)
        by_machine: dict[str, list[str]] = {}
        for unit, (machine, *_rest) in view.schedule.items():
            if unit.startswith("cut-"):
                by_machine.setdefault(machine, []).append(unit)
        victim_id, moved = max(by_machine.items(), key=lambda item: len(item[1]))
        victim = next(h for h in state.hosts if h.machine_id == victim_id)
        log(f"cutting {victim.name} ({len(moved)} units)")

        def placed_elsewhere() -> bool:
            schedule = registry.read_view(with_text=False).schedule
            return all(schedule.get(u, (victim_id,))[0] != victim_id for u in moved)

        def active_elsewhere() -> bool:
            view = registry.read_view(with_text=False)
            return all(
                any(
                    m != victim_id and s.active == "active"
                    for m, s in view.states.get(u, {}).items()
                )
                for u in moved
            )

        network.cut(victim.name)
        try:
            placed = until(placed_elsewhere, 60, "placement elsewhere")
            active = placed + until(active_elsewhere, 60, "units active elsewhere")
        finally:
            network.restore(victim.name)
        log(f"placed after {placed:.2f}s, active after {active:.2f}s; link restored")

        def stale_stopped() -> bool:
            out = in_host(victim, "systemctl", "is-active", *moved).split()
            return "active" not in out and "activating" not in out

        stopped = until(stale_stopped, 60, "the returning host to stop its copies")
        return {
            "units_on_cut_host": len(moved),
            "placed_elsewhere_s": round(placed, 2),
            "active_elsewhere_s": round(active, 2),
            "stale_copies_stopped_after_return_s": round(stopped, 2),
        }
    finally:
        registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="3,10", type=lambda s: [int(x) for x in s.split(",") if x]
    )
    parser.add_argument("--ttl", type=int, default=5, help="agents' lease TTL (seconds)")
    parser.add_argument("--units", type=int, default=12, help="units for the link cut (0: skip)")
    parser.add_argument("--output", type=Path, default=RESULTS / "cluster.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_cluster: needs root (network namespaces, systemd-nspawn)")
    if (local.STATE_ROOT / NAME).exists():
        raise SystemExit(
            f"bench_cluster: a cluster named {NAME} exists: fleetpy cluster down --name {NAME}"
        )

    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {"sizes": {}}
    for index, size in enumerate(args.sizes):
        log(f"cluster up --hosts {size}")
        started = time.monotonic()
        try:
            state = local.up(NAME, hosts=size, subnet=SUBNET, ttl=args.ttl, log=log)
            up_s = time.monotonic() - started
            rss = [agent_rss_mib(h) for h in state.hosts]
            figures: dict[str, Any] = {
                "up_s": round(up_s, 2),
                "agent_rss_mib_max": round(max(rss), 1),
                "agent_rss_mib_median": round(sorted(rss)[len(rss) // 2], 1),
            }
            if index == 0 and args.units:
                figures["link_cut"] = link_cut(state, args.ttl, args.units)
        finally:
            down_started = time.monotonic()
            local.down(NAME)
        figures["down_s"] = round(time.monotonic() - down_started, 2)
        results["sizes"][str(size)] = figures
    results["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]

    rows: list[tuple[str, str, str]] = []
    for size, figures in results["sizes"].items():
        rows.append(
            (f"cluster up, {size} hosts, to all registered", f"{figures['up_s']:.1f} s", "")
        )
        rows.append(
            (
                f"agent RSS, {size} hosts (median / max)",
                f"{figures['agent_rss_mib_median']:.1f} / {figures['agent_rss_mib_max']:.1f} MiB",
                "",
            )
        )
        rows.append((f"cluster down, {size} hosts", f"{figures['down_s']:.1f} s", ""))
        cut = figures.get("link_cut")
        if cut:
            rows.append(
                (
                    f"link cut: {cut['units_on_cut_host']} units placed elsewhere",
                    f"{cut['placed_elsewhere_s']:.2f} s",
                    f"<= TTL + 2 = {args.ttl + 2} s",
                )
            )
            rows.append(
                ("link cut: all active elsewhere", f"{cut['active_elsewhere_s']:.2f} s", "")
            )
            rows.append(
                (
                    "link back: stale copies stopped",
                    f"{cut['stale_copies_stopped_after_return_s']:.2f} s",
                    f"<= TTL = {args.ttl} s",
                )
            )
    load = results["load_average_1m"]
    rows.append(("load average (1 min) before / after", f"{load[0]:.2f} / {load[1]:.2f}", ""))
    header = ("figure", "measured", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())

    document = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "ttl": args.ttl,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "table": [dict(zip(header, row)) for row in rows],
        **results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
