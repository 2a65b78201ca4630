"""Dependencies across machines through faults, on simulated hosts against an etcd of the
test's own: etcd paused past every lease, or every lease revoked at once (machines and
their reported states vanish from etcd, then come back). A running web.service bound to
db.service (BindsTo=) on the other machine is never stopped for it: the engine stops a
bound unit only for what it knows (db stopped, failed, destroyed, its machine judged
lost), never for what it cannot see."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fleetpy.cluster.etcd import EtcdServer

from support.outages import pause_etcd, revoke_every_lease
from support.sim_cluster import Cluster, unit, watch
from support.waiting import until

WEB, DB = "web.service", "db.service"


def revoke_db_machine_lease(etcd: EtcdServer, cluster: Cluster) -> None:
    """db's machine alone loses its lease (its record and states go at once) while the
    engine keeps leading and watching: the machine is out of touch until its agent
    registers again, about a second later."""
    lease = cluster.agents["m2"]._lease  # the agent's own; no public accessor
    assert lease is not None
    cluster.registry.revoke_lease(lease)


@pytest.mark.parametrize(
    "outage",
    [
        pytest.param(lambda etcd, _: pause_etcd(etcd, 8.0), id="etcd-paused-past-the-leases"),
        pytest.param(lambda etcd, _: revoke_every_lease(etcd), id="every-lease-revoked"),
        pytest.param(revoke_db_machine_lease, id="db-machine-lease-revoked"),
    ],
)
def test_a_bound_unit_rides_out_an_outage(
    own_etcd: EtcdServer,
    own_cluster: Cluster,
    outage: Callable[[EtcdServer, Cluster], object],
    capfd: pytest.CaptureFixture[str],
) -> None:
    etcd, cluster = own_etcd, own_cluster
    cluster.agent("m1", role="web")
    cluster.agent("m2", role="db")
    cluster.engine()
    cluster.registry.change_units(
        [
            unit(WEB, "MachineMetadata=role=web\nBindsTo=db.service"),
            unit(DB, "MachineMetadata=role=db"),
        ]
    )
    until(lambda: cluster.running() == {DB: "m2", WEB: "m1"}, what="db, then web, active")

    def both_hosted() -> None:
        assert cluster.hosted() == [(DB, "m2"), (WEB, "m1")], cluster.hosted()

    stop, seen = watch(both_hosted)
    capfd.readouterr()
    outage(etcd, cluster)
    # Back: both machines registered and both units reported again, then a few engine
    # passes and dependency reads more.
    until(lambda: cluster.running() == {DB: "m2", WEB: "m1"}, timeout=60, what="reported again")
    stop.wait(5)
    stop.set()
    assert seen == []
    # Nor was it held for its dependency, or stopped, for a moment (the engine's log: a
    # held unit's reason; web's agent's: its actions). Other reasons may come and go (the
    # engine's grace period for a machine it lost sight of says so).
    logs = capfd.readouterr().err
    assert 'reason="waiting for db.service' not in logs
    assert "action=stop unit=web.service" not in logs
    assert cluster.placement() == {DB: "m2", WEB: "m1"}
    # The grace period's reasons go with the engine's next pass after both machines are
    # back (that pass can come late under load).
    until(
        lambda: cluster.registry.read_view(with_states=False).reasons == {},
        what="no reason left",
    )
