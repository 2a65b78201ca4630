"""`fleetpy migrate --from-fleet` from a keyspace the real fleetctl v1.0.0 wrote (its etcd
driver, into the session etcd's v2 API), with machines and placements as fleetd and fleet's
engine write them; then the real fleetctl, pointed at `fleetpy api`, lists the same units
and machines as it listed from fleet's etcd (issue 27, items 1 and 3)."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.fleet_keyspace import read_fleet
from fleetpy.registry import Registry, RegistryConfig

from support.api_fixtures import Api
from support.cluster_harness import CHECKOUT_FLEETPY
from support.fleet_keys import FleetKeys, machine_keys, unit_keys
from support.fleetctl import fleetctl_binary, fleetctl_on
from support.sim_cluster import Cluster
from support.waiting import until

M1, M2 = "c" * 32, "d" * 32
UNITS = {
    "web.service": "[Service]\nExecStart=/bin/sleep 1000\n",
    "side.service": "[Service]\nExecStart=/bin/sleep 1001\n\n[X-Fleet]\nMachineOf=web.service\n",
    "db@.service": "[Service]\nExecStart=/bin/sleep %i\n\n[X-Fleet]\nMachineMetadata=rack=r2\n",
    "g.service": "[Service]\nExecStart=/bin/sleep 1002\n\n[X-Fleet]\nGlobal=true\n",
    "idle.service": "[Service]\nExecStart=/bin/sleep 1003\n",
    "spare.service": "[Service]\nExecStart=/bin/sleep 1004\n",
    # Continued lines, a comment, an empty assignment: fleet kept them, and so does fleetpy.
    "cont.service": "[Unit]\nDescription=a  b\n# c\n\n[Service]\nExecStart=/bin/sh -c \\\n"
    '   "sleep 1; \\\n   sleep 2"\nEnvironment=A=1\nEnvironment=\nEnvironment="B=2 3"\n',
    # fleet only warned about the misspelt option; fleetpy refuses the unit.
    "bad.service": "[Service]\nExecStart=/bin/sleep 1005\n\n[X-Fleet]\nMachineMetdata=rack=r1\n",
}
# etcd's v2 guest role, all of whose rights are revoked (etcd v2 auth).
GUEST_KEYS = {"kv": {"read": ["/*"], "write": ["/*"]}}
# Where fleet's engine placed them.
TARGETS = {
    "web.service": M1,
    "side.service": M1,
    "db@1.service": M2,
    "idle.service": M2,
    "bad.service": M2,
}


def fleetctl_etcd(endpoint: str, prefix: str, cwd: Path) -> Callable[..., str]:
    """fleet's fleetctl with its etcd driver: it writes fleet's keyspace itself."""

    def fleetctl(*args: str) -> str:
        result = subprocess.run(
            [
                fleetctl_binary(),
                "--driver=etcd",
                f"--endpoint={endpoint}",
                f"--etcd-key-prefix={prefix}/",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    return fleetctl


def rows(listing: str) -> list[tuple[str, ...]]:
    return sorted(tuple(line.split()) for line in listing.strip().splitlines())


@pytest.fixture
def fleetctl_keyspace(
    etcd: EtcdServer, prefix: str, tmp_path: Path
) -> tuple[FleetKeys, Callable[..., str]]:
    """A fleet cluster's keyspace: units by fleetctl, machines and placements as fleetd and
    fleet's engine write them."""
    keys = FleetKeys(etcd.endpoint, f"/fleet{prefix}")
    fleetctl = fleetctl_etcd(etcd.endpoint, keys.prefix, tmp_path)
    for name, text in UNITS.items():
        (tmp_path / name).write_text(text)
    fleetctl("submit", *UNITS)
    fleetctl("start", "--no-block", "web.service", "side.service", "db@1.service")
    fleetctl("start", "--no-block", "g.service", "bad.service")
    fleetctl("load", "--no-block", "idle.service")
    keys.put(
        {
            **machine_keys(M1, "10.0.0.1", {"rack": "r1"}),
            **machine_keys(M2, "10.0.0.2", {"rack": "r2"}, {"disk": "ssd"}),
            **{f"job/{unit}/target": machine for unit, machine in TARGETS.items()},
        }
    )
    return keys, fleetctl


def test_fleetctl_lists_the_same_units_and_machines_from_fleetpy_after_the_migration(
    fleetctl_keyspace: tuple[FleetKeys, Callable[..., str]],
    registry_config: RegistryConfig,
    registry: Registry,
    api: Api,
    tmp_path: Path,
) -> None:
    keys, fleet_side = fleetctl_keyspace
    unit_fields = ("list-unit-files", "--full", "--no-legend", "--fields=unit,dstate,target")
    machine_fields = ("list-machines", "--full", "--no-legend", "--fields=machine,ip,metadata")
    fleet_units, fleet_machines = fleet_side(*unit_fields), fleet_side(*machine_fields)
    assert (M1, "10.0.0.1", "rack=r1") in rows(fleet_machines)

    command = [*CHECKOUT_FLEETPY, "--endpoint", registry_config.endpoints[0]]
    command += ["--etcd-prefix", registry_config.prefix, "migrate"]
    command += ["--from-fleet", keys.endpoint, "--fleet-prefix", keys.prefix + "/"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "8 to add, 0 unchanged, 1 refused" in result.stdout
    # Each unit's text in fleetpy is fleet's, byte for byte (go-systemd's serialization is
    # fleetpy's canonical form), so the agents write the unit files fleetd wrote.
    fleet = read_fleet(keys.endpoint, keys.prefix)
    migrated = registry.list_units()
    texts = registry.get_contents([record.hash for record in migrated.values()])
    assert {name: texts[record.hash] for name, record in migrated.items()} == {
        name: unit.text for name, unit in fleet.units.items() if name != "bad.service"
    }
    assert "! bad.service  refused, stays under fleet: unknown [X-Fleet] option" in result.stdout

    cluster = Cluster(registry_config)  # the hosts' fleetpy agents, then an engine
    try:
        cluster.agent(M1, public_ip="10.0.0.1")
        cluster.agent(M2, public_ip="10.0.0.2")
        cluster.engine()
        sock = str(tmp_path / "api.sock")
        api(listen=sock)
        fleetpy_side = fleetctl_on(sock, tmp_path)
        # Every unit but the refused one, where fleet had it; the machines, as fleet had them.
        expected = [row for row in rows(fleet_units) if row[0] != "bad.service"]
        assert rows(fleetpy_side(*unit_fields)) == expected
        assert rows(fleetpy_side(*machine_fields)) == rows(fleet_machines)
        listed = ("list-units", "--full", "--no-legend", "--fields=unit,machine")
        placed = {(unit, machine) for unit, machine in TARGETS.items() if unit != "bad.service"}
        placed |= {("g.service", M1), ("g.service", M2)}

        def units_on_their_machines() -> bool:
            found = {(u, m.partition("/")[0]) for u, m in rows(fleetpy_side(*listed))}
            return found == placed

        until(units_on_their_machines, what="every unit listed on fleet's machine")
    finally:
        cluster.close()


def test_an_etcd_without_the_v2_api_is_one_line_and_nothing_is_written(
    registry_config: RegistryConfig, registry: Registry
) -> None:
    with EtcdServer() as v3_only:  # etcd 3.4's default: no v2 API
        command = [*CHECKOUT_FLEETPY, "--endpoint", registry_config.endpoints[0]]
        command += ["--etcd-prefix", registry_config.prefix, "migrate"]
        result = subprocess.run(
            [*command, "--from-fleet", v3_only.endpoint], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert result.stderr.startswith("fleetpy: error: etcd 3.4.") and result.stderr.endswith(
        f" at {v3_only.endpoint} does not serve the v2 API fleet used (etcd 3.4: start it "
        "with --enable-v2=true)\n"
    )
    assert result.stderr.count("\n") == 1
    assert registry.read_view(with_states=False).units == {}


def test_a_migration_killed_half_way_is_finished_by_running_it_again(
    etcd: EtcdServer, prefix: str, registry_config: RegistryConfig, registry: Registry
) -> None:
    keys = FleetKeys(etcd.endpoint, f"/fleet{prefix}")
    count = 1500
    text = "[Service]\nExecStart=/bin/sleep %i\n"
    writes = machine_keys(M1) | unit_keys("u@.service", text)
    for index in range(count):
        writes |= unit_keys(f"u@{index}.service", text, "launched", M1)
    with ThreadPoolExecutor(8) as pool:
        items = list(writes.items())
        list(pool.map(lambda part: keys.put(dict(part)), [items[i::8] for i in range(8)]))
    command = [*CHECKOUT_FLEETPY, "--endpoint", registry_config.endpoints[0]]
    command += ["--etcd-prefix", registry_config.prefix, "migrate"]
    command += ["--from-fleet", keys.endpoint, "--fleet-prefix", keys.prefix]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(lambda: registry.count("unit") > 0, timeout=60, interval=0.005, what="a first write")
    finally:
        first.kill()
        first.wait()
    view = registry.read_view(with_states=False)
    assert 0 < len(view.units) < count + 1, "killed before it finished"
    # Whole units only: each one written has its placement, and nothing else is placed.
    placed = {unit for unit, (machine, _) in view.schedule.items() if machine == M1}
    assert placed == set(view.units) - {"u@.service"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{count + 1 - len(view.units)} to add, {len(view.units)} unchanged" in result.stdout
    view = registry.read_view(with_states=False)
    assert len(view.units) == count + 1 and len(view.schedule) == count


def test_an_etcd_asking_for_v2_credentials_is_one_line_and_nothing_is_written(
    registry_config: RegistryConfig, registry: Registry
) -> None:
    with EtcdServer(extra_args=("--enable-v2=true",)) as guarded:
        base = guarded.endpoint
        v2_auth = [
            ("PUT", "/v2/auth/users/root", {"user": "root", "password": "pw"}),
            ("PUT", "/v2/auth/enable", None),
            ("PUT", "/v2/auth/roles/guest", {"role": "guest", "revoke": GUEST_KEYS}),
        ]
        for method, path, body in v2_auth:
            request = urllib.request.Request(
                base + path, json.dumps(body).encode() if body else None, method=method
            )
            request.add_header("Authorization", "Basic " + base64.b64encode(b"root:pw").decode())
            urllib.request.urlopen(request, timeout=10).close()
        command = [*CHECKOUT_FLEETPY, "--endpoint", registry_config.endpoints[0]]
        command += ["--etcd-prefix", registry_config.prefix, "migrate", "--from-fleet", base]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (
        f"fleetpy: error: etcd at {base} answered 401 to a v2 read of /_coreos.com/fleet: "
        "The request requires user authentication\n"
    )
    assert registry.read_view(with_states=False).units == {}
