"""A record written by a newer fleetpy (schema version above this one's) on real etcd: the
agent, the engine and the CLI each say so once and leave it, and what it stands for, alone
(README "Upgrades"). The releases side by side: tests/system/test_upgrade.py."""

from __future__ import annotations

import json
import time

import pytest

from fleetpy.agent import Agent
from fleetpy.errors import RegistryError, StateError
from fleetpy.model.records import UnitRecord
from fleetpy.states import DesiredState

from support.cli_helpers import one_error_line
from support.cli_run import Run
from support.sim_cluster import Cluster, unit
from support.waiting import until

# What a future release might write: a version this one does not know, a changed shape.
FUTURE = json.dumps({"v": 2, "desired": "somewhere-else", "placement": {"m2": 1}})


def raw(cluster: Cluster, *key: str) -> bytes | None:
    kvs = cluster.registry._etcd.range(cluster.registry.key(*key)).kvs
    return kvs[0].value if kvs else None


def put(cluster: Cluster, *key: str, lease: int = 0) -> None:
    cluster.registry._etcd.put(cluster.registry.key(*key), FUTURE, lease=lease)


def settled(agent: Agent) -> None:
    """The agent has handled what was queued before now (a round trip of its loop)."""
    before = agent.stats.reconciles
    agent._queue.put(("schedule", (agent._generation, _empty())))
    until(lambda: agent.stats.reconciles > before, what="agent round")


def _empty() -> object:
    from fleetpy.model.events import WatchBatch

    return WatchBatch((), 0)


def test_an_agent_leaves_a_unit_whose_entry_a_newer_fleetpy_wrote_running(
    cluster: Cluster, capfd: pytest.CaptureFixture[str]
) -> None:
    agent = cluster.agent("m1")
    cluster.engine()
    cluster.registry.change_units([unit("a.service"), unit("b.service")])
    until(lambda: len(cluster.hosted()) == 2, what="both active")
    actions, wakeups = agent.stats.actions, agent.stats.wakeups
    put(cluster, "schedule", "m1", "a.service")  # a newer engine's entry
    until(lambda: agent.stats.wakeups > wakeups, what="entry seen")
    settled(agent)
    assert cluster.hosted() == [("a.service", "m1"), ("b.service", "m1")]
    assert agent.stats.actions == actions  # before: a.service stopped and removed
    # A fresh read (an agent restart, upgraded in place from an older one) adopts it too.
    agent.stop(revoke=False)
    again = Agent(
        cluster.registry,
        agent.manager,
        agent.settings,
        trusted=agent.trusted,
        hostname=agent.hostname,
        instance=agent.instance,
    ).start()
    cluster.agents["m1"] = again
    assert again.ready.wait(10)
    settled(again)
    assert again.stats.actions == 0
    assert cluster.hosted() == [("a.service", "m1"), ("b.service", "m1")]
    # A new engine (a full read) does not overwrite the entry it cannot read.
    for engine in cluster.engines:
        engine.stop()
    fresh = cluster.engine()
    until(lambda: fresh.is_leader.is_set() and fresh.stats.passes > 0, what="new leader's pass")
    assert raw(cluster, "schedule", "m1", "a.service") == FUTURE.encode()
    # Said once per key and version, however often it was read.
    key = cluster.registry.key("schedule", "m1", "a.service")
    lines = [line for line in capfd.readouterr().err.splitlines() if "record_too_new" in line]
    assert [line for line in lines if key in line and "version=2" in line], lines
    per_registry = [line for line in lines if key in line]
    assert len(per_registry) <= 2  # the agents' registry, the new engine's; not per read


def test_the_engine_neither_moves_nor_unschedules_a_unit_a_newer_fleetpy_wrote(
    cluster: Cluster,
) -> None:
    cluster.agent("m1")
    cluster.agent("m2")
    engine = cluster.engine()
    cluster.registry.change_units([unit("a.service"), unit("b.service")])
    until(lambda: len(cluster.hosted()) == 2, what="both active")
    placement = cluster.placement()
    entry = raw(cluster, "schedule", placement["a.service"], "a.service")
    put(cluster, "unit", "a.service")  # a newer client's record
    passes = engine.stats.passes
    cluster.registry.change_units([unit("c.service")])  # an event, so the engine plans
    until(lambda: len(cluster.hosted()) == 3 and engine.stats.passes > passes, what="c active")
    # Before: a.service was taken for destroyed, unscheduled and stopped.
    assert raw(cluster, "schedule", placement["a.service"], "a.service") == entry
    assert ("a.service", placement["a.service"]) in cluster.hosted()
    # A new leader's full read leaves it too.
    engine.stop()
    fresh = cluster.engine()
    until(lambda: fresh.is_leader.is_set() and fresh.stats.passes > 0, what="new leader's pass")
    time.sleep(0.5)
    assert raw(cluster, "schedule", placement["a.service"], "a.service") == entry
    assert raw(cluster, "unit", "a.service") == FUTURE.encode()
    # A client asked for it by name says so instead of taking it for absent.
    with pytest.raises(StateError, match="written by a newer fleetpy"):
        cluster.registry.get_units(["a.service"])
    assert "a.service" not in cluster.registry.list_units()


def test_a_machine_whose_record_a_newer_agent_wrote_keeps_its_units_and_gets_none(
    cluster: Cluster,
) -> None:
    cluster.agent("m1")
    newer = cluster.agent("m2")
    engine = cluster.engine()
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(4)])
    until(lambda: len(cluster.hosted()) == 4, what="4 active")
    on_m2 = sorted(u for u, m in cluster.placement().items() if m == "m2")
    assert on_m2
    assert newer._lease is not None
    put(cluster, "machines", "m2", lease=newer._lease)  # a newer agent's record, still alive
    passes = engine.stats.passes
    cluster.registry.change_units([unit(f"n{i}.service") for i in range(4)])
    until(lambda: len(cluster.hosted()) == 8 and engine.stats.passes > passes, what="8 active")
    placement = cluster.placement()
    assert sorted(u for u, m in placement.items() if m == "m2") == on_m2  # none new there
    assert raw(cluster, "machines", "m2") == FUTURE.encode()  # its agent did not re-register
    engine.stop()
    fresh = cluster.engine()
    until(lambda: fresh.is_leader.is_set() and fresh.stats.passes > 0, what="new leader's pass")
    time.sleep(0.5)
    assert cluster.placement() == placement


def test_the_cli_says_in_one_line_that_a_newer_fleetpy_wrote_a_unit(
    cluster: Cluster, run: Run
) -> None:
    cluster.registry.change_units([unit("b.service")])
    put(cluster, "unit", "a.service")
    listed = run("list-unit-files")
    assert listed.exit_code == 0, listed.output
    assert "b.service" in listed.stdout and "a.service" not in listed.stdout
    key = cluster.registry.key("unit", "a.service")
    assert listed.stderr.splitlines() == [
        f"fleetpy: warning: left {key} alone: written by a newer fleetpy "
        "(record version 2; this one reads up to 1)"
    ]
    for verb in ("start", "stop", "unload", "cat"):
        result = run(verb, "a.service")
        assert result.exit_code != 0
        assert (verb, one_error_line(result)) == (
            verb,
            "fleetpy: error: unit a.service was written by a newer fleetpy (record version 2; "
            "this one reads up to 1): left as it is; use the newer fleetpy for it",
        )
    assert raw(cluster, "unit", "a.service") == FUTURE.encode()
    # Where it runs is still read (its machine's states are this release's).
    status = run("status", "a.service")
    assert "not submitted" not in status.stderr and "runs on no machine" in status.stderr


def test_a_backup_holding_a_newer_record_is_refused_whole(cluster: Cluster) -> None:
    with pytest.raises(RegistryError, match=r"backup key unit/a.service: written by a newer"):
        cluster.registry.restore_desired(
            {"unit/b.service": UnitRecord("b.service", "a" * 64, DesiredState.LAUNCHED).to_json(),
             "unit/a.service": FUTURE}
        )  # fmt: skip
    assert cluster.registry.read_desired()[1] == {}
