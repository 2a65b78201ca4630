"""etcd's history and quota (issue [12]): the engine leader compacts old revisions, and a
full etcd (the NOSPACE alarm) stops writes, not units, until `fleetpy etcd reclaim`.

Each test has an etcd of its own: compaction and alarms are etcd-wide, and the session's
etcd is shared by the other tests' watches."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.config import EngineSettings
from fleetpy.engine import Engine
from fleetpy.registry import Registry
from fleetpy.registry.transport import EtcdCompacted

from support.cli_helpers import SERVICE, one_error_line, snapshot, write
from support.cli_run import Run
from support.etcd_transport import transport
from support.outages import fill_etcd
from support.sim_cluster import Cluster
from support.waiting import until

pytestmark = pytest.mark.usefixtures("clean_env")

QUOTA = 4 * 1024 * 1024  # bytes: small enough to fill in a second or two


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """This test's own etcd (overrides the session's), with a small backend quota."""
    with EtcdServer(extra_args=(f"--quota-backend-bytes={QUOTA}",)) as server:
        yield server


def test_the_leader_compacts_history_older_than_its_interval(
    etcd: EtcdServer, cluster: Cluster, run: Run, units_dir: Path
) -> None:
    engine = Engine(
        Registry(cluster.config), EngineSettings(lease_ttl=2, compaction_interval=1.0)
    ).start()
    cluster.engines.append(engine)
    cluster.agent("m1")
    cluster.agent("m2")
    raw = transport(etcd.endpoint)
    first = raw.range(b"/", limit=1).revision
    files = [write(units_dir, f"churn{i}.service") for i in range(4)]
    for _ in range(5):  # writes over more than the interval: something to compact
        assert run("start", *files).exit_code == 0
        assert run("stop", *files).exit_code == 0

    def compacted() -> bool:
        try:
            raw.range(b"/", revision=first, limit=1)
        except EtcdCompacted:
            return True
        return False

    until(compacted, timeout=20, what="the leader to compact the first revisions")
    # Watches behind the compaction resynced: the cluster still follows every change.
    result = run("start", *files)
    assert result.exit_code == 0, result.output
    until(
        lambda: set(dict(cluster.hosted())) == {f"churn{i}.service" for i in range(4)}, timeout=20
    )
    assert engine.is_leader.is_set()
    raw.close()


def test_a_full_etcd_stops_writes_not_units_and_reclaim_resumes_everything(
    etcd: EtcdServer, cluster: Cluster, run: Run, registry: Registry, units_dir: Path
) -> None:
    cluster.engine()
    cluster.agent("m1")
    cluster.agent("m2")
    files = [write(units_dir, f"web{i}.service") for i in range(4)]
    assert run("start", *files).exit_code == 0
    until(lambda: len(dict(cluster.hosted())) == 4, timeout=20, what="four units running")
    placed, before = cluster.placement(), dict(cluster.hosted())

    fill_etcd(etcd.endpoint)
    # Every write fails in one line that says what to do, and writes nothing.
    units = snapshot(registry)
    extra = write(units_dir, "extra.service", SERVICE + "# extra\n")
    for args in (("start", "--no-block", extra), ("stop", "--no-block", files[0])):
        result = run(*args)
        assert result.exit_code == 1, result.output
        line = one_error_line(result)
        assert "out of space" in line and "fleetpy etcd reclaim" in line, line
    assert snapshot(registry) == units
    status = run("etcd", "status", "-o", "json")
    assert status.exit_code == 0, status.output
    assert [m["alarms"] for m in json.loads(status.stdout)] == [["NOSPACE"]]

    # Several TTLs later: leases kept (keepalives need no space), nothing moved or stopped.
    time.sleep(3 * max(a.settings.ttl for a in cluster.agents.values()))  # nothing may happen
    assert set(registry.list_machines()) == {"m1", "m2"}
    assert dict(cluster.hosted()) == before
    # A unit that dies meanwhile cannot be reported yet; it is once etcd takes writes.
    crashed = placed["web1.service"]
    cluster.agents[crashed].manager.fail("web1.service")  # type: ignore[attr-defined]
    del before["web1.service"]
    assert cluster.placement() == placed

    result = run("etcd", "reclaim")
    assert result.exit_code == 0, result.output
    assert "Disarmed NOSPACE" in result.stdout, result.stdout
    until(
        lambda: registry.list_states()["web1.service"][crashed].active == "failed",
        timeout=20,
        what="the failure during the outage reported",
    )
    # Everything resumes without restarting anything: a new unit runs, a stop is reported.
    assert run("start", "--no-block", extra).exit_code == 0
    assert run("stop", "--no-block", files[0]).exit_code == 0
    until(
        lambda: (
            "extra.service" in dict(cluster.hosted())
            and "web0.service" not in dict(cluster.hosted())
        ),
        timeout=20,
        what="the cluster to act on writes after reclaim",
    )
    until(
        lambda: registry.list_states()["web0.service"][placed["web0.service"]].active == "inactive",
        timeout=20,
        what="the stop reported",
    )
    assert {n: m for n, m in dict(cluster.hosted()).items() if n != "extra.service"} == {
        n: m for n, m in before.items() if n != "web0.service"
    }
