"""Two of three etcd members lost, then back (issue [12]): units keep running, commands
fail in one line naming the lost quorum instead of waiting out their timeout, agents keep
their leases, and when the quorum returns nothing moves."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fleetpy.cli import app
from fleetpy.cluster.etcd import EtcdCluster
from fleetpy.registry import RegistryConfig

from support.cli_helpers import SERVICE, write
from support.etcd_transport import transport
from support.sim_cluster import Cluster
from support.waiting import until

pytestmark = pytest.mark.usefixtures("clean_env")

# Long enough that a command which waited for it could not pass for a fast failure.
REQUEST_TIMEOUT = 30.0


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(3).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(etcd_cluster: EtcdCluster, prefix: str) -> Iterator[Cluster]:
    c = Cluster(RegistryConfig(endpoints=tuple(etcd_cluster.endpoints), prefix=prefix, timeout=5))
    yield c
    c.close()


def test_quorum_lost_keeps_units_running_fails_commands_fast_and_moves_nothing_when_back(
    etcd_cluster: EtcdCluster, cluster: Cluster, prefix: str, units_dir: Path
) -> None:
    def run(*args: str) -> Result:
        return CliRunner().invoke(
            app,
            [
                "--endpoint",
                ",".join(etcd_cluster.endpoints),
                "--etcd-prefix",
                prefix,
                "--request-timeout",
                str(REQUEST_TIMEOUT),
                *args,
            ],
        )

    cluster.engine()
    for machine in ("m1", "m2", "m3"):
        cluster.agent(machine)
    files = [write(units_dir, f"web{i}.service") for i in range(6)]
    assert run("start", *files).exit_code == 0
    until(lambda: len(dict(cluster.hosted())) == 6, timeout=20, what="six units running")
    placed, before = cluster.placement(), dict(cluster.hosted())
    leases = {machine: agent._lease for machine, agent in cluster.agents.items()}

    leader = etcd_cluster.leader()
    lost = [*[i for i in range(3) if i != leader][:1], leader if leader is not None else 2]
    for index in lost:
        etcd_cluster.kill(index)
    # Once the surviving member knows it has no leader (an election timeout later).
    (survivor,) = {0, 1, 2} - set(lost)
    with transport(etcd_cluster.endpoints[survivor]) as raw:
        until(lambda: raw.member_status()[0].leader == 0, what="the survivor to lose its leader")

    # Every command fails in one line that names the lost quorum, well before its timeout.
    extra = write(units_dir, "extra.service", SERVICE + "# extra\n")
    for args in (("list-units",), ("start", "--no-block", extra), ("stop", files[0])):
        started = time.monotonic()
        result = run(*args)
        assert time.monotonic() - started < REQUEST_TIMEOUT / 2, args
        assert result.exit_code == 1, result.output
        # (the engine's and agents' log lines, in this process, are on stderr too)
        said = [line for line in result.stderr.splitlines() if line.startswith("fleetpy:")]
        assert len(said) == 1 and "Traceback" not in result.output, result.stderr
        assert said[0].startswith("fleetpy: error: etcd has lost its quorum: "), said

    # Several TTLs without quorum: every unit still runs where it ran.
    time.sleep(3 * max(a.settings.ttl for a in cluster.agents.values()))  # nothing may happen
    assert dict(cluster.hosted()) == before

    for index in lost:
        etcd_cluster.restart(index)
    # Back: the cluster takes commands again, and nothing moved or re-registered.
    until(lambda: run("list-units").exit_code == 0, timeout=20, what="commands to work again")
    assert run("start", "--no-block", extra).exit_code == 0
    until(lambda: "extra.service" in dict(cluster.hosted()), timeout=20, what="a new unit to run")
    assert {n: m for n, m in dict(cluster.hosted()).items() if n != "extra.service"} == before
    assert {n: m for n, m in cluster.placement().items() if n != "extra.service"} == placed
    assert {machine: agent._lease for machine, agent in cluster.agents.items()} == leases
