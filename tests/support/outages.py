"""etcd outages on two real hosts: what tests/system/test_outages.py proves once per scenario
and bench/bench_outages.py repeats for figures; the observer, the checks of a whole cluster
and the recovery measure are also bench/bench_faults.py's (simulated hosts).

The cluster: an etcd of its own (the outages kill and pause it), two real systemd hosts
(nspawn) with the real agent at TTL 5, one `fleetpy engine` process, plain and docker units
spread over both hosts. An observer thread reads the cluster every 0.1 s, so a unit
unscheduled or reported inactive for a moment is seen, and "active again" is measured, not
guessed. Every check raises AssertionError; there is no pytest here, so the benchmark
imports this module too (with tests/ on its path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fleetpy.client import operations, waiting
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import AGENT_UNIT, Host
from fleetpy.errors import FleetpyError
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.registry.transport import EtcdNoSpace
from fleetpy.unitfile.template import render

from support.etcd_transport import transport
from support.paths import ROOT

TTL = 5  # agents' and the engine's lease TTL
GRACE = TTL + 2  # the engine's grace period: the longest agent TTL + GRACE_MARGIN
KILL_OUTAGE = 20.0
PAUSE_OUTAGE = 3.0 * TTL
# Units must be reported active again this soon after etcd is healthy.
ACTIVE_BOUND = TTL + 2.0
# How long after etcd is healthy the cluster is watched for a late loss. etcd restores
# leases with about one TTL (plus an election timeout) when it starts: a machine still
# registered after this window proves its agent renewed its lease after the outage.
WINDOW = TTL + 3.0
# A dead host's units active elsewhere: TTL + settle + placement and start, generously
# (speed is measured in bench/bench_outages.py, not asserted tightly by the tests).
MOVE_BOUND = 15.0
PLAIN_UNIT = "[Service]\nExecStart=/bin/sleep 100000\n"


# ----------------------------------------------------------------------------- operator


class Operator:
    """The operator's side: one `fleetpy engine` process, and start/stop/destroy as the
    CLI does them (fleetpy.client), in this process. Not the CLI itself: a `fleetpy`
    process now and then hangs at exit (gRPC's Rendezvous.__del__ at interpreter
    shutdown, unrelated to outages); with ~50 commands per run that would make the
    tests flaky."""

    def __init__(self, etcd: EtcdServer, prefix: str, workdir: Path) -> None:
        self.workdir = workdir
        self.registry = Registry(RegistryConfig(endpoints=(etcd.endpoint,), prefix=prefix))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
        env.update(FLEETPY_ENDPOINT=etcd.endpoint, FLEETPY_ETCD_PREFIX=prefix)
        self.engine_log = workdir / "engine.log"
        with open(self.engine_log, "ab") as log:
            self.engine = subprocess.Popen(
                [sys.executable, "-m", "fleetpy", "engine", "--lease-ttl", str(TTL)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def write(self, name: str, text: str) -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)

    def docker_unit(self, name: str) -> str:
        """units/docker-service.service.j2 with the local busybox image (as test_e2e)."""
        values = {
            "name": name.split(".")[0],
            "image": "local/busybox:latest",
            "command": ["sleep", "100000"],
        }
        return self.write(name, render(ROOT / "units" / "docker-service.service.j2", values))

    def _wait(self, names: list[str], target: waiting.WaitTarget, seconds: int) -> None:
        result = waiting.wait_for(self.registry, names, target, seconds)
        assert result.error_message() is None, result.error_message()

    def start(self, paths: list[str], seconds: int = 30) -> None:
        operations.start(self.registry, paths)
        self._wait([Path(p).name for p in paths], waiting.WaitTarget.LAUNCHED, seconds)

    def stop(self, names: list[str], seconds: int = 30) -> None:
        operations.stop(self.registry, names)
        self._wait(names, waiting.WaitTarget.STOPPED, seconds)

    def destroy(self, names: list[str]) -> None:
        operations.destroy(self.registry, names)

    def engine_events(self, event: str) -> list[str]:
        return [
            line
            for line in self.engine_log.read_text(errors="replace").splitlines()
            if f"event={event} " in line + " "
        ]

    def close(self) -> None:
        self.engine.kill()
        self.engine.wait()
        self.registry.close()


# ----------------------------------------------------------------------------- observer


@dataclass(frozen=True)
class Sample:
    """One read of the cluster, at `at` (monotonic, when the read returned)."""

    at: float
    machines: frozenset[str]
    schedule: Mapping[str, str]  # unit -> machine
    states: Mapping[str, Mapping[str, str]]  # unit -> machine -> ActiveState


class Observer:
    """Reads the whole cluster every `interval` seconds on a thread of its own; reads
    that fail (etcd away) are simply missing."""

    def __init__(self, endpoints: Sequence[str], prefix: str, interval: float = 0.1) -> None:
        # A short timeout: a read hanging on a paused etcd must not hide the recovery.
        self.registry = Registry(
            RegistryConfig(endpoints=tuple(endpoints), prefix=prefix, timeout=1.0)
        )
        self.interval = interval
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)

    def start(self) -> Observer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.registry.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                view = self.registry.read_view(with_text=False)
            except FleetpyError:
                self._stop.wait(self.interval)
                continue
            sample = Sample(
                at=time.monotonic(),
                machines=frozenset(view.machines),
                schedule={unit: machine for unit, (machine, _) in view.schedule.items()},
                states={
                    unit: {m: s.active for m, s in by_machine.items()}
                    for unit, by_machine in view.states.items()
                },
            )
            with self._lock:
                self.samples.append(sample)
            self._stop.wait(self.interval)

    def since(self, start: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.at >= start]

    def wait(
        self, good: Callable[[Sample], bool], start: float, timeout: float, what: str
    ) -> Sample:
        """The first sample after `start` for which `good` holds."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((s for s in self.since(start) if good(s)), None)
            if found is not None:
                return found
            assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
            time.sleep(self.interval / 2)


def at_homes(sample: Sample, homes: Mapping[str, str]) -> bool:
    """Every unit of HOMES (unit -> machine) scheduled on its machine (unscheduled counts
    as moved)."""
    return all(sample.schedule.get(unit) == machine for unit, machine in homes.items())


def active_at(sample: Sample, homes: Mapping[str, str], machines: frozenset[str]) -> bool:
    """Exactly MACHINES registered, every unit of HOMES scheduled on its machine and
    reported active there only."""
    return (
        sample.machines == machines
        and at_homes(sample, homes)
        and all(sample.states.get(unit) == {machine: "active"} for unit, machine in homes.items())
    )


def active_once(sample: Sample, units: Sequence[str], machines: frozenset[str]) -> bool:
    """Exactly MACHINES registered, every unit scheduled on one of them, wherever, and
    reported active there only: whole again after units had to move."""
    homes = {unit: sample.schedule.get(unit, "") for unit in units}
    return all(m in machines for m in homes.values()) and active_at(sample, homes, machines)


def settled_after(
    observer: Observer, start: float, good: Callable[[Sample], bool], window: float, what: str
) -> float:
    """Seconds from START (monotonic) until GOOD held for good: the first good read after
    the last read that was not, within WINDOW. WINDOW is waited out: a late loss (a lease
    etcd restored but nobody renewed) shows within it; no condition says earlier that
    none is coming."""
    remaining = start + window - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    samples = observer.since(start)
    assert samples, f"no successful read after {what}"
    bad = [i for i, s in enumerate(samples) if not good(s)]
    assert not bad or bad[-1] < len(samples) - 1, (
        f"not whole {window:g}s after {what}: {samples[-1]}"
    )
    first_good = samples[bad[-1] + 1] if bad else samples[0]
    return first_good.at - start


# ----------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class Placed:
    """A unit as it ran before the outage: where, and systemd's MainPID there."""

    unit: str
    host: Host
    pid: int
    docker: bool


@dataclass
class Cluster:
    hosts: list[Host]
    operator: Operator
    etcd: EtcdServer
    observer: Observer
    placed: dict[str, Placed] = field(default_factory=dict)
    probes: int = 0

    @property
    def machines(self) -> frozenset[str]:
        return frozenset(h.machine_id for h in self.hosts)

    def homes(self) -> dict[str, str]:
        return {unit: p.host.machine_id for unit, p in self.placed.items()}

    def at_home(self, sample: Sample) -> bool:
        """Every unit scheduled where it was (unscheduled counts as moved)."""
        return at_homes(sample, self.homes())

    def all_active(self, sample: Sample) -> bool:
        """Both machines registered, every unit reported active on its own machine only."""
        return active_at(sample, self.homes(), self.machines)

    def start_units(self, plain: int, docker: int) -> None:
        files = [self.operator.write(f"sleep-{i}.service", PLAIN_UNIT) for i in range(plain)]
        files += [self.operator.docker_unit(f"box-{i}.service") for i in range(docker)]
        self.operator.start(files, seconds=90)
        sample = self.observer.wait(
            lambda s: all(
                s.states.get(Path(f).name, {}).get(s.schedule.get(Path(f).name, "")) == "active"
                for f in files
            ),
            time.monotonic(),
            30,
            "units active",
        )
        for path in files:
            unit = Path(path).name
            host = next(h for h in self.hosts if h.machine_id == sample.schedule[unit])
            pid = host.main_pid(unit)
            assert pid > 0 and host.is_active(unit)
            self.placed[unit] = Placed(unit, host, pid, unit.startswith("box-"))

    def _agent_journal(self, host: Host) -> list[str]:
        return host.run(
            ["journalctl", "-u", AGENT_UNIT, "--no-pager", "-o", "cat"], check=False
        ).stdout.splitlines()

    def agent_stops(self, host: Host) -> list[str]:
        """Agent journal lines stopping one of the placed units (probes excluded)."""
        return [
            line
            for line in self._agent_journal(host)
            if "event=unit_action" in line
            and "action=stop" in line
            and any(f"unit={unit}" in line.split() for unit in self.placed)
        ]

    def agent_events(self, host: Host, event: str) -> int:
        return sum(f"event={event} " in line + " " for line in self._agent_journal(host))

    def registrations(self) -> dict[str, int]:
        """Host name -> how often its agent registered its machine (with a new lease)."""
        return {host.name: self.agent_events(host, "machine_registered") for host in self.hosts}

    def assert_untouched(self) -> None:
        """No unit restarted, moved or stopped: same MainPID on the same host."""
        for placed in self.placed.values():
            assert placed.host.is_active(placed.unit), (
                f"{placed.unit} not active on {placed.host.name}"
            )
            pid = placed.host.main_pid(placed.unit)
            assert pid == placed.pid, (
                f"{placed.unit} restarted on {placed.host.name}: {placed.pid} -> {pid}"
            )
        assert self.operator.engine_events("unit_moved") == []
        for host in self.hosts:
            assert self.agent_stops(host) == [], f"agent on {host.name} stopped units"

    def start_probe(self) -> float:
        """Start a new unit and wait until it runs, then stop it; seconds until it ran.

        Probes are destroyed only at the end (destroy_probes): removing a unit file
        makes the agent reload systemd, and a reload makes the agent report every other
        unit of that host as inactive (see test_reported_states_survive_a_daemon_reload),
        which would hide what the checks look for."""
        self.probes += 1
        name = f"probe-{self.probes}.service"
        started = time.monotonic()
        self.operator.start([self.operator.write(name, PLAIN_UNIT)])
        took = time.monotonic() - started
        self.operator.stop([name])
        return took

    def destroy_probes(self) -> None:
        if self.probes:
            self.operator.destroy([f"probe-{i}.service" for i in range(1, self.probes + 1)])


@contextmanager
def running_cluster(
    hosts: list[Host], etcd: EtcdServer, prefix: str, workdir: Path
) -> Iterator[Cluster]:
    """Two booted hosts (agents at --ttl TTL on `etcd` under `prefix`), an engine, 4 plain
    and 2 docker units spread over both hosts; the probes are destroyed at the end."""
    operator = Operator(etcd, prefix, workdir)
    observer = Observer((etcd.endpoint,), prefix).start()
    c = Cluster(hosts, operator, etcd, observer)
    try:
        observer.wait(lambda s: s.machines == c.machines, time.monotonic(), 60, "2 machines")
        c.start_units(plain=4, docker=2)
        for host in hosts:  # the mix is spread: each host runs plain and docker units
            kinds = {p.docker for p in c.placed.values() if p.host is host}
            assert kinds == {True, False}, f"{host.name} runs docker units {kinds}"
        yield c
        c.destroy_probes()
    finally:
        observer.close()
        operator.close()


# ----------------------------------------------------------------------------- outages


def kill_etcd(etcd: EtcdServer, seconds: float) -> float:
    """kill -9, `seconds` down, restart on the same data dir and ports; returns when etcd
    was healthy again (monotonic)."""
    etcd.kill()
    time.sleep(seconds)  # the outage itself
    etcd.restart()  # returns once healthy
    return time.monotonic()


def pause_etcd(etcd: EtcdServer, seconds: float) -> float:
    """SIGSTOP for `seconds`, SIGCONT; returns when etcd was healthy again (monotonic).
    Longer than the TTL, every lease has run out: etcd revokes them all at once."""
    etcd.pause()
    time.sleep(seconds)  # the outage itself
    etcd.resume()
    etcd.wait_healthy()
    return time.monotonic()


def lease_ids(etcd: EtcdServer) -> list[int]:
    out = subprocess.run(
        ["etcdctl", "--endpoints", etcd.endpoint, "lease", "list"],
        env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return [int(line, 16) for line in out.splitlines()[1:] if line.strip()]  # after "found N"


def revoke_every_lease(etcd: EtcdServer) -> float:
    """Every lease (two agents' and the engine's) revoked at once, as etcd does after a
    long pause; returns when the last revocation was sent (monotonic)."""
    leases = lease_ids(etcd)
    assert len(leases) >= 3  # two agents and the engine
    with Registry(RegistryConfig(endpoints=(etcd.endpoint,), prefix="/revoker")) as reg:
        revoked = time.monotonic()
        threads = [threading.Thread(target=reg.revoke_lease, args=(lease,)) for lease in leases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not set(lease_ids(etcd)) & set(leases), "a lease survived its revocation"
    return revoked


# ----------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Recovery:
    """One outage ridden out: seconds from etcd healthy until every unit was reported
    active for good, seconds a unit started right after took to run, and how many agents
    registered anew (with a new lease)."""

    active_again_s: float
    probe_started_s: float
    agents_registered_anew: int


def recovered_after(cluster: Cluster, healthy: float) -> float:
    """Seconds from etcd healthy until every unit was reported active for good (within
    WINDOW, settled_after). Asserts that no read in that time had a unit scheduled
    anywhere else (or nowhere)."""
    seconds = settled_after(
        cluster.observer, healthy, cluster.all_active, WINDOW, "etcd was healthy"
    )
    moved = [s for s in cluster.observer.since(healthy) if not cluster.at_home(s)]
    assert not moved, f"schedule changed after the outage: {dict(moved[0].schedule)}"
    return seconds


def ride_out(cluster: Cluster, outage: Callable[[], float], leases_lost: bool) -> Recovery:
    """One outage (`outage()` returns when etcd was healthy again), then every check:
    nothing moved during or after it, a new unit starts, every unit reported active again
    within WINDOW, none restarted, moved or stopped. leases_lost: etcd revokes every lease
    when it comes back, so every agent must have registered anew (proof that the scenario
    took the path it is meant to test). The bound on the recovery (ACTIVE_BOUND) is the
    caller's: the tests assert it, the benchmark reports it."""
    registered = cluster.registrations()
    began = time.monotonic()
    healthy = outage()
    during = [s for s in cluster.observer.since(began) if s.at < healthy]
    assert all(cluster.at_home(s) for s in during), "schedule changed during the outage"
    return _recovery(cluster, registered, healthy, leases_lost)


def _recovery(
    cluster: Cluster, registered: dict[str, int], healthy: float, leases_lost: bool
) -> Recovery:
    probe = cluster.start_probe()
    seconds = recovered_after(cluster, healthy)
    cluster.assert_untouched()
    again = {name: count - registered[name] for name, count in cluster.registrations().items()}
    if leases_lost:
        assert all(again.values()), (
            f"each agent must find its lease gone and register anew: {again}"
        )
    return Recovery(seconds, probe, sum(again.values()))


def ride_out_revocation(cluster: Cluster) -> Recovery:
    """Every lease revoked at once (etcd up all along), then ride_out's checks; every
    agent must register anew."""
    registered = cluster.registrations()
    revoked = revoke_every_lease(cluster.etcd)
    return _recovery(cluster, registered, revoked, leases_lost=True)


def kill_host_and_wait_for_moves(cluster: Cluster, bound: float) -> float:
    """Kill the host of the first unit; its units must run on the other host, the other
    host's units untouched, and the engine must have moved exactly the dead host's units.
    Returns the seconds from the kill until all of them are reported active there."""
    victim = next(iter(cluster.placed.values())).host
    survivor = next(h for h in cluster.hosts if h is not victim)
    moving = sorted(u for u, p in cluster.placed.items() if p.host is victim)
    staying = {u: p for u, p in cluster.placed.items() if p.host is survivor}
    killed = time.monotonic()
    victim.kill()
    arrived = cluster.observer.wait(
        lambda s: all(
            s.schedule.get(u) == survivor.machine_id
            and s.states.get(u) == {survivor.machine_id: "active"}
            for u in moving
        ),
        killed,
        bound + 10,
        "the dead host's units active on the survivor",
    )
    seconds = arrived.at - killed
    for unit in moving:
        assert survivor.is_active(unit)
    for unit, placed in staying.items():  # the survivor's own units were left alone
        assert survivor.main_pid(unit) == placed.pid
    assert {
        line.split("unit=")[1].split()[0] for line in cluster.operator.engine_events("unit_moved")
    } == set(moving)
    return seconds


def restart_etcd_then_kill_a_host(cluster: Cluster) -> tuple[float, float]:
    """etcd kill -9 and an immediate restart, then a host killed: returns (seconds until
    its units were active on the other host, the bound). The engine may find the dead
    machine gone only after it re-read etcd: then its grace period applies once, and no
    more than that may be added to the move."""
    cluster.etcd.kill()
    cluster.etcd.restart()
    bound = MOVE_BOUND + GRACE
    return kill_host_and_wait_for_moves(cluster, bound), bound


def fill_etcd(endpoint: str) -> int:
    """Overwrite one key outside fleetpy's prefix until etcd refuses (NOSPACE): a history
    that grew, as it does without compaction. Returns the writes it took."""
    with transport(endpoint) as raw:
        value = b"x" * 100_000
        for count in range(1, 1000):
            try:
                raw.put(b"/filler", value)
            except EtcdNoSpace:
                return count
    raise AssertionError("etcd never ran out of space")
