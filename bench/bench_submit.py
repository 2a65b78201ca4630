"""Submitting units alone: N units (desired launched) through the registry call the CLI
uses, 40 a call from 4 clients at once (bench_engine's submit_units), into a fresh etcd;
no engine, no agents. Wall seconds, and CPU seconds of etcd and of this client.

    python bench/bench_submit.py [--units 10000]

For an A/B, run it alternately from two checkouts (README: the audit trail's cost).
Writes bench/results/submit-<units>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_engine import cpu_seconds, submit_units, write_figures

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.registry import RegistryConfig

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=10000)
    args = parser.parse_args()
    names = [f"bench{i:06d}.service" for i in range(args.units)]
    load = os.getloadavg()[0]
    with EtcdServer() as server:
        assert server.process is not None
        config = RegistryConfig(endpoints=(server.endpoint,), prefix="/bench")
        etcd_before, client_before = cpu_seconds(server.process.pid), time.process_time()
        started = time.perf_counter()
        submit_units(config, names)
        seconds = time.perf_counter() - started
        etcd_cpu = cpu_seconds(server.process.pid) - etcd_before
        client_cpu = time.process_time() - client_before
    write_figures(
        {
            "units": args.units,
            "cpu_count": os.cpu_count(),
            "load_average_1min_before": round(load, 2),
            "submit_seconds": round(seconds, 3),
            "units_per_s": round(args.units / seconds, 1),
            "etcd_cpu_seconds": round(etcd_cpu, 2),
            "client_cpu_seconds": round(client_cpu, 2),
        },
        RESULTS / f"submit-{args.units}.json",
    )


if __name__ == "__main__":
    main()
