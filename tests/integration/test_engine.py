"""Engine + simulated agents in-process against a real etcd."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from fleetpy.client import operations
from fleetpy.metadata import MetadataChange
from fleetpy.model.changes import UnitChange
from fleetpy.states import DesiredState

from support.sim_cluster import Cluster, unit
from support.waiting import until


def test_units_are_placed_least_loaded_and_run(cluster: Cluster) -> None:
    for m in ("m1", "m2", "m3"):
        cluster.agent(m)
    cluster.engine()
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(6)])
    until(lambda: len(cluster.running()) == 6, what="6 units active")
    placement = cluster.placement()
    assert sorted(list(placement.values()).count(m) for m in ("m1", "m2", "m3")) == [2, 2, 2]
    assert cluster.running() == placement


def test_stop_unload_destroy_flow(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.engine()
    cluster.registry.change_units([unit("a.service")])
    until(lambda: cluster.running() == {"a.service": "m1"}, what="a active")
    cluster.registry.change_units([UnitChange("a.service", desired=DesiredState.LOADED)])
    until(
        lambda: cluster.registry.list_states()["a.service"]["m1"].active == "inactive",
        what="a stopped",
    )
    cluster.registry.change_units([UnitChange("a.service", desired=DesiredState.INACTIVE)])
    until(
        lambda: cluster.registry.list_states() == {} and cluster.placement() == {},
        what="a unloaded",
    )
    cluster.registry.change_units([UnitChange("a.service", desired=DesiredState.LAUNCHED)])
    until(lambda: cluster.running() == {"a.service": "m1"}, what="a active again")
    cluster.registry.destroy_units(["a.service"])
    until(
        lambda: cluster.registry.list_states() == {} and cluster.placement() == {},
        what="a destroyed",
    )


def test_unplaceable_unit_gets_a_reason_then_placed_when_a_machine_joins(cluster: Cluster) -> None:
    cluster.agent("m1", region="south")
    cluster.engine()
    cluster.registry.change_units([unit("n.service", "MachineMetadata=region=north")])
    until(
        lambda: "region=north" in cluster.registry.read_view().reasons.get("n.service", ""),
        what="reason",
    )
    cluster.agent("m2", region="north")
    until(lambda: cluster.running() == {"n.service": "m2"}, what="placed on m2")
    assert "n.service" not in cluster.registry.read_view().reasons


def test_machine_loss_reschedules(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.agent("m2")
    cluster.engine()
    cluster.registry.change_units([unit("a.service"), unit("b.service")])
    until(lambda: len(cluster.running()) == 2, what="both active")
    victim = cluster.placement()["a.service"]
    cluster.agents[victim].stop(revoke=False)  # dies silently: the lease runs out
    survivor = "m2" if victim == "m1" else "m1"
    until(
        lambda: cluster.running() == {"a.service": survivor, "b.service": survivor},
        timeout=15,
        what="rescheduled",
    )


def test_global_units_run_on_every_matching_machine(cluster: Cluster) -> None:
    cluster.agent("m1", role="web")
    cluster.agent("m2", role="db")
    cluster.engine()
    cluster.registry.change_units(
        [unit("g.service", "Global=true\nMachineMetadata=role=web", is_global=True)]
    )
    until(
        lambda: cluster.registry.list_states().get("g.service", {}).keys() == {"m1"},
        what="global on m1 only",
    )
    assert cluster.placement() == {}


def test_operator_metadata_places_moves_and_outlives_the_agent(cluster: Cluster) -> None:
    cluster.agent("m1", role="db")
    cluster.agent("m2", role="db")
    cluster.engine()
    cluster.registry.change_units([unit("x.service", "MachineMetadata=role=x")])
    until(
        lambda: "role=x" in cluster.registry.read_view().reasons.get("x.service", ""),
        what="unplaced: no machine has role=x",
    )
    cluster.registry.change_metadata([MetadataChange("m2", "role", "x")])  # PATCH /machines
    until(lambda: cluster.running() == {"x.service": "m2"}, what="placed on m2 by the watch")
    assert "x.service" not in cluster.registry.read_view().reasons
    # The agent restarts and registers again with its own role=db: the operator's wins.
    cluster.agents["m2"].stop()
    until(lambda: "m2" not in cluster.registry.list_machines(), what="m2 gone")
    cluster.agent("m2", role="db")
    until(lambda: cluster.running() == {"x.service": "m2"}, what="back on m2")
    assert cluster.registry.list_machines()["m2"].metadata == {"role": "x"}
    # Moved when its machine no longer fits and another one does, in one PATCH.
    cluster.registry.change_metadata(
        [MetadataChange("m2", "role", None), MetadataChange("m1", "role", "x")]
    )
    until(lambda: cluster.running() == {"x.service": "m1"}, what="moved to m1")
    assert cluster.registry.list_machines()["m2"].metadata == {}


def test_global_units_follow_operator_metadata(cluster: Cluster) -> None:
    cluster.agent("m1", role="db")
    cluster.agent("m2", role="db")
    cluster.engine()
    cluster.registry.change_units(
        [unit("g.service", "Global=true\nMachineMetadata=role=web", is_global=True)]
    )
    cluster.registry.change_metadata([MetadataChange("m1", "role", "web")])
    until(
        lambda: cluster.registry.list_states().get("g.service", {}).keys() == {"m1"},
        what="global on m1 only",
    )
    cluster.registry.change_metadata(
        [MetadataChange("m1", "role", None), MetadataChange("m2", "role", "web")]
    )
    until(
        lambda: cluster.registry.list_states().get("g.service", {}).keys() == {"m2"},
        what="global moved to m2 by its agents",
    )


def test_failover_to_a_second_engine(cluster: Cluster) -> None:
    cluster.agent("m1")
    first = cluster.engine(lease_ttl=2)
    until(first.is_leader.is_set, what="first leads")
    second = cluster.engine(lease_ttl=2)
    time.sleep(0.5)  # the point: a window in which the second must not take over
    assert not second.is_leader.is_set()
    first._stop.set()  # dies without resigning; its lease must run out
    first._queue.put(("stop", None))
    # Once the first's lease (2 s) has run out and the second has campaigned again.
    until(second.is_leader.is_set, timeout=20, what="second leads")
    cluster.registry.change_units([unit("a.service")])
    until(lambda: cluster.running() == {"a.service": "m1"}, what="placed by second")


def test_reason_of_a_destroyed_unit_is_cleared(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.engine()
    cluster.registry.change_units([unit("nope.service", "MachineMetadata=region=mars")])
    until(lambda: "nope.service" in cluster.registry.read_view().reasons, what="reason")
    cluster.registry.destroy_units(["nope.service"])
    until(lambda: cluster.registry.read_view().reasons == {}, what="reason cleared")


def paused(cluster: Cluster) -> bool:
    """The engine has judged the loss of m1 and m2 a mass loss (its note on their units)."""
    reasons = cluster.registry.read_view().reasons.values()
    return any("2 of 3 machines stopped reporting together" in r for r in reasons)


def test_mass_loss_pauses_rescheduling_until_the_machines_return(cluster: Cluster) -> None:
    for m in ("m1", "m2", "m3"):
        cluster.agent(m)
    engine = cluster.engine()
    engine.settings = replace(
        engine.settings, machine_grace=3.0
    )  # also the grace for machines still away when a pause ends
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(6)])
    until(lambda: len(cluster.running()) == 6, what="6 units active")
    before = cluster.placement()
    for m in ("m1", "m2"):
        cluster.agents.pop(m).stop(revoke=True)  # two of three gone at once
    until(lambda: set(cluster.registry.list_machines()) == {"m3"}, what="m1, m2 gone")
    until(lambda: paused(cluster), what="the engine's note that rescheduling is paused")
    assert cluster.placement() == before
    for m in ("m1", "m2"):
        cluster.agent(m)
    until(lambda: len(cluster.running()) == 6, what="all active again")
    assert cluster.placement() == before
    until(lambda: cluster.registry.read_view().reasons == {}, what="notes cleared")


def test_force_reschedule_ends_a_pause(cluster: Cluster) -> None:
    for m in ("m1", "m2", "m3"):
        cluster.agent(m)
    engine = cluster.engine()
    engine.settings = replace(engine.settings, machine_grace=0.0)
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(3)])
    until(lambda: len(cluster.running()) == 3, what="3 units active")
    for m in ("m1", "m2"):
        cluster.agents.pop(m).stop(revoke=True)
    until(lambda: set(cluster.registry.list_machines()) == {"m3"}, what="m1, m2 gone")
    until(lambda: paused(cluster), what="the engine's note that rescheduling is paused")
    assert set(cluster.placement().values()) == {"m1", "m2", "m3"}
    cluster.registry.request_force_reschedule()
    until(lambda: set(cluster.placement().values()) == {"m3"}, what="moved to m3")
    until(lambda: not cluster.registry.force_reschedule_requested(), what="request consumed")


def test_every_lease_revoked_at_once_moves_and_stops_nothing(cluster: Cluster) -> None:
    for m in ("m1", "m2", "m3"):
        cluster.agent(m, ttl=3)
    cluster.engine()
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(6)])
    until(lambda: len(cluster.running()) == 6, what="6 units active")
    before = cluster.placement()
    for agent in cluster.agents.values():
        assert agent._lease is not None
        cluster.registry.revoke_lease(agent._lease)  # what etcd does after a long pause

    def untouched() -> None:
        placement = cluster.placement()
        placement.pop("probe.service", None)
        assert placement == before
        for agent in cluster.agents.values():
            assert all(u.active == "active" for u in agent.manager.observe().values())

    def back() -> bool:
        untouched()
        return len(cluster.registry.list_machines()) == 3 and cluster.running() == before

    until(back, what="agents re-registered, states re-reported")
    # Nothing moved or stopped until the engine has seen every machine back: a unit
    # submitted now is placed only once it has (it handles etcd's events in order), and
    # with every machine back no unit of theirs can move any more.
    cluster.registry.change_units([unit("probe.service")])

    def probe_placed() -> bool:
        untouched()
        return "probe.service" in cluster.running()

    until(probe_placed, what="a new unit placed by the engine")
    untouched()
    assert {u: m for u, m in cluster.running().items() if u != "probe.service"} == before


def test_machine_missing_after_a_new_leader_waits_the_grace_period(cluster: Cluster) -> None:
    for m in ("m1", "m2", "m3"):
        cluster.agent(m)
    first = cluster.engine()
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(3)])
    until(lambda: len(cluster.running()) == 3, what="3 units active")
    before = cluster.placement()
    first.stop()
    cluster.agents.pop("m1").stop(revoke=True)  # m1 is gone while no engine runs
    second = cluster.engine()
    second.settings = replace(second.settings, machine_grace=3.0)
    until(second.is_leader.is_set, what="second leads")
    started = time.monotonic()
    until(
        lambda: any(
            "the engine had lost sight of it" in r
            for r in cluster.registry.read_view().reasons.values()
        ),
        what="the engine's note that m1's units are held for the grace period",
    )
    assert cluster.placement() == before  # inside the grace period: held
    # Once the grace period (3 s) has passed and the engine has judged m1 lost.
    until(lambda: "m1" not in cluster.placement().values(), timeout=20, what="moved off m1")
    assert time.monotonic() - started >= 2.5


@pytest.mark.parametrize("first, second", [("a", "b"), ("b", "a")])
def test_units_replacing_each_other_settle_with_the_last_started_running(
    cluster: Cluster, tmp_path: Path, first: str, second: str
) -> None:
    """fleet accepts a.service (Replaces=b.service) beside b.service (Replaces=a.service):
    started one after the other, the one started last displaces the other, the two are
    never active on one machine together, and once settled exactly one runs, for good."""
    # Both may only run on m1 (its metadata), so they compete for it.
    cluster.agent("m1", disk="any")
    cluster.agent("m2")
    cluster.engine()
    for name, other in (("a", "b"), ("b", "a")):
        (tmp_path / f"{name}.service").write_text(
            "[Service]\nExecStart=/bin/sleep 1000\n\n"
            f"[X-Fleet]\nReplaces={other}.service\nMachineMetadata=disk=any\n"
        )
    registry = cluster.registry
    operations.start(registry, [str(tmp_path / f"{first}.service")])
    until(lambda: cluster.running() == {f"{first}.service": "m1"}, what=f"{first} active")

    seen: list[dict[str, str]] = []
    operations.start(registry, [str(tmp_path / f"{second}.service")])

    def settled() -> bool:
        running = cluster.running()
        seen.append(running)
        return running == {f"{second}.service": "m1"}

    until(settled, what=f"{second} active in place of {first}", interval=0.01)
    assert all(len(running) <= 1 for running in seen), seen  # never both active
    view = registry.read_view(with_states=False)
    assert view.reasons[f"{first}.service"] == (
        f"replaced by {second}.service on every eligible machine"
    )
    # Settled for good: the engine does not move them back and forth.
    placements = [engine.stats.placements for engine in cluster.engines]
    schedule = cluster.placement()
    time.sleep(3)  # the point: a window in which the engine must not move them again
    assert cluster.placement() == schedule == {f"{second}.service": "m1"}
    assert [engine.stats.placements for engine in cluster.engines] == placements
    assert cluster.running() == {f"{second}.service": "m1"}
