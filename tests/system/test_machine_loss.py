"""[14] item 4: the engine's verdict on a machine whose lease ended, against a real etcd
that is paused (fleetpy/machine_loss.py; the rule as a table: tests/pure/test_machine_loss.py;
a host really killed: tests/system/test_outages.py::test_dead_host_units_move)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from fleetpy.cluster.etcd import EtcdServer

from support.sim_cluster import Cluster, unit
from support.waiting import until


def start(cluster: Cluster) -> dict[str, str]:
    """m1 at TTL 2, m2 and m3 at TTL 30, the engine's lease 30 s (a 3 s pause costs only m1
    its lease), 6 units on them; returns the placement once the engine's witness has
    answers over m1's last two TTLs."""
    cluster.agent("m1", ttl=2)
    cluster.agent("m2", ttl=30)
    cluster.agent("m3", ttl=30)
    engine = cluster.engine(lease_ttl=30)
    engine.settings = replace(engine.settings, machine_grace=GRACE)
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(6)])
    until(lambda: len(cluster.running()) == 6, what="6 units active")
    before = cluster.placement()
    assert "m1" in before.values()
    time.sleep(2 * 2 + 0.5)
    return before


def pause(etcd: EtcdServer, seconds: float) -> None:
    etcd.pause()
    time.sleep(seconds)
    etcd.resume()
    etcd.wait_healthy()


GRACE = 4.0


def test_a_live_agents_lease_a_paused_etcd_revoked_moves_nothing(
    own_etcd: EtcdServer, own_cluster: Cluster, capfd: pytest.CaptureFixture[str]
) -> None:
    """etcd paused 3 s: m1's lease (TTL 2) runs out meanwhile and etcd revokes it when it
    resumes; m2's, m3's (TTL 30) and the engine's survive. One machine of three is no mass
    loss; m1's agent registers anew and keeps its units."""
    before = start(own_cluster)
    lease = own_cluster.agents["m1"]._lease
    pause(own_etcd, 3.0)
    until(
        lambda: (
            own_cluster.agents["m1"]._lease not in (None, lease)
            and set(own_cluster.registry.list_machines()) == {"m1", "m2", "m3"}
        ),
        what="m1's lease revoked and m1 registered anew",
    )
    time.sleep(1.5)  # longer than any settle: a move would have been written by now
    assert own_cluster.placement() == before
    assert sorted(own_cluster.hosted()) == sorted(before.items())
    assert "event=unit_moved" not in capfd.readouterr().err


def test_a_machine_lost_while_etcd_was_paused_waits_the_grace_period(
    own_etcd: EtcdServer, own_cluster: Cluster, capfd: pytest.CaptureFixture[str]
) -> None:
    """m1's agent dies right before etcd is paused 3 s: its lease runs out during the
    pause and etcd revokes it when it resumes. The engine cannot tell that from a live
    agent's lease revoked for etcd's own silence (its witness saw etcd silent 3 s), so m1
    gets the grace period: its units stay 1.5 s after the loss (the old 1 s settle moved
    them), then move."""
    before = start(own_cluster)
    own_cluster.agents.pop("m1").stop(revoke=False)
    pause(own_etcd, 3.0)
    until(lambda: "m1" not in own_cluster.registry.list_machines(), what="m1's lease revoked")
    gone = time.monotonic()
    time.sleep(1.5)
    assert own_cluster.placement() == before
    # Why they stay, once the engine has written it (later under load; it stays written
    # for the whole grace period, so polling cannot miss it).
    until(
        lambda: any(
            "the engine had lost sight of it" in why
            for why in own_cluster.registry.read_view().reasons.values()
        ),
        timeout=GRACE + 10,
        what="the reason naming the grace period",
    )
    until(lambda: "m1" not in own_cluster.placement().values(), timeout=GRACE + 10, what="moved")
    assert time.monotonic() - gone >= GRACE - 1.0
    err = capfd.readouterr().err
    assert "event=machine_loss_doubtful" in err and "machine=m1" in err
