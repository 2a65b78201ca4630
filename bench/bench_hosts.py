"""Benchmark on real hosts: 3 systemd-nspawn machines running the real agent.

    python bench/bench_hosts.py [--sizes 1,50,200] [--rounds 3] [--ttl 5]
                                [--idle-seconds 60] [--docker-units 20] [--kill-units 200]
    python bench/bench_hosts.py --sizes 200 --idle-seconds 0 --docker-units 0 --kill-units 0
                                (the 200-unit start against systemd's floor only)

Real etcd (EtcdServer), the real engine as its own process (`fleetpy engine`), the
`fleetpy` CLI as the operator runs it, and HostPool hosts whose agents drive systemd
over D-Bus. Unit states are followed with one etcd watch on P/state (no polling, so
the etcd request counts are the cluster's own). Measures, for each N, --rounds times,
alternating (floor, fleetpy, floor, fleetpy, ...: both see the same load):

  floor:   systemd alone on the same hosts: the N units' files written straight into
           each host's /run/systemd/system, one `systemctl daemon-reload` and one
           `systemctl start` of all of them per host (through nsenter), hosts in
           parallel -> every host's start returned (jobs done: all active)
  start:   `fleetpy start --no-block FILES` invoked -> each unit's first ACTIVE=active,
           and its ratio to the floor (medians of the rounds), with a per-phase
           breakdown of the median round: CLI exited, units and placements written
           (etcd watch arrival here), the agents' own timestamps from their journals
           (woken, files written, daemon-reloads, StartUnit calls issued and answered,
           start jobs done: units active), and states seen here
  destroy: `fleetpy destroy NAMES` invoked -> no state reported for any of them
  etcd requests per unit started (grpc_server_handled_total, before/after start)

and with the largest N running: each agent's VmRSS/VmHWM and CPU seconds, then the CPU
seconds of agents, engine and etcd over --idle-seconds with nothing changing. Last, a
host holding units is killed: time until all its units are active elsewhere.
Prints a table (figure, measured, target, fleet v1.0) and writes
bench/results/hosts-<hosts>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleetpy.cluster.etcd import EtcdServer, grpc_request_count
from fleetpy.cluster.nspawn import (
    AGENT_UNIT,
    Host,
    HostPool,
    ensure_busybox_image,
    ensure_dockerd,
    ensure_rootfs,
)
from fleetpy.model.events import StateEvent, UnitEvent, WatchBatch
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitfile.template import render

RESULTS = ROOT / "bench" / "results"
PREFIX = "/bench-hosts"
SIMPLE_UNIT = "[Service]\nExecStart=/bin/sleep infinity\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The agent's log lines with its own timestamps, for the breakdown.
AGENT_PHASE_EVENTS = ("actions_planned", "actions_executed", "start_jobs_done")
PHASES = (
    ("cli_exited", "`fleetpy start` exited"),
    ("submit_written", "units written (seen)"),
    ("first_placement_written", "first placement written (seen)"),
    ("placement_written", "all placements written (seen)"),
    ("agent_woken", "agents woken for their last batch (last host)"),
    ("unit_files_written", "unit files written (last host)"),
    ("daemon_reloads", "daemon-reloads (all hosts; count)"),
    ("start_calls_issued", "StartUnit calls issued (last host)"),
    ("start_calls_answered", "StartUnit calls answered (last host)"),
    ("units_active_in_systemd", "start jobs done: active (last host)"),
    ("first_state_seen_active", "first state seen active"),
    ("states_seen_active", "all states seen active"),
    ("placed_to_active", "from all placements written to all active (vs the floor)"),
)


def log(message: str) -> None:
    print(f"bench_hosts: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- observers


class StateTracker:
    """Follows P/state with one watch: first time each unit was active (anywhere and
    per machine), and when each unit/machine state was deleted. Times are
    time.perf_counter() when the watch response arrived here."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.cond = threading.Condition()
        self.states: dict[str, dict[str, str]] = {}  # unit -> machine -> ACTIVE
        self.first_active: dict[str, float] = {}
        self.active_on: dict[tuple[str, str], float] = {}
        self.gone_at: dict[tuple[str, str], float] = {}
        self.submitted: dict[str, float] = {}  # unit -> its record first seen written
        self.placed: dict[str, float] = {}  # unit -> its schedule entry first seen written
        self.watch_errors = 0
        self._cancel: Callable[[], None] = lambda: None
        self._sync()
        # Units and placements only for the breakdown (first puts); no resync needed.
        revision = self.registry.read_view(with_states=False, with_text=False).revision
        self._cancel_others = [
            registry.watch_units(lambda b: self._first_put(b, self.submitted), revision + 1),
            registry.watch_schedule(lambda b: self._first_put(b, self.placed), revision + 1),
        ]

    def _first_put(self, batch: WatchBatch[Any], seen: dict[str, float]) -> None:
        now = time.perf_counter()
        for event in batch.events:
            name = event.name if isinstance(event, UnitEvent) else event.unit
            record = event.record if isinstance(event, UnitEvent) else event.entry
            if record is not None:
                seen.setdefault(name, now)

    def _sync(self) -> None:
        self._cancel()
        view = self.registry.read_view(with_states=True, with_text=False)
        now = time.perf_counter()
        with self.cond:
            self.states = {u: {m: s.active for m, s in by.items()} for u, by in view.states.items()}
            for unit, by in self.states.items():
                for machine, active in by.items():
                    if active == "active":
                        self.first_active.setdefault(unit, now)
                        self.active_on.setdefault((unit, machine), now)
            self.cond.notify_all()
        self._cancel = self.registry.watch_states(self._on, view.revision + 1)

    def _on(self, batch: WatchBatch[StateEvent]) -> None:
        now = time.perf_counter()
        if batch.error is not None:
            self.watch_errors += 1
            log(f"state watch lost ({batch.error!r}); resyncing")
            threading.Thread(target=self._sync, daemon=True).start()
            return
        with self.cond:
            for event in batch.events:
                unit, machine = event.unit, event.machine
                if event.state is not None:
                    active = event.state.active
                    self.states.setdefault(unit, {})[machine] = active
                    if active == "active":
                        self.first_active.setdefault(unit, now)
                        self.active_on.setdefault((unit, machine), now)
                else:
                    by = self.states.get(unit, {})
                    by.pop(machine, None)
                    if not by:
                        self.states.pop(unit, None)
                    self.gone_at[(unit, machine)] = now
            self.cond.notify_all()

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise SystemExit(f"bench_hosts: timed out after {timeout:g}s waiting for {what}")

    def on_machine(self, machine: str, names: set[str]) -> list[str]:
        with self.cond:
            return sorted(u for u in names if machine in self.states.get(u, {}))

    def close(self) -> None:
        self._cancel()
        for cancel in self._cancel_others:
            cancel()


def grpc_by_method(metrics_text: str) -> dict[str, int]:
    """grpc_server_handled_total per grpc_method (Range, Txn, LeaseKeepAlive, ...)."""
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("grpc_server_handled_total{"):
            labels, value = line.rsplit(" ", 1)
            method = labels.split('grpc_method="', 1)[1].split('"', 1)[0]
            counts[method] = counts.get(method, 0.0) + float(value)
    return {k: int(v) for k, v in counts.items()}


def diff_counts(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0)
        for k in sorted(set(after) | set(before))
        if after.get(k, 0) != before.get(k, 0)
    }


def parse_proc(status: str, stat: str) -> dict[str, float]:
    fields = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # MiB
    rest = stat.rsplit(")", 1)[1].split()  # fields from 3 (state) on
    fields["cpu_s"] = (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime + stime
    return fields


def local_proc(pid: int) -> dict[str, float]:
    return parse_proc(
        Path(f"/proc/{pid}/status").read_text(), Path(f"/proc/{pid}/stat").read_text()
    )


def agent_proc(host: Host) -> dict[str, float]:
    """The agent's memory and CPU, read inside the host (its pid is the host's)."""
    pid = host.main_pid(AGENT_UNIT)
    if pid <= 0:
        raise SystemExit(f"bench_hosts: no agent running on {host.name}")
    out = host.run(["sh", "-c", f"cat /proc/{pid}/status; echo ---; cat /proc/{pid}/stat"]).stdout
    status, _, stat = out.partition("---\n")
    return {"pid": pid, **parse_proc(status, stat)}


def host_cpu(hosts: Sequence[Host]) -> dict[str, float]:
    """CPU seconds (utime+stime) of every live process in the hosts, summed by
    command name (systemd, fleetpy = the agent, dbus-daemon, systemd-journal, ...),
    read from this machine's /proc (Host.processes() gives our pids)."""
    by_comm: dict[str, float] = {}
    for host in hosts:
        if not host.alive:
            continue
        for pid in host.processes():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            rest = stat.rsplit(")", 1)[1].split()
            by_comm[comm] = by_comm.get(comm, 0.0) + (int(rest[11]) + int(rest[12])) / CLK_TCK
    return by_comm


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def containers(prefix: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "--filter", f"name={prefix}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


# ----------------------------------------------------------------------------- the bench


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        server: EtcdServer,
        pool: HostPool,
        hosts: list[Host],
        registry: Registry,
        tracker: StateTracker,
        engine: subprocess.Popen[bytes],
        workdir: Path,
    ) -> None:
        self.args = args
        self.server = server
        self.pool = pool
        self.hosts = hosts
        self.registry = registry
        self.tracker = tracker
        self.engine = engine
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
        self.env.update(FLEETPY_ENDPOINT=server.endpoint, FLEETPY_ETCD_PREFIX=PREFIX)

    def fleetpy(self, *argv: str) -> float:
        """Run the CLI; returns its wall time."""
        t0 = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "fleetpy", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            timeout=300,
        )
        if result.returncode != 0:
            raise SystemExit(
                f"bench_hosts: fleetpy {argv[0]} failed rc={result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return time.perf_counter() - t0

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: processes in the hosts by name, engine, etcd, and
        our reaped children (the CLI runs)."""
        cpu = {f"host:{k}": v for k, v in host_cpu(self.hosts).items()}
        cpu["engine"] = local_proc(self.engine.pid)["cpu_s"]
        cpu["etcd"] = local_proc(self.server.process.pid)["cpu_s"]  # type: ignore[union-attr]
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu["cli"] = children.ru_utime + children.ru_stime
        return cpu

    @staticmethod
    def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """Per-name CPU seconds spent between two cpu() snapshots (names that
        used >= 0.01 s), largest first; processes that exited in between are lost."""
        delta = {k: round(after[k] - before.get(k, 0.0), 2) for k in after}
        return dict(sorted(((k, v) for k, v in delta.items() if v >= 0.01), key=lambda kv: -kv[1]))

    def metrics(self) -> tuple[int, dict[str, int]]:
        text = self.server.metrics()
        return grpc_request_count(text), grpc_by_method(text)

    def write_units(self, label: str, count: int, docker: bool = False) -> list[Path]:
        directory = self.workdir / label
        directory.mkdir()
        paths = []
        for i in range(count):
            name = f"{label}-{i:04d}"
            if docker:
                text = render(
                    ROOT / "units" / "docker-service.service.j2",
                    {"name": name, "image": self.args.image, "command": ["sleep", "100000"]},
                )
            else:
                text = SIMPLE_UNIT
            path = directory / f"{name}.service"
            path.write_text(text)
            paths.append(path)
        return paths

    def start(self, label: str, files: list[Path]) -> dict[str, Any]:
        names = [p.name for p in files]
        cpu_before = self.cpu()
        before, before_m = self.metrics()
        t0_epoch = time.time()
        t0 = time.perf_counter()
        cli_s = self.fleetpy("start", "--no-block", *map(str, files))
        first = self.tracker.first_active
        self.tracker.wait(
            f"{label}: {len(names)} units active",
            lambda: all(n in first for n in names),
            self.args.timeout,
        )
        after, after_m = self.metrics()
        cpu = self.cpu_delta(cpu_before, self.cpu())
        latencies = [first[n] - t0 for n in names]
        by_method = diff_counts(after_m, before_m)
        requests = after - before
        keepalives = by_method.get("LeaseKeepAlive", 0)
        return {
            "units": len(names),
            "cli_seconds": round(cli_s, 3),
            "all_active_seconds": round(max(latencies), 3),
            "first_active_seconds": round(min(latencies), 3),
            "median_seconds": round(statistics.median(latencies), 3),
            "p95_seconds": round(percentile(latencies, 95), 3),
            "etcd_requests": requests,
            "etcd_requests_per_unit": round(requests / len(names), 2),
            "etcd_requests_per_unit_excl_keepalive": round((requests - keepalives) / len(names), 2),
            "etcd_requests_by_method": by_method,
            "cpu_seconds_by_process": cpu,
            "machines": self.placement(names),
            "phases": self.breakdown(t0, t0_epoch, names, cli_s),
        }

    # -- systemd's own floor

    def floor(self, label: str, count: int) -> dict[str, Any]:
        """The same kind of units started by systemd alone, no fleetpy: per host (in
        parallel) its share of COUNT files written straight into its /run/systemd/system
        (from here, through /proc/<its init>/root), one daemon-reload, one `systemctl
        start` of all of them; seconds until the last host's start returned (systemctl
        waits for the start jobs: a simple service's job is done once it is active)."""
        hosts = [h for h in self.hosts if h.alive]
        names = [f"{label}-{i:04d}.service" for i in range(count)]
        shares = [names[i :: len(hosts)] for i in range(len(hosts))]
        done: dict[str, float] = {}
        errors: list[BaseException] = []
        go = threading.Event()

        def one(host: Host, share: list[str]) -> None:
            try:
                go.wait()
                directory = Path(f"/proc/{host.init_pid}/root/run/systemd/system")
                for name in share:
                    (directory / name).write_text(SIMPLE_UNIT)
                if share:
                    script = "systemctl daemon-reload && systemctl start " + " ".join(share)
                    host.run(["sh", "-c", script], timeout=self.args.timeout)
                done[host.name] = time.perf_counter()
            except BaseException as exc:  # reported below, after every thread ended
                errors.append(exc)

        threads = [threading.Thread(target=one, args=hs) for hs in zip(hosts, shares)]
        for thread in threads:
            thread.start()
        t0 = time.perf_counter()
        go.set()
        for thread in threads:
            thread.join()
        if errors:
            raise SystemExit(f"bench_hosts: floor {label} failed: {errors[0]!r}")
        all_active = max(done.values()) - t0
        for host, share in zip(hosts, shares):  # checked, then cleaned up: not timed
            if not share:
                continue
            states = host.systemctl("show", "--value", "-p", "ActiveState", *share).stdout.split()
            if states != ["active"] * len(share):
                raise SystemExit(f"bench_hosts: floor {label} on {host.name}: {states}")
            files = " ".join(f"/run/systemd/system/{n}" for n in share)
            host.run(
                [
                    "sh",
                    "-c",
                    f"systemctl stop {' '.join(share)}; rm -f {files}; systemctl daemon-reload",
                ],
                timeout=self.args.timeout,
            )
        return {
            "units": count,
            "all_active_seconds": round(all_active, 3),
            "per_host_seconds": {h: round(t - t0, 3) for h, t in sorted(done.items())},
        }

    # -- where fleetpy's time goes

    def agent_events(self, since: float) -> dict[str, list[dict[str, str]]]:
        """Each host's agent log lines (actions_planned, actions_executed,
        start_jobs_done: the agent's own timestamps, epoch seconds) logged after SINCE."""
        found: dict[str, list[dict[str, str]]] = {}
        for host in self.hosts:
            if not host.alive:
                continue
            out = host.run(
                [
                    "journalctl",
                    "--no-pager",
                    "--quiet",
                    "-o",
                    "cat",
                    "-u",
                    AGENT_UNIT,
                    "-n",
                    "5000",
                ],
                check=False,
            ).stdout
            events = []
            for line in out.splitlines():
                if not any(f"event={e} " in line for e in AGENT_PHASE_EVENTS):
                    continue
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                at = fields.get("woken") or fields.get("begun") or fields.get("at")
                if at is not None and float(at) >= since:
                    events.append(fields)
            found[host.name] = events
        return found

    def breakdown(
        self, t0: float, t0_epoch: float, names: Sequence[str], cli_s: float
    ) -> dict[str, Any]:
        """Seconds from `fleetpy start` invoked until each phase was reached by the last
        unit / the last host (the phases overlap: a host may start its units while
        another still waits for its placements)."""
        tracker = self.tracker
        phases: dict[str, Any] = {"cli_exited": round(cli_s, 3)}

        def last(seen: dict[str, float]) -> float | None:
            times = [seen[n] for n in names if n in seen]
            return round(max(times) - t0, 3) if len(times) == len(names) else None

        def first(seen: dict[str, float]) -> float | None:
            times = [seen[n] for n in names if n in seen]
            return round(min(times) - t0, 3) if times else None

        phases["submit_written"] = last(tracker.submitted)
        phases["placement_written"] = last(tracker.placed)
        phases["first_placement_written"] = first(tracker.placed)
        agents = self.agent_events(t0_epoch - 0.5)
        by_phase: dict[str, list[float]] = {}
        reloads = 0
        batches = 0
        for events in agents.values():
            planned = [e for e in events if e.get("event") == "actions_planned"]
            executed = [e for e in events if e.get("event") == "actions_executed"]
            jobs = [e for e in events if e.get("event") == "start_jobs_done"]
            if planned:  # its last batch's: the placements may come in several
                by_phase.setdefault("agent_woken", []).append(float(planned[-1]["woken"]))
            for key, phase, lines in (
                ("written", "unit_files_written", executed),
                ("issued", "start_calls_issued", executed),
                ("answered", "start_calls_answered", jobs),
            ):
                times = [float(e[key]) for e in lines if e.get(key)]
                if times:
                    by_phase.setdefault(phase, []).append(max(times))
            if jobs:
                by_phase.setdefault("units_active_in_systemd", []).append(
                    max(float(e["at"]) for e in jobs)
                )
            reloads += sum(int(e.get("reloads", 0)) for e in executed)
            batches += len(executed)
        for phase in (
            "agent_woken",
            "unit_files_written",
            "start_calls_issued",
            "start_calls_answered",
            "units_active_in_systemd",
        ):
            reached = by_phase.get(phase)
            phases[phase] = round(max(reached) - t0_epoch, 3) if reached else None
        phases["daemon_reloads"] = reloads if batches else None
        phases["agent_batches"] = batches if batches else None
        phases["first_state_seen_active"] = first(tracker.first_active)
        phases["states_seen_active"] = last(tracker.first_active)
        if phases["states_seen_active"] is not None and phases["placement_written"] is not None:
            # The hosts' part (agents and systemd), to hold against the floor's whole.
            phases["placed_to_active"] = round(
                phases["states_seen_active"] - phases["placement_written"], 3
            )
        return phases

    def placement(self, names: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.tracker.cond:
            for name in names:
                for machine in self.tracker.states.get(name, {}):
                    counts[machine[:8]] = counts.get(machine[:8], 0) + 1
        return counts

    def destroy(self, label: str, names: list[str]) -> dict[str, Any]:
        cpu_before = self.cpu()
        before, _ = self.metrics()
        states = self.tracker.states
        t0 = time.perf_counter()
        cli_s = self.fleetpy("destroy", *names)
        self.tracker.wait(
            f"{label}: {len(names)} units' states gone",
            lambda: not any(n in states for n in names),
            self.args.timeout,
        )
        gone = max(t for (u, _m), t in self.tracker.gone_at.items() if u in set(names))
        after, _ = self.metrics()
        cpu = self.cpu_delta(cpu_before, self.cpu())
        # The agent removes a state only after the stop job finished and the file is
        # gone; check systemd on every host agrees.
        left = 0
        for host in self.hosts:
            if host.alive:
                out = host.systemctl(
                    "list-units", "--all", "--plain", "--no-legend", f"{label}-*"
                ).stdout
                left += len([line for line in out.splitlines() if line.strip()])
        return {
            "units": len(names),
            "cli_seconds": round(cli_s, 3),
            "all_stopped_seconds": round(gone - t0, 3),
            "etcd_requests_per_unit": round((after - before) / len(names), 2),
            "cpu_seconds_by_process": cpu,
            "units_left_in_systemd": left,
        }

    def resources(self) -> dict[str, Any]:
        agents = {h.name: agent_proc(h) for h in self.hosts if h.alive}
        return {
            "agents": agents,
            "engine": local_proc(self.engine.pid),
            "etcd": local_proc(self.server.process.pid),  # type: ignore[union-attr]
        }

    def idle(self, seconds: float) -> dict[str, Any]:
        before = self.resources()
        before_n, before_m = self.metrics()
        time.sleep(seconds)
        after = self.resources()
        after_n, after_m = self.metrics()

        def delta(a: dict[str, float], b: dict[str, float]) -> float:
            return round(b["cpu_s"] - a["cpu_s"], 3)

        agents = {
            name: delta(before["agents"][name], after["agents"][name]) for name in after["agents"]
        }
        return {
            "seconds": seconds,
            "agent_cpu_seconds": agents,
            "engine_cpu_seconds": delta(before["engine"], after["engine"]),
            "etcd_cpu_seconds": delta(before["etcd"], after["etcd"]),
            "etcd_requests": after_n - before_n,
            "etcd_requests_by_method": diff_counts(after_m, before_m),
        }

    def kill_host(self, names: list[str]) -> dict[str, Any]:
        held = {h: self.tracker.on_machine(h.machine_id, set(names)) for h in self.hosts}
        victim = max(held, key=lambda h: len(held[h]))
        moving = held[victim]
        if not moving:
            raise SystemExit("bench_hosts: no host holds a unit to kill")
        log(f"killing {victim.name} holding {len(moving)} units")
        t0 = time.perf_counter()
        victim.kill()
        kill_s = time.perf_counter() - t0
        active_on = self.tracker.active_on

        def moved(unit: str) -> float | None:
            times = [
                t
                for (u, m), t in list(active_on.items())
                if u == unit and m != victim.machine_id and t > t0
            ]
            return min(times) if times else None

        self.tracker.wait(
            f"{len(moving)} units of the killed host active elsewhere",
            lambda: all(moved(u) is not None for u in moving),
            self.args.ttl + self.args.timeout,
        )
        times = [moved(u) - t0 for u in moving]  # type: ignore[operator]
        expired = [
            t - t0
            for (u, m), t in self.tracker.gone_at.items()
            if m == victim.machine_id and t > t0
        ]
        return {
            "units_on_killed_host": len(moving),
            "ttl": self.args.ttl,
            "kill_call_seconds": round(kill_s, 3),
            "lease_expired_seconds": round(min(expired), 3) if expired else None,
            "first_moved_active_seconds": round(min(times), 3),
            "all_moved_active_seconds": round(max(times), 3),
        }


def median_round(rounds: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The round whose KEY is the median (the lower middle one of an even count)."""
    ordered = sorted(rounds, key=lambda r: float(r[key]))
    return ordered[(len(ordered) - 1) // 2]


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_hosts: timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def run(args: argparse.Namespace, cleanup: list[Callable[[], None]]) -> dict[str, Any]:
    rootfs = ensure_rootfs()
    ensure_dockerd()
    ensure_busybox_image(args.image)
    workdir = Path(tempfile.mkdtemp(prefix="fleetpy-bench-hosts-"))
    if not args.keep_workdir:
        cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    log(f"workdir {workdir}")

    server = EtcdServer(data_dir=workdir / "etcd", log_path=workdir / "etcd.log").start()
    cleanup.append(server.stop)
    pool = HostPool(rootfs=rootfs, state_root=workdir / "hosts", etcd_endpoints=[server.endpoint])
    cleanup.append(pool.close)
    t_boot = time.perf_counter()
    hosts = pool.start(args.hosts, ttl=args.ttl, etcd_prefix=PREFIX)
    registry = Registry(RegistryConfig(endpoints=(server.endpoint,), prefix=PREFIX, timeout=30))
    cleanup.append(registry.close)
    wait_until("machines registered", lambda: len(registry.list_machines()) == args.hosts, 120)
    boot_s = time.perf_counter() - t_boot
    log(f"{args.hosts} hosts up and registered in {boot_s:.1f}s")

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    env.update(FLEETPY_ENDPOINT=server.endpoint, FLEETPY_ETCD_PREFIX=PREFIX)
    engine_log = open(workdir / "engine.log", "ab")
    engine = subprocess.Popen(
        [sys.executable, "-m", "fleetpy", "engine", *args.engine_args],
        env=env,
        stdout=engine_log,
        stderr=engine_log,
        stdin=subprocess.DEVNULL,
    )

    def stop_engine() -> None:
        if engine.poll() is None:
            engine.terminate()
            try:
                engine.wait(15)
            except subprocess.TimeoutExpired:
                engine.kill()
                engine.wait()
        engine_log.close()

    cleanup.append(stop_engine)
    wait_until("an engine leader", lambda: registry.leader() is not None, 60)

    tracker = StateTracker(registry)
    cleanup.append(tracker.close)
    bench = Bench(args, server, pool, hosts, registry, tracker, engine, workdir)
    results: dict[str, Any] = {"hosts_boot_seconds": round(boot_s, 1)}
    results["resources_no_units"] = bench.resources()

    largest = max(args.sizes)
    for n in args.sizes:
        floors: list[dict[str, Any]] = []
        starts: list[dict[str, Any]] = []
        destroys: list[dict[str, Any]] = []
        for r in range(args.rounds):
            log(f"floor: systemd alone, {n} units (round {r + 1}/{args.rounds})")
            floors.append(bench.floor(f"f{n}r{r}", n))
            label = f"s{n}r{r}"
            files = bench.write_units(label, n)
            log(f"start {n} units (round {r + 1}/{args.rounds})")
            starts.append(bench.start(label, files))
            if n == largest and r == args.rounds - 1:
                time.sleep(1)  # let the last state reports settle
                results[f"resources_{n}_units"] = bench.resources()
                if args.idle_seconds > 0:
                    log(f"idle {args.idle_seconds:g}s with {n} units running")
                    results["idle"] = bench.idle(args.idle_seconds)
                    results["idle"]["units_running"] = n
            log(f"destroy {n} units")
            destroys.append(bench.destroy(label, [p.name for p in files]))
        floor_s = statistics.median(f["all_active_seconds"] for f in floors)
        start_s = statistics.median(s["all_active_seconds"] for s in starts)
        results[f"floor_{n}"] = {
            "all_active_seconds": round(floor_s, 3),
            "rounds": [f["all_active_seconds"] for f in floors],
            "median_round": median_round(floors, "all_active_seconds"),
        }
        results[f"start_{n}"] = {
            **median_round(starts, "all_active_seconds"),
            "all_active_rounds": [s["all_active_seconds"] for s in starts],
        }
        results[f"destroy_{n}"] = median_round(destroys, "all_stopped_seconds")
        results[f"ratio_to_floor_{n}"] = round(start_s / floor_s, 2)
        log(f"{n} units: fleetpy {start_s:.3f} s, floor {floor_s:.3f} s, x{start_s / floor_s:.2f}")

    if args.docker_units:
        label = "dock"
        files = bench.write_units(label, args.docker_units, docker=True)
        log(f"start {args.docker_units} docker units")
        t0 = time.perf_counter()
        results["start_docker"] = bench.start(label, files)
        wait_until(
            "containers running",
            lambda: len(containers(f"fleetpy-{label}-")) >= len(files),
            args.timeout,
        )
        results["start_docker"]["all_containers_running_seconds"] = round(
            time.perf_counter() - t0, 3
        )
        log(f"destroy {args.docker_units} docker units")
        results["destroy_docker"] = bench.destroy(label, [p.name for p in files])
        wait_until("containers gone", lambda: not containers(f"fleetpy-{label}-"), args.timeout)

    if args.kill_units:
        label = "kill"
        files = bench.write_units(label, args.kill_units)
        log(f"start {args.kill_units} units, then kill a host")
        bench.start(label, files)
        time.sleep(1)
        results["kill"] = bench.kill_host([p.name for p in files])
    return results


# ----------------------------------------------------------------------------- report


def table(args: argparse.Namespace, r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    fleet_start = {50: "3.7-4.3 s", 200: "4.3-4.9 s"}
    fleet_destroy = {50: "~80 s", 200: "~320 s"}
    for n in args.sizes:
        s = r[f"start_{n}"]
        f = r[f"floor_{n}"]
        rounds = " / ".join(f"{x:.2f}" for x in s["all_active_rounds"])
        floors = " / ".join(f"{x:.2f}" for x in f["rounds"])
        rows.append(
            (
                f"start {n}: all active (median of rounds: {rounds})",
                f"{s['all_active_seconds']:.2f} s",
                "",
                fleet_start.get(n, ""),
            )
        )
        rows.append(
            (
                f"floor {n}: systemd alone, all active ({floors})",
                f"{f['all_active_seconds']:.2f} s",
                "",
                "",
            )
        )
        rows.append(
            (f"start {n}: ratio to the floor", f"{r[f'ratio_to_floor_{n}']:.2f}x", "<= 1.5x", "")
        )
        for key, title in PHASES:
            value = s["phases"].get(key)
            shown = (
                "-"
                if value is None
                else (str(value) if key == "daemon_reloads" else f"{value:.3f} s")
            )
            rows.append((f"  {n}: {title}", shown, "", ""))
        rows.append(
            (f"start {n}: first active", f"{s['first_active_seconds']:.2f} s", "<= 0.5 s", "")
        )
        rows.append(
            (
                f"start {n}: median / p95",
                f"{s['median_seconds']:.2f} / {s['p95_seconds']:.2f} s",
                "",
                "",
            )
        )
        rows.append((f"start {n}: CLI wall time", f"{s['cli_seconds']:.2f} s", "", ""))
        cpu = s["cpu_seconds_by_process"]
        rows.append(
            (
                f"start {n}: CPU s (host systemd/agents/dbus; cli, etcd, engine)",
                "/".join(
                    f"{cpu.get(k, 0):.2f}"
                    for k in ("host:systemd", "host:fleetpy", "host:dbus-daemon")
                )
                + "; "
                + "/".join(f"{cpu.get(k, 0):.2f}" for k in ("cli", "etcd", "engine")),
                "",
                "",
            )
        )
        rows.append(
            (
                f"start {n}: etcd requests/unit",
                f"{s['etcd_requests_per_unit']:.2f} "
                f"({s['etcd_requests_per_unit_excl_keepalive']:.2f} w/o keepalive)",
                "<= 4",
                "15-17",
            )
        )
    for n in args.sizes:
        d = r[f"destroy_{n}"]
        rows.append(
            (
                f"destroy {n}: all stopped",
                f"{d['all_stopped_seconds']:.2f} s",
                "<= 5 s" if n == max(args.sizes) else "",
                fleet_destroy.get(n, ""),
            )
        )
    if "start_docker" in r:
        s, d = r["start_docker"], r["destroy_docker"]
        n = s["units"]
        rows.append(
            (
                f"docker {n}: all active / first",
                f"{s['all_active_seconds']:.2f} / {s['first_active_seconds']:.2f} s",
                "",
                "",
            )
        )
        rows.append(
            (
                f"docker {n}: all containers running",
                f"{s['all_containers_running_seconds']:.2f} s",
                "",
                "",
            )
        )
        rows.append(
            (f"docker {n}: etcd requests/unit", f"{s['etcd_requests_per_unit']:.2f}", "<= 4", "")
        )
        rows.append(
            (f"docker {n}: destroy, all stopped", f"{d['all_stopped_seconds']:.2f} s", "", "")
        )
    if "kill" in r:
        k = r["kill"]
        rows.append(
            (
                f"killed host ({k['units_on_killed_host']} units): all active elsewhere",
                f"{k['all_moved_active_seconds']:.2f} s",
                f"<= {k['ttl'] + 2} s (TTL {k['ttl']} + 2)",
                "21-28 s",
            )
        )
        rows.append(
            (
                "killed host: lease expired (states gone)",
                f"{k['lease_expired_seconds']:.2f} s" if k["lease_expired_seconds"] else "-",
                f"<= {k['ttl']} s",
                "",
            )
        )
    largest = max(args.sizes)
    res = r[f"resources_{largest}_units"]
    rss = [a["VmRSS"] for a in res["agents"].values()]
    hwm = [a["VmHWM"] for a in res["agents"].values()]
    base = [a["VmRSS"] for a in r["resources_no_units"]["agents"].values()]
    rows.append(("agent RSS, no units (max of hosts)", f"{max(base):.1f} MiB", "", ""))
    rows.append(
        (
            f"agent RSS / HWM, {largest} units (max)",
            f"{max(rss):.1f} / {max(hwm):.1f} MiB",
            "<= 60 MB",
            "16-21 MB",
        )
    )
    cpu = [a["cpu_s"] for a in res["agents"].values()]
    rows.append((f"agent CPU s since boot, {largest} units (max)", f"{max(cpu):.2f} s", "", ""))
    rows.append(("engine RSS", f"{res['engine']['VmRSS']:.1f} MiB", "", ""))
    rows += idle_rows(r)
    load = r["load_average_1m"]
    rows.append(
        (
            "load average (1 min) before / after run",
            f"{load[0]:.2f} / {load[1]:.2f}",
            f"<< {os.cpu_count()} CPUs",
            "",
        )
    )
    return rows


def idle_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if "idle" not in r:
        return []
    rows: list[tuple[str, str, str, str]] = []
    idle = r["idle"]
    secs = idle["seconds"]
    agent_idle = max(idle["agent_cpu_seconds"].values())
    rows.append(
        (
            f"idle {secs:g} s, {idle['units_running']} units: agent CPU (max)",
            f"{agent_idle:.2f} s ({100 * agent_idle / secs:.2f} %)",
            "~0",
            "",
        )
    )
    rows.append(
        (
            f"idle {secs:g} s: engine CPU",
            f"{idle['engine_cpu_seconds']:.2f} s ({100 * idle['engine_cpu_seconds'] / secs:.2f} %)",
            "~0",
            "",
        )
    )
    rows.append((f"idle {secs:g} s: etcd CPU", f"{idle['etcd_cpu_seconds']:.2f} s", "", ""))
    rows.append(
        (
            f"idle {secs:g} s: etcd requests",
            f"{idle['etcd_requests']} ({idle['etcd_requests'] / secs:.2f}/s)",
            "",
            "",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument(
        "--sizes", default="1,50,200", type=lambda s: [int(x) for x in s.split(",") if x]
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="floor and fleetpy runs per size, alternating; medians are reported",
    )
    parser.add_argument("--ttl", type=int, default=5, help="agents' lease TTL (seconds)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="0: no idle measurement")
    parser.add_argument(
        "--docker-units",
        type=int,
        default=20,
        help="docker-wrapped units for a separate row (0: skip)",
    )
    parser.add_argument(
        "--kill-units",
        type=int,
        default=200,
        help="units started before a host is killed (0: skip)",
    )
    parser.add_argument("--image", default="local/busybox:latest")
    parser.add_argument(
        "--engine-args",
        default="",
        type=shlex.split,
        help="extra `fleetpy engine` options, e.g. '--reconcile-interval 30'",
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep etcd, engine and host logs"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_hosts: needs root (systemd-nspawn)")

    # SIGTERM/SIGHUP end the run through the finally below, like Ctrl-C.
    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    cleanup: list[Callable[[], None]] = []
    started = time.time()
    load_before = os.getloadavg()[0]
    try:
        results = run(args, cleanup)
        # Other work on this machine slows everything here: record how busy it was.
        results["load_average_1m"] = [load_before, os.getloadavg()[0]]
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception as exc:
                log(f"cleanup step failed: {exc!r}")

    rows = table(args, results)
    header = ("figure", "measured", "target", "fleet v1.0")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())

    output = args.output or RESULTS / f"hosts-{args.hosts}.json"
    document = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "hosts": args.hosts,
        "ttl": args.ttl,
        "engine_args": args.engine_args,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "table": [dict(zip(header, row)) for row in rows],
        **results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {output}")


if __name__ == "__main__":
    main()
