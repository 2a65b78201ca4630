"""Fault benchmark: how long until the cluster is whole again after each fault of the
README's "Faults" table, on real etcd with simulated machines.

    python bench/bench_faults.py [--output bench/results/faults.json] [--keep-workdir]
    python bench/median.py --runs 3 --result bench/results/faults.json -- bench/bench_faults.py

Each fault gets a fresh etcd (one member, or three for the member and quorum faults) and a
fresh cluster on it: the real engine and three agents in this process (tests/support/
sim_cluster.py), each agent with the in-memory unit manager (the same agent and engine
code as on a host; no systemd), at TTL 5 s, 12 units over them; the CLI in process
(typer's runner: the CLI's code, without a Python start-up that would hide the figure);
the observer of tests/support/outages.py reads the cluster every 0.1 s. Figures, in
seconds from the moment the fault ended (etcd started again, resumed, reclaimed,
restored; for a host: from the kill or the stop):

  healthy_s     etcd answers its /health again
  writes_s      a CLI write (`fleetpy submit` of a new unit) succeeded
  whole_s       every unit reported active where it was, for good (the first such read
                after the last read that was not, within TTL + 3 s, waited out)
  recovered_s   the largest of writes_s, whole_s (and new_unit_s): whole again

and per fault what it needs (refused_s: how long a CLI write took to fail during the
fault; new_unit_s: a unit started after the fault active; moved_s: a dead host's units
active elsewhere; registered_s: a restarted agent registered again; moved / restarted /
registered_anew: counts). After each fault every check runs (nothing moved, restarted or
stopped where nothing may; a failed check ends the benchmark with its message). A real
host rebooting is tests/system/test_host_reboot.py's, not measured here.

Prints a table and writes bench/results/faults.json with the load average before each
fault; the engine's and agents' logs go to a file in the work directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from typer.testing import CliRunner, Result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Shared with the tests: modules of their support package (never a test module).
sys.path.insert(0, str(ROOT / "tests"))

from fleetpy.agent import RESTORE_GRACE, Agent
from fleetpy.cli import app
from fleetpy.cluster.etcd import EtcdCluster, EtcdServer
from fleetpy.registry import RegistryConfig
from fleetpy.registry.transport import prefix_range_end

from support.etcd_transport import transport
from support.outages import (
    TTL,
    WINDOW,
    Observer,
    Sample,
    active_at,
    active_once,
    at_homes,
    fill_etcd,
    settled_after,
)
from support.sim_cluster import Cluster, unit

RESULTS = ROOT / "bench" / "results" / "faults.json"
PREFIX = "/bench-faults"
MACHINES = ("m1", "m2", "m3")
UNITS = 12
PAUSE = 2.0 * TTL  # etcd stopped longer than the TTL: every lease revoked on resume
QUORUM_LOST = 2.0 * TTL  # two of three members down this long
QUOTA = 4 * 1024 * 1024  # etcd's backend quota for the NOSPACE fault
REQUEST_TIMEOUT = 5.0  # the CLI's --request-timeout

PROGRESS: TextIO = sys.stderr  # the benchmark's own lines; fleetpy's logs go to a file


def say(message: str) -> None:
    print(f"bench_faults: {message}", file=PROGRESS, flush=True)


@dataclass
class Sim:
    """The cluster under test: etcd's endpoints, the engine and agents (sim_cluster), the
    observer, and where the units ran before the fault."""

    endpoints: tuple[str, ...]
    cluster: Cluster
    observer: Observer
    workdir: Path
    homes: dict[str, str]
    probes: int = 0

    def machines(self) -> frozenset[str]:
        return frozenset(self.cluster.agents)

    def cli(self, *args: str) -> Result:
        """`fleetpy ARGS` in process against this cluster."""
        return CliRunner().invoke(
            app,
            [
                "--endpoint",
                ",".join(self.endpoints),
                "--etcd-prefix",
                PREFIX,
                "--request-timeout",
                f"{REQUEST_TIMEOUT:g}",
                *args,
            ],
        )

    def unit_file(self, name: str) -> str:
        path = self.workdir / name
        path.write_text(f"[Service]\nExecStart=/bin/sleep 1000\n# {name}\n")
        return str(path)

    def submit_probe(self) -> Result:
        """A CLI write that changes nothing that runs: a new unit submitted (inactive)."""
        self.probes += 1
        return self.cli("submit", self.unit_file(f"probe-{self.probes}.service"))

    def writes_work(self, start: float, timeout: float = 60.0) -> float:
        """Seconds from START until a CLI write succeeded (tried every 0.1 s)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.submit_probe()
            if result.exit_code == 0:
                return time.monotonic() - start
            assert time.monotonic() < deadline, f"writes still fail: {result.output}"
            time.sleep(0.1)

    def whole(self, sample: Sample) -> bool:
        """Every unit active where it ran before, on its machine only, every agent there."""
        return active_at(sample, self.homes, self.machines())

    def whole_after(self, start: float, what: str, window: float = WINDOW) -> float:
        return settled_after(self.observer, start, self.whole, window, what)

    def actions(self) -> dict[str, int]:
        return {m: a.stats.actions for m, a in self.cluster.agents.items()}

    def leases(self) -> dict[str, int | None]:
        return {m: a._lease for m, a in self.cluster.agents.items()}

    def assert_untouched(self, since: float, actions: dict[str, int]) -> None:
        """Nothing moved since SINCE (every read), nothing started or stopped by any
        agent, every unit running once on its machine."""
        moved = [s for s in self.observer.since(since) if not at_homes(s, self.homes)]
        assert not moved, f"schedule changed: {dict(moved[0].schedule)}"
        assert self.actions() == actions, f"agents acted: {actions} -> {self.actions()}"
        assert dict(self.cluster.hosted()) == self.homes, self.cluster.hosted()


@contextmanager
def sim_on(endpoints: list[str], workdir: Path) -> Iterator[Sim]:
    """An engine and three agents on ENDPOINTS, UNITS units started and reported active."""
    config = RegistryConfig(endpoints=tuple(endpoints), prefix=PREFIX, timeout=REQUEST_TIMEOUT)
    cluster = Cluster(config)
    observer = Observer(endpoints, PREFIX).start()
    try:
        cluster.engine(lease_ttl=TTL)
        for machine in MACHINES:
            cluster.agent(machine, ttl=TTL)
        names = [f"u{i:02}.service" for i in range(UNITS)]
        cluster.registry.change_units([unit(name) for name in names])
        first = observer.wait(
            lambda s: active_once(s, names, frozenset(MACHINES)),
            time.monotonic(),
            60,
            "units active",
        )
        homes = {name: first.schedule[name] for name in names}
        assert dict(cluster.hosted()) == homes
        yield Sim(tuple(endpoints), cluster, observer, workdir, homes)
    finally:
        observer.close()
        cluster.close()


def rounded(figures: dict[str, float | int]) -> dict[str, float | int]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def recovered(figures: dict[str, float | int]) -> dict[str, float | int]:
    """recovered_s: the cluster whole and taking writes (and running a new unit, where
    that is measured)."""
    needed = ("writes_s", "whole_s", "new_unit_s")
    figures["recovered_s"] = max(figures[k] for k in needed if k in figures)
    return figures


# ----------------------------------------------------------------------------- etcd


def etcd_restarted(workdir: Path) -> dict[str, float | int]:
    """etcd stopped and started again (systemctl restart): from its start."""
    with EtcdServer() as etcd, sim_on([etcd.endpoint], workdir) as sim:
        actions, leases = sim.actions(), sim.leases()
        began = time.monotonic()
        etcd.restart(wait=False)  # SIGTERM, then started again on the same data
        start = time.monotonic()
        etcd.wait_healthy()
        healthy = time.monotonic() - start
        figures = {"healthy_s": healthy, "writes_s": sim.writes_work(start)}
        figures["whole_s"] = sim.whole_after(start, "etcd restarted")
        sim.assert_untouched(began, actions)
        figures["registered_anew"] = sum(leases[m] != sim.leases()[m] for m in leases)
        return recovered(figures)


def etcd_paused(workdir: Path) -> dict[str, float | int]:
    """etcd SIGSTOPped for PAUSE s (> TTL), then SIGCONT: from its resumption."""
    with EtcdServer() as etcd, sim_on([etcd.endpoint], workdir) as sim:
        actions, leases = sim.actions(), sim.leases()
        began = time.monotonic()
        etcd.pause()
        time.sleep(PAUSE)  # the fault itself
        etcd.resume()
        start = time.monotonic()
        etcd.wait_healthy()
        figures = {"healthy_s": time.monotonic() - start, "writes_s": sim.writes_work(start)}
        figures["whole_s"] = sim.whole_after(start, "etcd resumed")
        sim.assert_untouched(began, actions)
        anew = sum(leases[m] != sim.leases()[m] for m in leases)
        assert anew == len(MACHINES), f"every lease ran out: {anew} agents registered anew"
        figures["registered_anew"] = anew
        return recovered(figures)


def member_down(workdir: Path) -> dict[str, float | int]:
    """The leading member of three killed (writes need a new leader), then back."""
    with EtcdCluster(3) as etcd, sim_on(etcd.endpoints, workdir) as sim:
        actions, leases = sim.actions(), sim.leases()
        leader = etcd.leader()
        assert leader is not None
        killed = time.monotonic()
        etcd.kill(leader)
        figures: dict[str, float | int] = {"down_writes_s": sim.writes_work(killed)}
        figures["down_whole_s"] = sim.whole_after(killed, "the leader was killed")
        etcd.members[leader].restart(wait=False)
        start = time.monotonic()
        etcd.wait_healthy()
        figures["healthy_s"] = time.monotonic() - start
        figures["writes_s"] = sim.writes_work(start)
        figures["whole_s"] = sim.whole_after(start, "the member was back")
        sim.assert_untouched(killed, actions)
        assert sim.leases() == leases, "an agent registered anew"
        return recovered(figures)


def quorum_lost(workdir: Path) -> dict[str, float | int]:
    """Two of three members (the leader among them) down QUORUM_LOST s, then both back:
    from their start."""
    with EtcdCluster(3) as etcd, sim_on(etcd.endpoints, workdir) as sim:
        actions, leases = sim.actions(), sim.leases()
        leader = etcd.leader()
        assert leader is not None
        lost = [leader, (leader + 1) % 3]
        began = time.monotonic()
        for index in lost:
            etcd.kill(index)
        (survivor,) = {0, 1, 2} - set(lost)
        with transport(etcd.endpoints[survivor]) as raw:  # an election timeout later
            while raw.member_status()[0].leader != 0:
                assert time.monotonic() - began < 30, "the survivor kept its leader"
                time.sleep(0.05)
        tried = time.monotonic()
        result = sim.submit_probe()
        refused = time.monotonic() - tried
        assert result.exit_code == 1 and "etcd has lost its quorum" in result.output, result.output
        time.sleep(max(0.0, began + QUORUM_LOST - time.monotonic()))  # the fault itself
        assert dict(sim.cluster.hosted()) == sim.homes, "units stopped without a quorum"
        for index in lost:
            etcd.members[index].restart(wait=False)
        start = time.monotonic()
        etcd.wait_healthy()
        figures = {
            "refused_s": refused,
            "healthy_s": time.monotonic() - start,
            "writes_s": sim.writes_work(start),
        }
        figures["whole_s"] = sim.whole_after(start, "the quorum was back")
        sim.assert_untouched(began, actions)
        assert sim.leases() == leases, "an agent registered anew"
        return recovered(figures)


def nospace(workdir: Path) -> dict[str, float | int]:
    """etcd full (NOSPACE, a small quota filled), then `fleetpy etcd reclaim`: from the
    reclaim until CLI writes work and a new unit is active."""
    quota = (f"--quota-backend-bytes={QUOTA}",)
    with EtcdServer(extra_args=quota) as etcd, sim_on([etcd.endpoint], workdir) as sim:
        actions, leases = sim.actions(), sim.leases()
        began = time.monotonic()
        fill_etcd(etcd.endpoint)
        tried = time.monotonic()
        result = sim.submit_probe()
        refused = time.monotonic() - tried
        assert result.exit_code == 1 and "fleetpy etcd reclaim" in result.output, result.output
        time.sleep(TTL)  # the fault itself, a TTL long: leases live on keepalives alone
        assert sim.leases() == leases and dict(sim.cluster.hosted()) == sim.homes
        start = time.monotonic()
        result = sim.cli("etcd", "reclaim")
        assert result.exit_code == 0, result.output
        figures: dict[str, float | int] = {
            "refused_s": refused,
            "reclaim_s": time.monotonic() - start,
            "writes_s": sim.writes_work(start),
        }
        sim.assert_untouched(began, actions)  # before the new unit adds its own actions
        started = sim.cli("start", "--no-block", sim.unit_file("new.service"))
        assert started.exit_code == 0, started.output
        arrived = sim.observer.wait(
            lambda s: next(iter(s.states.get("new.service", {}).values()), "") == "active",
            start,
            30,
            "the new unit active",
        )
        figures["new_unit_s"] = arrived.at - start
        figures["whole_s"] = sim.whole_after(start, "reclaim")
        assert {u: m for u, m in sim.cluster.hosted() if u != "new.service"} == sim.homes
        assert sim.leases() == leases, "an agent registered anew"
        return recovered(figures)


def restore(workdir: Path) -> dict[str, float | int]:
    """`fleetpy backup`, etcd's keys wiped (agents hold their units), `fleetpy restore`:
    from the restore until every unit is active once, wherever the engine placed it
    (settled over the agents' RESTORE_GRACE too: a copy the new placement left behind is
    stopped only then)."""
    with EtcdServer() as etcd, sim_on([etcd.endpoint], workdir) as sim:
        actions = sim.actions()
        backup = workdir / "cluster.backup"
        result = sim.cli("backup", str(backup))
        assert result.exit_code == 0, result.output
        with transport(etcd.endpoint) as raw:
            raw.delete(PREFIX + "/", prefix_range_end(PREFIX + "/"))
        deadline = time.monotonic() + 30
        while not all(a._held for a in sim.cluster.agents.values()):
            assert time.monotonic() < deadline, "agents never held their units"
            time.sleep(0.05)
        assert sim.actions() == actions, "agents acted on the wiped data"
        start = time.monotonic()
        result = sim.cli("restore", str(backup))
        assert result.exit_code == 0, result.output
        figures: dict[str, float | int] = {"restore_s": time.monotonic() - start}
        names = sorted(sim.homes)
        machines = sim.machines()
        figures["whole_s"] = settled_after(
            sim.observer,
            start,
            lambda s: active_once(s, names, machines),
            RESTORE_GRACE + WINDOW,
            "restore",
        )
        placed = sim.cluster.placement()
        hosted = sim.cluster.hosted()
        assert sorted(n for n, _ in hosted) == names, f"not each unit once: {hosted}"
        figures["moved"] = sum(placed[n] != sim.homes[n] for n in names)
        # Each move is a stop on the old machine and a start on the new one.
        figures["agent_actions"] = sum(sim.actions().values()) - sum(actions.values())
        return figures


# ----------------------------------------------------------------------------- hosts


def host_killed(workdir: Path) -> dict[str, float | int]:
    """A machine gone without a word (its agent stopped, its lease left to run out):
    until its units are active on the others, theirs untouched."""
    with EtcdServer() as etcd, sim_on([etcd.endpoint], workdir) as sim:
        victim = MACHINES[0]
        moving = sorted(u for u, m in sim.homes.items() if m == victim)
        staying = {u: m for u, m in sim.homes.items() if m != victim}
        agent = sim.cluster.agents.pop(victim)
        killed = time.monotonic()
        agent.stop(revoke=False)
        survivors = sim.machines()
        arrived = sim.observer.wait(
            lambda s: active_once(s, sorted(sim.homes), survivors) and at_homes(s, staying),
            killed,
            30,
            "the dead machine's units active on the others",
        )
        hosted = dict(sim.cluster.hosted())
        assert sorted(hosted) == sorted(sim.homes) and all(hosted[u] != victim for u in moving)
        return {"moved_s": arrived.at - killed, "moved": len(moving)}


def agent_restarted(workdir: Path) -> dict[str, float | int]:
    """An agent stopped and started again within its TTL (same machine id and instance,
    its units running on): until it is registered again; nothing moved or restarted."""
    with EtcdServer() as etcd, sim_on([etcd.endpoint], workdir) as sim:
        actions = sim.actions()
        machine = MACHINES[0]
        old = sim.cluster.agents[machine]
        began = time.monotonic()
        old.stop(revoke=False)  # as the daemon stops: its lease runs on
        new = Agent(sim.cluster.registry, old.manager, old.settings).start()
        sim.cluster.agents[machine] = new
        assert new.ready.wait(TTL * 4), "the restarted agent never registered"
        figures: dict[str, float | int] = {"registered_s": time.monotonic() - began}
        assert new._lease != old._lease
        figures["whole_s"] = sim.whole_after(began, "the agent restarted")
        actions[machine] = 0  # the new agent's own count: it must adopt, not start
        sim.assert_untouched(began, actions)
        return figures


FAULTS: dict[str, Callable[[Path], dict[str, float | int]]] = {
    "etcd_restarted": etcd_restarted,
    "etcd_paused": etcd_paused,
    "member_down": member_down,
    "quorum_lost": quorum_lost,
    "nospace": nospace,
    "host_killed": host_killed,
    "agent_restarted": agent_restarted,
    "restore": restore,
}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, float | int]]:
    results: dict[str, dict[str, float | int]] = {}
    for name, fault in FAULTS.items():
        if args.only and name not in args.only:
            continue
        here = workdir / name
        here.mkdir()
        load = round(os.getloadavg()[0], 2)
        figures = rounded(fault(here))
        say(f"{name}: {figures} (load {load})")
        results[name] = {"load_1min": load, **figures}
    return results


def table(results: dict[str, dict[str, float | int]]) -> list[str]:
    lines = [f"{'fault':<16} {'figure':<16} {'value':>8}"]
    for name, figures in results.items():
        for figure, value in figures.items():
            lines.append(f"{name:<16} {figure:<16} {value:>8}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="*", choices=sorted(FAULTS), help="these faults only")
    parser.add_argument("--keep-workdir", action="store_true", help="keep fleetpy's log")
    args = parser.parse_args()
    for name in [n for n in os.environ if n.startswith("FLEETPY_")]:
        del os.environ[name]  # the CLI gets its etcd and prefix from its options only

    workdir = Path(tempfile.mkdtemp(prefix="fleetpy-bench-faults-"))
    say(f"workdir {workdir}")
    started = time.time()
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    with open(workdir / "fleetpy.log", "a") as logs:
        sys.stderr = logs  # the engine's and agents' event lines (read at each print)
        try:
            results = run(args, workdir)
        finally:
            sys.stderr = PROGRESS
            if not args.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    loadavg_after = [round(x, 2) for x in os.getloadavg()]
    print("\n".join(table(results)))
    print(f"load average before {loadavg_before}, after {loadavg_after}")
    document: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "cpu_count": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg_after,
        "seconds": round(time.time() - started, 1),
        "machines": len(MACHINES),
        "units": UNITS,
        "ttl_s": TTL,
        "faults": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
