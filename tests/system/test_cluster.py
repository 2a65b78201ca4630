"""Real processes: engines and simulated agents started and killed by the tests, driven by
the `fleetpy` CLI as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.registry import Registry

from support.waiting import until

SERVICE = "[Service]\nExecStart=/bin/sleep infinity\n"


class ProcessCluster:
    def __init__(self, etcd: EtcdServer, prefix: str, workdir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
        self.env.update(FLEETPY_ENDPOINT=etcd.endpoint, FLEETPY_ETCD_PREFIX=prefix)
        self.workdir = workdir
        self.engines: list[subprocess.Popen[bytes]] = []
        self.agents: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")
        return subprocess.Popen(
            [sys.executable, "-m", "fleetpy", *args],
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )

    def engine(self) -> subprocess.Popen[bytes]:
        proc = self._spawn(
            f"engine{len(self.engines)}", "engine", "--lease-ttl", "2", "--reconcile-interval", "5"
        )
        self.engines.append(proc)
        return proc

    def agent(self, machine: str, metadata: str = "") -> subprocess.Popen[bytes]:
        args = ["agent", "--unit-manager", "simulated", "--machine-id", machine, "--ttl", "2"]
        if metadata:
            args += ["--metadata", metadata]
        proc = self._spawn(machine, *args)
        self.agents[machine] = proc
        return proc

    def fleetpy(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "fleetpy", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"fleetpy {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        return result

    def json(self, verb: str) -> list[dict[str, object]]:
        return json.loads(self.fleetpy(verb, "-o", "json").stdout)  # type: ignore[no-any-return]

    def unit_file(self, name: str, text: str = SERVICE) -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)

    def close(self) -> None:
        for proc in [*self.engines, *self.agents.values()]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def pc(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[ProcessCluster]:
    cluster = ProcessCluster(etcd, prefix, tmp_path)
    yield cluster
    cluster.close()


def test_blocking_verbs_with_engine_and_simulated_hosts(pc: ProcessCluster) -> None:
    for m in ("m1", "m2", "m3"):
        pc.agent(m, "zone=" + m)
    pc.engine()
    until(lambda: len(pc.json("list-machines")) == 3, what="3 machines")
    files = [pc.unit_file(f"web{i}.service") for i in range(6)]
    pc.fleetpy("start", *files)  # blocks until all six are active
    units = pc.json("list-units")
    assert len(units) == 6 and {u["active"] for u in units} == {"active"}
    assert {u["sub"] for u in units} == {"running"}
    assert sorted(sum(1 for u in units if u["machine"] == m) for m in ("m1", "m2", "m3")) == [
        2,
        2,
        2,
    ]
    pc.fleetpy("stop", "web*")
    assert {u["active"] for u in pc.json("list-units")} == {"inactive"}
    pc.fleetpy("unload", "web0.service")
    assert "web0.service" not in {u["unit"] for u in pc.json("list-units")}
    pc.fleetpy("load", "web0.service")
    pc.fleetpy("start", "web0.service")
    unit_files = {f["unit"]: f for f in pc.json("list-unit-files")}
    assert (
        unit_files["web0.service"]["state"] == "launched"
        and unit_files["web1.service"]["state"] == "loaded"
    )
    pc.fleetpy("destroy", "web*")
    until(lambda: pc.json("list-units") == [], what="destroyed units gone")


def test_engine_failover_after_kill_9(pc: ProcessCluster, registry: Registry) -> None:
    pc.agent("m1")
    first = pc.engine()
    until(lambda: registry.leader() is not None, what="a leader")
    second = pc.engine()
    leader = registry.leader()
    time.sleep(0.5)
    assert registry.leader() == leader  # the second one waits
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    until(lambda: registry.leader() not in (None, leader), timeout=10, what="second engine leads")
    pc.fleetpy("start", "--block-attempts", "20", pc.unit_file("after.service"))
    assert second.poll() is None


def test_machine_loss_reschedules_with_constraints(pc: ProcessCluster) -> None:
    pc.agent("m1", "disk=ssd")
    pc.agent("m2", "disk=ssd")
    pc.agent("m3", "disk=hdd")
    pc.engine()
    until(lambda: len(pc.json("list-machines")) == 3, what="3 machines")
    pc.fleetpy(
        "start", pc.unit_file("db.service", SERVICE + "[X-Fleet]\nMachineMetadata=disk=ssd\n")
    )
    (db,) = pc.json("list-units")
    victim = str(db["machine"])
    os.kill(pc.agents[victim].pid, signal.SIGKILL)
    survivor = "m2" if victim == "m1" else "m1"
    until(
        lambda: (
            [(u["machine"], u["active"]) for u in pc.json("list-units")] == [(survivor, "active")]
        ),
        timeout=20,
        what="db.service active on the other ssd machine",
    )


def test_twenty_clients_fifty_units_each(pc: ProcessCluster, registry: Registry) -> None:
    for m in ("m1", "m2", "m3", "m4"):
        pc.agent(m)
    pc.engine()
    until(lambda: len(registry.list_machines()) == 4, what="4 machines")

    def client(n: int) -> subprocess.CompletedProcess[str]:
        files = [pc.unit_file(f"c{n:02d}-u{i:02d}.service") for i in range(50)]
        return pc.fleetpy("start", "--no-block", *files, timeout=120)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(client, range(20)))
    assert all(r.returncode == 0 for r in results)
    assert len(registry.list_units()) == 1000
    until(
        lambda: len(registry.read_view(with_states=False).schedule) == 1000,
        timeout=60,
        what="1000 placements",
    )
    view = registry.read_view()
    # none lost, none placed twice: exactly one schedule entry and one reported state each
    assert len(view.schedule) == 1000
    until(
        lambda: sum(len(s) for s in registry.list_states().values()) == 1000,
        timeout=60,
        what="1000 reported states",
    )
    assert all(len(s) == 1 for s in registry.list_states().values())
