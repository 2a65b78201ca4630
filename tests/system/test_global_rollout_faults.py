"""A global unit's rolling update through faults, on simulated hosts against an etcd of the
test's own: etcd killed and restarted in the middle of a step. The roll never has more
than --max-unavailable machines without the unit active, runs nothing twice, and ends
with every machine on the new version (going on by itself, or resumed by applying again).
A killed client is tests/integration/test_global_rollout.py's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.deploy.rollout import ApplyEvent, ApplyOptions, apply_deployment, plan_deployment
from fleetpy.errors import FleetpyError
from fleetpy.registry import RegistryConfig
from fleetpy.states import ActiveState

from support.global_rollout import UNIT, first_version, monitor, monitor_hash, started_everywhere
from support.outages import kill_etcd
from support.rollout import Cluster, render
from support.waiting import until


@pytest.fixture
def cluster(own_etcd: EtcdServer, prefix: str) -> Iterator[Cluster]:
    """support.rollout's cluster on the test's own etcd (sim_cluster's own_etcd): it is killed."""
    c = Cluster(RegistryConfig(endpoints=(own_etcd.endpoint,), prefix=prefix, timeout=5))
    yield c
    c.close()


class HostWatch:
    """Samples the hosts' own unit managers (not etcd, which is away for part of the time)
    every 10 ms: the most machines without the monitor active at once."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.worst = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            down = 0
            for agent in self.cluster.agents:
                unit = agent.manager.observe().get(UNIT)
                down += unit is None or unit.active != ActiveState.ACTIVE
            self.worst = max(self.worst, down)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def test_a_roll_rides_out_etcd_killed_mid_step(
    own_etcd: EtcdServer, cluster: Cluster, tmp_path: Path
) -> None:
    registry, _ = first_version(cluster, tmp_path)
    directory = monitor(tmp_path, "2")
    name, units = render(directory)
    second_step = threading.Event()
    outcome: list[object] = []

    def on_progress(event: ApplyEvent) -> None:
        if event.step == "roll" and event.done == 1:
            second_step.set()

    def run() -> None:
        plan = plan_deployment(registry, name, units, "c2")
        try:
            options = ApplyOptions(max_unavailable=1, min_ready=0.5, timeout=60)
            outcome.append(apply_deployment(registry, plan, units, options, on_progress))
        except FleetpyError as exc:
            outcome.append(exc)

    watch = HostWatch(cluster)
    try:
        applying = threading.Thread(target=run)
        applying.start()
        assert second_step.wait(60), "the roll's second step"
        time.sleep(0.1)  # the step written: its machine switching while etcd is away
        kill_etcd(own_etcd, 3.0)
        applying.join(120)
        assert not applying.is_alive()
        if isinstance(outcome[0], FleetpyError):
            # The client lost etcd: said in one line, the roll left where it stood; the
            # next apply goes on from there.
            assert "\n" not in str(outcome[0])
            plan = plan_deployment(registry, name, units, "c2")
            assert [c.name for c in plan.changes if c.resume] in ([UNIT], [])
            apply_deployment(registry, plan, units, ApplyOptions(min_ready=0, timeout=60))
        started_everywhere(cluster, directory)
    finally:
        watch.close()
    assert watch.worst <= 1
    new = monitor_hash(directory)
    assert [a.manager.observe()[UNIT].hash for a in cluster.agents] == [new] * 3
    until(lambda: registry.get_global(UNIT) is not None, what="entry readable")
    entry = registry.get_global(UNIT)
    assert entry is not None and entry[0].roll is None
