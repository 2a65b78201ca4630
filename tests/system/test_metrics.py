"""test_metrics.py's tests that need fleetpy or etcd processes of its own, TLS etcd, hosts or
tools of the machine (README "Tests"); what the module covers as a whole:
tests/pure/test_metrics.py."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from fleetpy import metrics
from fleetpy.cluster.etcd import EtcdServer, free_port
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry
from fleetpy.states import DesiredState

from support.metrics_text import Samples, scrape, value
from support.paths import ROOT
from support.waiting import until


def try_scrape(port: int) -> Samples:
    try:
        return scrape(port)
    except OSError:
        return {}


def run_quick(*argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (("-m", "fleetpy", "engine", "--metrics-listen", "nonsense"), {}),
        (
            ("-m", "fleetpy.entrypoints", "--unit-manager", "simulated", "--metrics-listen", "h:0"),
            {},
        ),
        (
            ("-m", "fleetpy", "agent", "--unit-manager", "simulated"),
            {"FLEETPY_METRICS_LISTEN": ":1"},
        ),
    ],
)
def test_daemons_refuse_bad_metrics_listen_in_one_line(
    argv: tuple[str, ...], env: dict[str, str]
) -> None:
    result = run_quick(*argv, env=env)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "--metrics-listen" in lines[0] or "FLEETPY_METRICS_LISTEN" in lines[0]
    assert "expected HOST:PORT" in lines[0]


def test_engine_with_a_taken_metrics_port_is_one_line(etcd: EtcdServer, prefix: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_quick(
            "-m",
            "fleetpy",
            "--endpoint",
            etcd.endpoint,
            "--etcd-prefix",
            prefix,
            "engine",
            "--metrics-listen",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"fleetpy: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ], result.stderr


# ----------------------------------------------------------------------------- over HTTP


def unit_change(name: str, xfleet: str = "") -> UnitChange:
    text = "[Service]\nExecStart=/bin/sleep 1000\n" + (f"\n[X-Fleet]\n{xfleet}\n" if xfleet else "")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return UnitChange(name=name, text=text, hash=digest, desired=DesiredState.LAUNCHED)


class Daemons:
    """`fleetpy engine` and `fleetpy-agent`s as processes, each with --metrics-listen."""

    def __init__(self, etcd: EtcdServer, prefix: str, logs: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
        self.env.update(
            FLEETPY_ENDPOINT=etcd.endpoint, FLEETPY_ETCD_PREFIX=prefix, PYTHONPATH=str(ROOT)
        )
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *argv: str) -> int:
        port = free_port()
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, *argv, "--metrics-listen", f"127.0.0.1:{port}"],
                    env=self.env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
        return port

    def close(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def daemons(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(etcd, prefix, tmp_path)
    yield started
    started.close()


def test_engine_and_agents_metrics_over_http(
    daemons: Daemons, registry: Registry, etcd: EtcdServer
) -> None:
    agents = {
        machine: daemons.start(
            machine,
            "-m",
            "fleetpy.entrypoints",
            "--unit-manager",
            "simulated",
            "--machine-id",
            machine,
            "--ttl",
            "5",
        )
        for machine in ("m1", "m2")
    }
    engine = daemons.start("engine", "-m", "fleetpy", "engine", "--lease-ttl", "3")
    # The cluster as the API server will serve it, from a ClusterView getter.
    collectors = metrics.new_registry(process=False)
    collectors.register(metrics.ClusterCollector(registry.read_view))
    cluster_port = free_port()
    server = metrics.serve(collectors, "127.0.0.1", cluster_port)
    try:
        until(lambda: value(try_scrape(engine), "fleetpy_engine_leader") == 1, what="a leader")
        until(lambda: value(scrape(cluster_port), "fleetpy_machines_alive") == 2, what="2 machines")
        registry.change_units(
            [unit_change(f"u{i}.service") for i in range(4)]
            + [unit_change("nowhere.service", "MachineMetadata=rack=r9")]
        )
        until(
            lambda: value(scrape(cluster_port), "fleetpy_unit_states", active="active") == 4,
            what="4 units reported active",
        )
        until(
            lambda: value(scrape(cluster_port), "fleetpy_units_unplaced", reason="metadata") == 1,
            what="the unplaceable unit's reason",
        )
        cluster = scrape(cluster_port)
        assert value(cluster, "fleetpy_units", desired="launched") == 5
        assert value(cluster, "fleetpy_units_scheduled") == 4
        assert value(cluster, "fleetpy_units_unplaced", reason="pending") == 0

        engine_samples = scrape(engine)
        assert value(engine_samples, "fleetpy_engine_leader") == 1
        assert value(engine_samples, "fleetpy_engine_placements_total") == 4
        assert value(engine_samples, "fleetpy_engine_elections_won_total") == 1
        assert value(engine_samples, "fleetpy_engine_reconcile_seconds_count") >= 1
        assert value(engine_samples, "fleetpy_engine_plan_seconds_count") >= 1
        assert value(engine_samples, "fleetpy_etcd_requests_total", endpoint=etcd.endpoint) > 0
        assert (
            value(engine_samples, "fleetpy_etcd_request_errors_total", endpoint=etcd.endpoint) == 0
        )

        until(
            lambda: (
                sum(
                    value(try_scrape(port), "fleetpy_agent_units_owned") for port in agents.values()
                )
                == 4
            ),
            what="4 units owned by the agents",
        )
        for port in agents.values():
            agent = scrape(port)
            owned = value(agent, "fleetpy_agent_units_owned")
            assert owned == 2  # least loaded: two each
            assert value(agent, "fleetpy_agent_units", active="active") == owned
            assert value(agent, "fleetpy_agent_actions_total") >= 2 * owned  # write, start
            assert value(agent, "fleetpy_etcd_requests_total", endpoint=etcd.endpoint) > 0
            assert value(agent, "process_resident_memory_bytes") > 0
    finally:
        server.close()
