"""Class 2: with `--endpoint A,B,C` every command, the engine and an agent work while the
cluster has a quorum, whichever member is down and wherever it is listed. A real
3-member etcd; members killed with SIGKILL and paused with SIGSTOP."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdCluster, free_port

from support.hostile_harness import (
    CONSOLE_SCRIPT,
    CONTROL,
    SERVICE,
    Hostile,
    Keyspace,
    Via,
    assert_one_clean_error,
)
from support.waiting import until


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as etcd:
        yield etcd


class Fleet(Hostile):
    """The CLI pointed at every member, plus an engine and a simulated agent. The CLI runs
    as the console script, a fresh process each time as users run it: in one process
    gRPC would share its connections (and their back-off after a member died) between
    commands, and that sharing is not what these cases are about."""

    def __init__(self, cluster: EtcdCluster, workdir: Path, order: list[int]) -> None:
        super().__init__(cluster.members[0], "/failover", workdir, Via.SCRIPT)
        self.cluster = cluster
        self.env["FLEETPY_ENDPOINT"] = ",".join(cluster.endpoints[i] for i in order)
        self.env["FLEETPY_REQUEST_TIMEOUT"] = "5"
        self.daemons: list[subprocess.Popen[bytes]] = []
        self._members: dict[str, Keyspace] = {}

    def keyspace(self) -> Keyspace:
        live = next(m for m in self.cluster.members if m.running)
        if live.endpoint not in self._members:
            self._members[live.endpoint] = Keyspace(live.endpoint)
        return self._members[live.endpoint]

    def close(self) -> None:
        for keyspace in self._members.values():
            keyspace.close()
        self._members.clear()

    def daemon(self, name: str, *args: str) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.daemons.append(
                subprocess.Popen([CONSOLE_SCRIPT, *args], env=self.env, stdout=log, stderr=log)
            )

    def stop_daemons(self) -> None:
        for proc in self.daemons:
            proc.terminate()
            proc.wait(timeout=10)

    def gone(self, unit: str) -> bool:
        """No record of UNIT is left: destroy deleted its own, the engine its schedule
        entry, the agent its reported state (its audit trail stays, by design)."""
        _, kvs = self.keyspace().state(self.prefix + "/")
        trail = f"{self.prefix}/audit/{unit}"
        return not any(key.endswith(f"/{unit}") and key != trail for key in kvs)


def run_every_command(fleet: Fleet, tag: str) -> None:
    unit = fleet.write(f"fo-{tag}.service", SERVICE)
    fleet.ok("submit", unit)
    fleet.ok("start", "--block-attempts", "30", unit)
    fleet.ok("list-unit-files")
    rows = json.loads(fleet.ok("list-units", "-o", "json").stdout)
    assert any(r["unit"] == f"fo-{tag}.service" and r["active"] == "active" for r in rows)
    assert json.loads(fleet.ok("list-machines", "-o", "json").stdout)
    assert fleet.ok("cat", f"fo-{tag}.service").stdout == SERVICE
    fleet.ok("stop", "--block-attempts", "30", f"fo-{tag}.service")
    fleet.ok("unload", "--block-attempts", "30", f"fo-{tag}*")
    fleet.ok("load", "--block-attempts", "30", f"fo-{tag}.service")
    fleet.ok("destroy", f"fo-{tag}.service")
    # destroy deletes the unit's record and returns, as fleetctl's did; the engine and the
    # agent then remove what they wrote for it. Only once they have is the prefix quiet
    # for a refused command to be shown changing nothing.
    until(lambda: fleet.gone(f"fo-{tag}.service"), timeout=30, what=f"fo-{tag} to be gone")
    fleet.rejects("destroy", f"fo-{tag}.service", match="is not submitted")


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("fault", ["killed", "paused"])
def test_every_command_works_with_one_member_down(
    cluster: EtcdCluster, tmp_path: Path, position: str, fault: str
) -> None:
    victim = 1
    others = [i for i in range(3) if i != victim]
    order = {
        "first": [victim, *others],
        "middle": [others[0], victim, others[1]],
        "last": [*others, victim],
    }[position]
    fleet = Fleet(cluster, tmp_path, order)
    # The previous case's agent (the same machine id) stopped without revoking its lease.
    until(lambda: not fleet.keyspace().leased(fleet.prefix), timeout=30, what="a quiet prefix")
    # A unit of the same contents stays submitted: the engine's garbage collection (at
    # its full reads, which a member's loss brings) must not delete the contents' blob
    # while a refused command is being shown changing nothing.
    fleet.ok("submit", fleet.write("fo-keep-contents.service", SERVICE))
    fleet.daemon("engine", "engine", "--lease-ttl", "3")
    fleet.daemon(
        "agent", "agent", "--unit-manager", "simulated", "--machine-id", "fo-m1", "--ttl", "3"
    )
    try:
        fleet.ok("list-machines")
        (cluster.kill if fault == "killed" else cluster.pause)(victim)
        for repeat in range(2):  # a random first choice must not matter either
            run_every_command(fleet, f"{position}-{fault}-{repeat}")
        assert all(proc.poll() is None for proc in fleet.daemons)
    finally:
        fleet.stop_daemons()
        if fault == "killed":
            cluster.restart(victim)
        else:
            cluster.resume(victim)
        cluster.wait_healthy()
        fleet.ok("destroy", "fo-keep-contents.service")
        fleet.close()
    for name in ("engine", "agent"):
        log = (tmp_path / f"{name}.log").read_text()
        assert "Traceback" not in log and not CONTROL.search(log)


def test_engine_and_agent_carry_on_when_their_member_dies(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    """Kill each member in turn under a running engine and agent: units keep being placed
    and reported; nothing that was running is stopped."""
    fleet = Fleet(cluster, tmp_path, [0, 1, 2])
    fleet.env["FLEETPY_ETCD_PREFIX"] = "/daemons-failover"
    fleet.prefix = "/daemons-failover"
    fleet.daemon("engine", "engine", "--lease-ttl", "3")
    fleet.daemon(
        "agent", "agent", "--unit-manager", "simulated", "--machine-id", "fo-m2", "--ttl", "3"
    )
    try:
        fleet.ok("start", "--block-attempts", "30", fleet.write("steady.service", SERVICE))
        for victim in range(3):
            cluster.kill(victim)
            unit = fleet.write(f"during-{victim}.service", SERVICE)
            fleet.ok("start", "--block-attempts", "30", unit)
            rows = json.loads(fleet.ok("list-units", "-o", "json").stdout)
            assert {r["unit"] for r in rows if r["active"] == "active"} >= {
                "steady.service",
                f"during-{victim}.service",
            }
            cluster.restart(victim)
            cluster.wait_healthy()
        engine_log = (tmp_path / "engine.log").read_text()
        agent_log = (tmp_path / "agent.log").read_text()
        assert "unit_moved" not in engine_log
        assert "action=stop" not in agent_log
        assert all(proc.poll() is None for proc in fleet.daemons)
    finally:
        fleet.stop_daemons()
        fleet.close()


def test_every_endpoint_down_is_one_line_within_the_timeout(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    hostile = Hostile.__new__(Hostile)
    hostile.workdir = tmp_path
    hostile.via = Via.SCRIPT
    hostile.env = {
        "FLEETPY_ENDPOINT": ",".join(f"http://127.0.0.1:{p}" for p in ports),
        "FLEETPY_REQUEST_TIMEOUT": "2",
        "PATH": "/usr/bin:/bin",
    }
    for args in (("list-units",), ("start", "--no-block", "x.service"), ("destroy", "x*")):
        began = time.monotonic()
        outcome = hostile.run(*args)
        line = assert_one_clean_error(outcome, match="cannot reach etcd at")
        assert all(str(p) in line for p in ports)
        assert time.monotonic() - began < 6
