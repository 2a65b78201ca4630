"""The real fleet v1.0 cluster of tests/support/fleet_hosts.py, and the fleetd behaviour the
hand-over is built on (fleetpy/fleet_handover.py): on SIGTERM fleetd stops every unit it
runs before it exits, so it must never be stopped the ordinary way during a migration."""

from __future__ import annotations

import pytest

from support.fleet_hosts import FLEET_PREFIX, FLEET_UNIT, FleetClusterFactory, fleet_v2
from support.waiting import until

pytestmark = pytest.mark.hosts

SLEEPER = "[Unit]\nDescription=%n\n\n[Service]\nExecStart=/bin/sleep 100000\n"


def test_fleetd_runs_units_and_purges_them_on_sigterm(fleet_cluster: FleetClusterFactory) -> None:
    cluster = fleet_cluster(metadata=[{"role": "web"}, {"role": "db"}])
    web = cluster.write("web.service", SLEEPER + "\n[X-Fleet]\nMachineMetadata=role=web\n")
    cluster.fleetctl("start", "--no-block", web)
    cluster.wait_active(["web.service"])
    host = cluster.where("web.service")
    assert host.machine_id == cluster.hosts[0].machine_id
    assert host.main_pid("web.service") > 0
    machines = fleet_v2(cluster.etcd.endpoint, FLEET_PREFIX + "machines")
    assert machines is not None and len(machines["nodes"]) == 2

    # What `systemctl stop fleet` does: fleetd's SIGTERM handler unloads every unit.
    host.systemctl("stop", "fleet.socket", FLEET_UNIT)
    until(lambda: not host.is_active("web.service"), timeout=30, what="fleetd's purge")
    assert host.run(["ls", "-A", "/run/fleet/units"]).stdout.split() == []
