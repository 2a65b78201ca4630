"""etcd's own snapshot and restore under a running cluster (issue [12] item 4): etcd comes
back with older data at an older revision; fleetpy notices and follows the restored
desired state, without restarting the units that run in both."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fleetpy.cli import app
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.registry import RegistryConfig

from support.cli_helpers import SERVICE, write
from support.sim_cluster import Cluster
from support.waiting import until

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(data_dir=tmp_path / "etcd").start()
    yield server
    server.stop()


def restore_snapshot(server: EtcdServer, snapshot: Path) -> None:
    """What an operator does: stop etcd, `etcdctl snapshot restore` into a new data dir
    (a new cluster id), start etcd on it at the same address."""
    assert server.data_dir is not None
    server.kill()
    shutil.rmtree(server.data_dir / "data")
    subprocess.run(
        [
            "etcdctl",
            "snapshot",
            "restore",
            str(snapshot),
            "--data-dir",
            str(server.data_dir / "data"),
            "--name",
            server.name,
            "--initial-cluster",
            f"{server.name}={server.peer_url}",
            "--initial-advertise-peer-urls",
            server.peer_url,
        ],
        check=True,
        capture_output=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    server.restart()


def test_an_etcd_restored_from_its_snapshot_is_followed_and_shared_units_keep_running(
    own_etcd: EtcdServer,
    prefix: str,
    units_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    config = RegistryConfig(endpoints=(own_etcd.endpoint,), prefix=prefix, timeout=5)
    cluster = Cluster(config)
    try:

        def run(*args: str) -> Result:
            return CliRunner().invoke(
                app, ["--endpoint", own_etcd.endpoint, "--etcd-prefix", prefix, *args]
            )

        cluster.engine()
        for machine in ("m1", "m2"):
            cluster.agent(machine, ttl=3)
        kept = [write(units_dir, f"kept{i}.service") for i in range(2)]
        assert run("start", *kept).exit_code == 0
        until(lambda: len(cluster.hosted()) == 2, what="both kept units running")
        snapshot = tmp_path / "snap.db"
        subprocess.run(
            ["etcdctl", "--endpoints", own_etcd.endpoint, "snapshot", "save", str(snapshot)],
            check=True,
            capture_output=True,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )
        # After the snapshot: one more unit, and one of the kept ones stopped.
        later = write(units_dir, "later.service", SERVICE + "Environment=L=1\n")
        assert run("start", later).exit_code == 0
        assert run("stop", "kept1.service").exit_code == 0
        until(
            lambda: [n for n, _ in cluster.hosted()] == ["kept0.service", "later.service"],
            what="later running, kept1 stopped",
        )
        kept0_home = dict(cluster.hosted())["kept0.service"]
        capfd.readouterr()

        restore_snapshot(own_etcd, snapshot)

        # The snapshot's desired state: both kept units run, the later one does not.
        until(
            lambda: [n for n, _ in cluster.hosted()] == ["kept0.service", "kept1.service"],
            timeout=30,
            what="the snapshot's units running, the later one stopped",
        )
        assert dict(cluster.hosted())["kept0.service"] == kept0_home
        # kept0 ran through it all: nothing was done to it; later stopped, kept1 started.
        acted = sorted(
            {
                (line.split(" unit=")[1].split()[0], line.split(" action=")[1].split()[0])
                for line in capfd.readouterr().err.splitlines()
                if "event=unit_action" in line
            }
        )
        assert ("kept0.service", "stop") not in acted and ("kept0.service", "start") not in acted
        assert ("later.service", "stop") in acted and ("kept1.service", "start") in acted
    finally:
        cluster.close()
