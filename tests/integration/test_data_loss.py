"""etcd losing fleetpy's data (`etcdctl del --prefix`, a wiped or replaced etcd) is not an
order to stop every unit (issue [12]): agents hold what runs until the data is back."""

from __future__ import annotations

import time

import pytest

from fleetpy.registry import RegistryConfig
from fleetpy.registry.transport import prefix_range_end

from support.etcd_transport import transport
from support.sim_cluster import Cluster, unit
from support.waiting import until


def test_agents_hold_their_units_while_etcd_has_lost_fleetpys_data(
    cluster: Cluster, registry_config: RegistryConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.engine()
    for machine in ("m1", "m2"):
        cluster.agent(machine)
    units = [unit(f"u{i}.service") for i in range(4)]
    cluster.registry.change_units(units)
    until(lambda: len(cluster.running()) == 4, what="four units running")
    actions = {m: a.stats.actions for m, a in cluster.agents.items()}

    with transport(*registry_config.endpoints) as raw:
        start = registry_config.prefix + "/"
        raw.delete(start, prefix_range_end(start))  # etcdctl del --prefix
    time.sleep(3 * 2)  # the point: three of the agents' TTLs during which nothing may stop
    assert {m: a.stats.actions for m, a in cluster.agents.items()} == actions
    for agent in cluster.agents.values():
        assert {n for n, s in agent.manager.observe().items() if s.active == "active"}
    # Each agent says so once it has seen the data gone (by its watch; later under load).
    said: list[str] = []

    def both_said() -> bool:
        err = capsys.readouterr().err.splitlines()
        said.extend(line for line in err if "fleetpy_data_missing" in line)
        return {line.split("machine=")[1].split()[0] for line in said} == {"m1", "m2"}

    until(both_said, what="each agent's fleetpy_data_missing line")
    assert sorted(line.split("machine=")[1].split()[0] for line in said) == ["m1", "m2"]

    # Written anew (a restore, or the operator starting over): the agents follow it again.
    cluster.registry.change_units(units)
    until(
        lambda: [n for n, _ in cluster.hosted()] == sorted(u.name for u in units),
        what="each unit running once",
    )


def test_an_agent_whose_record_was_deleted_registers_again_and_stops_nothing(
    cluster: Cluster, registry_config: RegistryConfig
) -> None:
    cluster.engine()
    agent = cluster.agent("m1")
    cluster.registry.change_units([unit("u.service")])
    until(lambda: len(cluster.running()) == 1, what="the unit running")
    actions = agent.stats.actions
    with transport(*registry_config.endpoints) as raw:  # by hand, its lease still alive
        raw.delete(f"{registry_config.prefix}/machines/m1")
    until(lambda: "m1" in cluster.registry.list_machines(), what="m1 registered again")
    assert agent.stats.actions == actions
    assert cluster.running() == {"u.service": "m1"}
