"""What the engine's placements cost the agents, counted (not timed), and a leader lost in
the middle of a big pass: nothing placed twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from fleetpy import scheduler
from fleetpy.model.changes import EngineWrite
from fleetpy.registry import MAX_TXN_OPS

from support.sim_cluster import Cluster, unit
from support.waiting import until


def test_a_machines_new_units_wake_its_agent_once_not_once_per_transaction(
    cluster: Cluster,
) -> None:
    machines = ("m1", "m2", "m3")
    for machine in machines:
        cluster.agent(machine)
    per_machine = MAX_TXN_OPS - 20  # several transactions, each machine's units fit in one
    total = per_machine * len(machines)
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(total)])
    before = {m: cluster.agents[m].stats.wakeups for m in machines}
    engine = cluster.engine()  # one full read, one pass: every unit in one plan
    until(lambda: len(cluster.running()) == total, timeout=30, what="every unit active")
    woken = {m: cluster.agents[m].stats.wakeups - before[m] for m in machines}
    # A machine's units in one transaction, or split by a transaction's end: two at most,
    # and no more wake-ups in all than transactions plus machines (one per placement,
    # 3x as many transactions, was the count before).
    assert max(woken.values()) <= 2, woken
    assert sum(woken.values()) <= engine.stats.transactions + len(machines) - 1, woken
    assert all(cluster.agents[m].stats.empty_wakeups == 0 for m in machines)


def test_a_leader_lost_in_the_middle_of_a_pass_leaves_nothing_placed_twice(
    cluster: Cluster,
) -> None:
    machines = [f"m{i}" for i in range(6)]
    for machine in machines:
        cluster.agent(machine)
    total = 5 * MAX_TXN_OPS
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(total)])
    first = cluster.engine(lease_ttl=2)
    transactions = 0
    engine_write = first.registry.engine_write

    def dies_before_its_third_transaction(
        candidate: str,
        groups: Sequence[Sequence[EngineWrite]],
        written: Callable[[int, int], None],
        before_each: Callable[[], None],
    ) -> bool:
        def counted() -> None:
            # Before each of the pass's transactions: after two, this leader is gone as a
            # killed one is (its lease ends; it writes nothing more, its pass unfinished).
            nonlocal transactions
            transactions += 1
            if transactions == 3:
                first._stop.set()
                assert first._election._lease is not None
                cluster.registry.revoke_lease(first._election._lease)
            before_each()

        return engine_write(candidate, groups, written, counted)

    first.registry.engine_write = dies_before_its_third_transaction  # type: ignore[method-assign, assignment]
    until(lambda: transactions >= 3, timeout=30, what="the first leader's third transaction")
    second = cluster.engine(lease_ttl=2)
    until(lambda: len(cluster.hosted()) == total, timeout=60, what="every unit running")
    assert first.stats.placements == 2 * MAX_TXN_OPS
    assert second.stats.placements == total - 2 * MAX_TXN_OPS
    hosted = cluster.hosted()
    assert len({name for name, _ in hosted}) == total  # each unit on one machine, once
    assert cluster.registry.count("schedule") == total


def test_a_pass_longer_than_the_lease_keeps_the_leadership(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.registry.change_units([unit("a.service")])
    engine = cluster.engine(lease_ttl=2)
    # No periodic full read (every 5 s) during the test: the first pass's plan ends 3 s
    # after its read, and a second read 2 s later would be counted below if the agent's
    # report came that late (under load).
    engine.settings = replace(engine.settings, reconcile_interval=60)
    snapshot = engine._snapshot
    slow = [True]

    def slow_first_snapshot(model: Any) -> scheduler.Snapshot:
        # A first pass as long as 100,000 units' full read and plan are (seconds), here
        # longer than the whole lease.
        if slow:
            slow.pop()
            time.sleep(3)
        return snapshot(model)

    engine._snapshot = slow_first_snapshot  # type: ignore[method-assign]
    until(lambda: cluster.running() == {"a.service": "m1"}, timeout=20, what="a active")
    assert engine.stats.became_leader == 1
    assert engine.stats.full_reads == 1


def test_agents_sharing_an_etcd_client_each_watch_their_own_schedule(cluster: Cluster) -> None:
    # The benchmarks' simulated agents share one client (one gRPC channel, one watch
    # stream) per hundred: each still has its own watches on it, and wakes for its own.
    machines = [f"m{i}" for i in range(5)]
    for machine in machines:
        cluster.agent(machine)
    stream = cluster.registry._etcd._stream
    assert stream is not None
    # schedule, global units, own record, operators' metadata and cordon: five per agent
    # (each a key or prefix of its own machine's, but the globals), one stream
    assert len(stream.active) == 5 * len(machines)
    before = {m: cluster.agents[m].stats.wakeups for m in machines}
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(10)])
    cluster.engine()
    until(lambda: len(cluster.running()) == 10, what="every unit active")
    assert {m: cluster.agents[m].stats.wakeups - before[m] for m in machines} == dict.fromkeys(
        machines, 1
    )
    assert sum(cluster.agents[m].stats.empty_wakeups for m in machines) == 0
    assert cluster.registry._etcd._stream is stream
