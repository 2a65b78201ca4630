"""Outage benchmark: how soon units are reported active again after etcd outages, on two
real hosts, and that nothing moved or stopped, every time.

    python bench/bench_outages.py [--repetitions 10] [--kill-outage 20] [--pause-outage 15]
                                  [--output bench/results/outages.json]

The scenarios of tests/system/test_outages.py (which proves each once), from the same
code (tests/support/outages.py): real etcd, two systemd-nspawn hosts with the real agent
at TTL 5 s, one `fleetpy engine` process, 4 plain and 2 docker units over both hosts,
read every 0.1 s by an observer. Each scenario gets a fresh cluster (and etcd):

  etcd kill -9, down --kill-outage s, restart        x --repetitions
  etcd SIGSTOP --pause-outage s (> TTL), SIGCONT     x --repetitions
  every lease revoked at once                        x --repetitions
  a host killed                                      once (its cluster is spent)
  a host killed right after an etcd restart          once

After each outage every check of the test runs (no unit moved, restarted or stopped,
leases as expected); a failed check ends the benchmark with its message. Figures:
  active_again_s          etcd healthy -> every unit reported active for good
  probe_started_s         a unit started right after the outage -> running
  agents_registered_anew  agents that had to register with a new lease
  units_moved_s           host killed -> its units active on the other host

Prints a table (per scenario and figure: n, median, max, bound) and writes
bench/results/outages.json with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The scenario driver is shared with tests/system/test_outages.py: a module of the tests'
# support package (never a test module).
sys.path.insert(0, str(ROOT / "tests"))

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import HostPool, ensure_busybox_image, ensure_dockerd, ensure_rootfs

from support.outages import (
    ACTIVE_BOUND,
    MOVE_BOUND,
    TTL,
    Cluster,
    Recovery,
    kill_etcd,
    kill_host_and_wait_for_moves,
    pause_etcd,
    restart_etcd_then_kill_a_host,
    ride_out,
    ride_out_revocation,
    running_cluster,
)

RESULTS = ROOT / "bench" / "results" / "outages.json"
PREFIX = "/bench-outages"


def log(message: str) -> None:
    print(f"bench_outages: {message}", file=sys.stderr, flush=True)


@contextmanager
def fresh_cluster(rootfs: Path, workdir: Path, name: str) -> Iterator[Cluster]:
    """A new etcd, two new hosts and the units, for one scenario."""
    here = workdir / name
    here.mkdir()
    with EtcdServer(data_dir=here / "etcd", log_path=here / "etcd.log") as etcd:
        pool = HostPool(rootfs=rootfs, state_root=here / "hosts", etcd_endpoints=[etcd.endpoint])
        try:
            hosts = pool.start(2, ttl=TTL, etcd_prefix=PREFIX)
            with running_cluster(hosts, etcd, PREFIX, here) as cluster:
                yield cluster
        finally:
            pool.close()


def recoveries(
    scenario: str, runs: int, ride: Callable[[], Recovery]
) -> dict[str, list[float] | float]:
    figures: dict[str, list[float]] = {
        "active_again_s": [],
        "probe_started_s": [],
        "agents_registered_anew": [],
    }
    for run in range(1, runs + 1):
        r = ride()
        log(
            f"{scenario}: repetition={run} active_again_s={r.active_again_s:.2f} "
            f"probe_started_s={r.probe_started_s:.2f} "
            f"agents_registered_anew={r.agents_registered_anew}"
        )
        figures["active_again_s"].append(r.active_again_s)
        figures["probe_started_s"].append(r.probe_started_s)
        figures["agents_registered_anew"].append(r.agents_registered_anew)
    return {**figures, "bound_s": ACTIVE_BOUND}


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    rootfs = ensure_rootfs()
    ensure_dockerd()
    ensure_busybox_image()
    workdir = Path(tempfile.mkdtemp(prefix="fleetpy-bench-outages-"))
    log(f"workdir {workdir}")
    scenarios: dict[str, dict[str, Any]] = {}
    try:
        name = f"etcd kill -9 {args.kill_outage:g}s, restart"
        with fresh_cluster(rootfs, workdir, "kill") as c:
            scenarios[name] = recoveries(
                name,
                args.repetitions,
                lambda: ride_out(c, lambda: kill_etcd(c.etcd, args.kill_outage), False),
            )
        name = f"etcd SIGSTOP {args.pause_outage:g}s, SIGCONT"
        with fresh_cluster(rootfs, workdir, "pause") as c:
            scenarios[name] = recoveries(
                name,
                args.repetitions,
                lambda: ride_out(c, lambda: pause_etcd(c.etcd, args.pause_outage), True),
            )
        name = "every lease revoked"
        with fresh_cluster(rootfs, workdir, "revoke") as c:
            scenarios[name] = recoveries(name, args.repetitions, lambda: ride_out_revocation(c))
        with fresh_cluster(rootfs, workdir, "host") as c:
            seconds = kill_host_and_wait_for_moves(c, MOVE_BOUND)
            log(f"host killed: units_moved_s={seconds:.2f}")
            scenarios["host killed"] = {"units_moved_s": [seconds], "bound_s": MOVE_BOUND}
        with fresh_cluster(rootfs, workdir, "host-after-restart") as c:
            seconds, bound = restart_etcd_then_kill_a_host(c)
            log(f"host killed after etcd restart: units_moved_s={seconds:.2f}")
            scenarios["host killed after etcd restart"] = {
                "units_moved_s": [seconds],
                "bound_s": bound,
            }
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return scenarios


def table(scenarios: dict[str, dict[str, Any]]) -> list[str]:
    """Per scenario and figure: count, median, max and the bound the tests assert."""
    lines = [f"{'scenario':<32} {'figure':<22} {'n':>3} {'median':>7} {'max':>7} {'bound':>6}"]
    for scenario, figures in scenarios.items():
        for name, values in figures.items():
            if not isinstance(values, list) or not values:
                continue
            bound = figures["bound_s"] if name in ("active_again_s", "units_moved_s") else None
            lines.append(
                f"{scenario:<32} {name:<22} {len(values):>3} "
                f"{statistics.median(values):7.2f} {max(values):7.2f} "
                f"{'' if bound is None else f'{bound:6.1f}'}"
            )
    return lines


def with_summaries(figures: dict[str, Any]) -> dict[str, Any]:
    entry = dict(figures)
    for name, values in figures.items():
        if isinstance(values, list) and values:
            entry[name] = [round(v, 3) for v in values]
            entry[f"{name}_median"] = round(statistics.median(values), 3)
            entry[f"{name}_max"] = round(max(values), 3)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repetitions", type=int, default=10, help="outages per etcd scenario")
    parser.add_argument("--kill-outage", type=float, default=20.0, help="seconds etcd is down")
    parser.add_argument(
        "--pause-outage", type=float, default=3.0 * TTL, help="seconds etcd is stopped"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep etcd and engine logs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_outages: needs root (systemd-nspawn)")

    started = time.time()
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    scenarios = run(args)
    loadavg_after = [round(x, 2) for x in os.getloadavg()]
    print("\n".join(table(scenarios)))
    print(f"load average before {loadavg_before}, after {loadavg_after}")

    document = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "cpu_count": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg_after,
        "hosts": 2,
        "ttl_s": TTL,
        "repetitions": args.repetitions,
        "kill_outage_s": args.kill_outage,
        "pause_outage_s": args.pause_outage,
        "scenarios": {name: with_summaries(figures) for name, figures in scenarios.items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
