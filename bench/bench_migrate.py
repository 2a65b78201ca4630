"""Moving a fleet cluster's desired state to fleetpy: `fleetpy migrate --from-fleet` timed
from exec to exit (the real CLI, a process of its own) against a fleet v1.0 keyspace of
N units on M machines (as fleetctl, fleetd and fleet's engine write it: every unit
launched and placed, one in ten only loaded) in a fresh etcd with the v2 API, fleetpy's
prefix in the same etcd; then the dry run again, which finds nothing to do. No engine
leads (migrate refuses to write while one does), no agents.

    python bench/bench_migrate.py [--units 2000] [--machines 20]

Writes bench/results/migrate-<units>x<machines>.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from bench_engine import cpu_seconds, write_figures

from fleetpy.cluster.etcd import EtcdServer

from support.fleet_keys import FleetKeys, machine_keys, unit_keys

RESULTS = Path(__file__).resolve().parent / "results"


def fleet_keyspace(units: int, machines: int) -> dict[str, str]:
    ids = [f"{index:032x}" for index in range(1, machines + 1)]
    keys: dict[str, str] = {}
    for index, machine in enumerate(ids):
        keys |= machine_keys(machine, f"10.1.{index // 250}.{index % 250 + 1}", {"rack": "r"})
    for index in range(units):
        text = f"[Service]\nExecStart=/bin/sleep {100000 + index}\n"
        state = "loaded" if index % 10 == 0 else "launched"
        keys |= unit_keys(f"u{index:06d}.service", text, state, ids[index % machines])
    return keys


def timed(argv: list[str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, done.stdout.splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--machines", type=int, default=20)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with EtcdServer(extra_args=("--enable-v2=true",)) as server:
        assert server.process is not None
        FleetKeys(server.endpoint).put(fleet_keyspace(args.units, args.machines))
        fleetpy = [sys.executable, "-m", "fleetpy", "--endpoint", server.endpoint]
        migrate = [*fleetpy, "--etcd-prefix", "/bench", "migrate", "--from-fleet", server.endpoint]
        etcd_before = cpu_seconds(server.process.pid)
        seconds, code, first = timed(migrate)
        etcd_cpu = cpu_seconds(server.process.pid) - etcd_before
        assert code == 0, first
        dry_seconds, dry_code, dry_first = timed([*migrate, "--dry-run"])
        assert dry_code == 0 and f"0 to add, {args.units} unchanged" in dry_first, dry_first
    write_figures(
        {
            "units": args.units,
            "machines": args.machines,
            "cpu_count": os.cpu_count(),
            "load_average_1min_before": round(load, 2),
            "migrate_seconds": round(seconds, 3),
            "units_per_s": round(args.units / seconds, 1),
            "etcd_cpu_seconds": round(etcd_cpu, 2),
            "dry_run_again_seconds": round(dry_seconds, 3),
        },
        RESULTS / f"migrate-{args.units}x{args.machines}.json",
    )


if __name__ == "__main__":
    main()
