"""`fleetpy migrate --from-fleet` from a real fleet v1.0 cluster (fleetd on nspawn hosts,
tests/support/fleet_hosts.py): the keys fleetd and fleet's engine wrote themselves (machine
objects, metadata, placements) read as fleet read them; then the real fleetctl lists the
same units and machines from `fleetpy api` as from fleet."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleetpy.api import build
from fleetpy.config import ApiSettings
from fleetpy.registry import Registry, RegistryConfig

from support.cluster_harness import CHECKOUT_FLEETPY
from support.fleet_hosts import FLEET_PREFIX, FleetClusterFactory, fleet_v2
from support.fleetctl import fleetctl_on
from support.sim_cluster import Cluster
from support.waiting import until

pytestmark = pytest.mark.hosts

SLEEPER = "[Unit]\nDescription=%n\n\n[Service]\nExecStart=/bin/sleep 100000\n"
UNITS = {
    "web.service": SLEEPER,
    "side.service": SLEEPER + "\n[X-Fleet]\nMachineOf=web.service\n",
    "db@.service": SLEEPER + "\n[X-Fleet]\nMachineMetadata=rack=r2\n",
    "g.service": SLEEPER + "\n[X-Fleet]\nGlobal=true\n",
    "idle.service": SLEEPER + "\n[X-Fleet]\nMachineMetadata=rack=r1\n",
}


def test_a_real_fleets_units_and_machines_come_over_as_fleet_listed_them(
    fleet_cluster: FleetClusterFactory, prefix: str, tmp_path: Path
) -> None:
    fleet = fleet_cluster(metadata=[{"rack": "r1"}, {"rack": "r2", "disk": "ssd"}])
    paths = {name: fleet.write(name, text) for name, text in UNITS.items()}
    fleet.fleetctl("submit", *paths.values())
    fleet.fleetctl("start", "--no-block", "web.service", "side.service", "db@1.service")
    fleet.fleetctl("start", "--no-block", "g.service")
    fleet.fleetctl("load", "--no-block", "idle.service")
    fleet.wait_active(["web.service", "side.service", "db@1.service", "g.service"])

    def target(unit: str) -> str | None:
        node = fleet_v2(fleet.etcd.endpoint, f"{FLEET_PREFIX}job/{unit}/target", recursive=False)
        return None if node is None else str(node["value"])

    until(lambda: target("idle.service") is not None, what="fleet placing idle.service")
    unit_fields = ("list-unit-files", "--full", "--no-legend", "--fields=unit,dstate,target")
    machine_fields = ("list-machines", "--full", "--no-legend", "--fields=machine,ip,metadata")
    fleet_units = sorted(fleet.fleetctl(*unit_fields).splitlines())
    fleet_machines = sorted(fleet.fleetctl(*machine_fields).splitlines())

    command = [*CHECKOUT_FLEETPY, "--endpoint", fleet.etcd.endpoint, "--etcd-prefix", prefix]
    command += ["migrate", "--from-fleet", fleet.etcd.endpoint]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "6 to add, 0 unchanged, 0 refused, 2 machines' metadata, 2 hand-over holds" in (
        result.stdout
    )
    config = RegistryConfig(endpoints=(fleet.etcd.endpoint,), prefix=prefix, timeout=5)
    registry = Registry(config)
    cluster = Cluster(config)
    try:
        view = registry.read_view(with_states=False)
        # Each placed unit where fleet's engine put it; fleetd's metadata as fleet merged it.
        placed = ("web.service", "side.service", "db@1.service", "idle.service")
        assert {u: m for u, (m, _) in view.schedule.items()} == {u: target(u) for u in placed}
        hosts = {host.machine_id: host for host in fleet.hosts}
        assert view.overlays == {
            fleet.hosts[0].machine_id: {"rack": "r1"},
            fleet.hosts[1].machine_id: {"rack": "r2", "disk": "ssd"},
        }
        assert set(view.cordons) == set(hosts)  # held until each host is handed over

        # The listings, through fleet's API served by fleetpy: machines as the hosts' agents
        # will register them (simulated here: the hand-over is another test's).
        for machine, host in hosts.items():
            cluster.agent(machine, public_ip=host.public_ip)
        api_registry = Registry(config)
        server, live = build(api_registry, ApiSettings(listen=str(tmp_path / "api.sock")))
        server.start()
        try:
            fleetpy_side = fleetctl_on(str(tmp_path / "api.sock"), tmp_path)
            assert sorted(fleetpy_side(*unit_fields).splitlines()) == fleet_units
            assert sorted(fleetpy_side(*machine_fields).splitlines()) == fleet_machines
        finally:
            server.close()
            live.close()
            api_registry.close()
    finally:
        cluster.close()
        registry.close()
