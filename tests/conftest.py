"""Shared fixtures: a real etcd per test session, a fresh key prefix per test."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.registry import Registry, RegistryConfig

from support.cli_run import Run
from support.parallel import ModuleTimes, in_worker_order
from support.tiers import require_tier

# Fixtures defined in tests/support, registered here once for every tier: fleetpy api in a
# thread (api) and the dashboard's TLS listener (dashboard); real hosts, i.e. systemd-nspawn
# rootfs, dockerd + busybox image and a hosts factory (host_rootfs, host_docker, hosts); the
# operator's CLI and an engine as processes beside those hosts (fleet); the hostile-input
# corpus' cluster (hostile, seeded); the CLI tests' environments (clean_env, signing_env);
# pytester, for tests of the suite's own plugins; an engine and simulated agents in this
# process on the test's prefix (cluster).
pytest_plugins = [
    "pytester",  # tests/pure/test_parallel.py collects made-up suites in process
    "support.api_fixtures",
    "support.dashboard",
    "support.fleet",  # before hosts_fixtures, which imports it: both assertion-rewritten
    "support.hosts_fixtures",
    "support.fleet_hosts",  # a real fleet v1.0 cluster on hosts (fleet_cluster)
    "support.hostile_harness",
    "support.cli_helpers",
    "support.signing_cli",
    "support.sim_cluster",
]

_prefixes = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    # Each module's time, for the next run's order in xdist workers (support/parallel.py).
    config.pluginmanager.register(ModuleTimes(), "fleetpy-module-times")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).resolve().parent
    require_tier(items, tests)
    in_worker_order(config, items, tests)


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    # With fleet's v2 API too: migration tests write fleet's keys there (a store apart
    # from v3's, which fleetpy uses).
    with EtcdServer(extra_args=("--enable-v2=true",)) as server:
        yield server


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    # A per-test prefix isolates tests that share one etcd.
    return f"/t{next(_prefixes)}-{re.sub(r'[^A-Za-z0-9_.-]', '_', request.node.name[:40])}"


@pytest.fixture
def registry_config(etcd: EtcdServer, prefix: str) -> RegistryConfig:
    return RegistryConfig(endpoints=(etcd.endpoint,), prefix=prefix, timeout=5.0)


@pytest.fixture
def registry(registry_config: RegistryConfig) -> Iterator[Registry]:
    reg = Registry(registry_config)
    yield reg
    reg.close()


@pytest.fixture
def units_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder for unit files, with the working directory elsewhere."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # bare names must not be mistaken for files
    folder = tmp_path / "units"
    folder.mkdir()
    return folder


@pytest.fixture
def run(etcd: EtcdServer, prefix: str) -> Run:
    """The CLI in process (typer's runner) against the test's etcd and prefix."""
    # Imported here: the CLI's libraries load only for the tests that use it.
    from typer.testing import CliRunner, Result

    from fleetpy.cli import app

    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, ["--endpoint", etcd.endpoint, "--etcd-prefix", prefix, *args])

    return invoke
