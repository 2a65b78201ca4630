"""A real fleet v1.0 cluster on nspawn hosts: the source of a migration to fleetpy.

`fleet_cluster(metadata=[...])` (a fixture, registered by tests/conftest.py) starts an etcd
of the test's own with the v2 API (`--enable-v2=true`, fleet's only API), boots one host
per metadata mapping with fleetpy's agent OFF (its config waits in
/etc/fleetpy/agent.yaml.pending: see `FleetCluster.enable_agent`) and fleet's own static
fleetd in it, as CoreOS ran it: `fleet.service` + `fleet.socket` (/var/run/fleet.sock),
enabled, configured by FLEET_* variables (etcd, metadata, agent TTL, public IP). It returns
once fleet lists every machine. `FleetCluster.fleetctl(...)` is the real fleetctl v1.0.0
with its etcd driver (it writes units and desired states straight into fleet's keyspace,
`/_coreos.com/fleet/` by default); `fleet_v2(...)` reads that keyspace over etcd's v2 HTTP
API.

The hosts' root is an overlay that starts empty at each boot: a host rebooted comes back
without fleetd's units (a machine where fleet was uninstalled) and, /run being empty too,
without the units fleet ran there. Everything is killed at teardown, also when the test
failed; fleetd's journal stays readable until then (`host.journal("fleet.service")`).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import PENDING_CONFIG, Host, HostPool

from support.fleetctl import fleet_tool
from support.hosts_fixtures import pool_name_prefix
from support.waiting import until

FLEET_PREFIX = "/_coreos.com/fleet/"
FLEETD_IN_HOST = "/usr/local/bin/fleetd"
FLEET_SOCKET = "/var/run/fleet.sock"
FLEET_UNIT = "fleet.service"

# CoreOS's own units for fleetd (coreos-overlay app-admin/fleet), configured by environment.
_SOCKET = f"""[Unit]
Description=Fleet API Socket
PartOf=fleet.service

[Socket]
ListenStream={FLEET_SOCKET}

[Install]
WantedBy=sockets.target
"""


def _service(environment: Mapping[str, str]) -> str:
    lines = "".join(f'Environment="{key}={value}"\n' for key, value in environment.items())
    return f"""[Unit]
Description=fleet daemon
Wants=fleet.socket
After=fleet.socket

[Service]
Environment=GOMAXPROCS=1
{lines}ExecStart={FLEETD_IN_HOST}
Restart=always
RestartSec=10s

[Install]
WantedBy=multi-user.target
"""


def fleet_v2(endpoint: str, key: str, recursive: bool = True) -> dict[str, Any] | None:
    """etcd's v2 answer for KEY (a full path, e.g. FLEET_PREFIX + "job"): its `node`, None
    if the key does not exist."""
    query = "?recursive=true" if recursive else ""
    url = f"{endpoint}/v2/keys{urllib.parse.quote(key)}{query}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)["node"]  # type: ignore[no-any-return]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def v2_leaves(node: Mapping[str, Any] | None) -> dict[str, str]:
    """Every leaf under a v2 NODE: {key: value}."""
    if node is None:
        return {}
    if not node.get("dir"):
        return {str(node["key"]): str(node.get("value", ""))}
    found: dict[str, str] = {}
    for child in node.get("nodes", []):
        found.update(v2_leaves(child))
    return found


@dataclass
class FleetCluster:
    """fleet's side: its etcd, its hosts (fleetd running, fleetpy's agent off) and fleetctl."""

    etcd: EtcdServer
    hosts: list[Host]
    workdir: Path
    prefix: str = FLEET_PREFIX
    metadata: list[Mapping[str, str]] = field(default_factory=list)

    def fleetctl(self, *args: str, ok: bool = True, timeout: float = 120) -> str:
        """The real fleetctl v1.0.0, etcd driver, on this cluster; its stdout + stderr."""
        result = subprocess.run(
            [
                fleet_tool("fleetctl"),
                "--driver=etcd",
                f"--endpoint={self.etcd.endpoint}",
                f"--etcd-key-prefix={self.prefix}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
        )
        assert (result.returncode == 0) == ok, (args, result.stdout, result.stderr)
        return result.stdout + result.stderr

    def write(self, name: str, text: str) -> str:
        """A unit file NAME in the workdir (fleetctl takes paths); its path."""
        path = self.workdir / name
        path.write_text(text)
        return str(path)

    def units(self) -> dict[str, dict[str, str]]:
        """fleetctl list-units: {unit: {machine, active, sub}} (a global unit: one row per
        machine, keyed "unit machine")."""
        out = self.fleetctl(
            "list-units", "--no-legend", "--full", "--fields=unit,machine,active,sub"
        )
        rows: dict[str, dict[str, str]] = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) != 4:
                continue
            unit, machine, active, sub = fields
            machine = machine.split("/")[0]
            key = unit if unit not in rows else f"{unit} {machine}"
            rows[key] = {"machine": machine, "active": active, "sub": sub}
        return rows

    def machines(self) -> list[str]:
        """Machine ids fleet lists (their fleetd alive)."""
        out = self.fleetctl("list-machines", "--no-legend", "--full", "--fields=machine")
        return sorted(line.strip() for line in out.splitlines() if line.strip())

    def host(self, machine: str) -> Host:
        return next(h for h in self.hosts if h.machine_id == machine)

    def where(self, unit: str) -> Host:
        """The host fleet placed UNIT on (its job's target in fleet's keyspace)."""
        node = fleet_v2(self.etcd.endpoint, f"{self.prefix}job/{unit}/target", recursive=False)
        assert node is not None, f"{unit} has no target in fleet's keyspace"
        return self.host(str(node["value"]))

    def wait_active(self, units: Sequence[str], timeout: float = 90) -> None:
        """Until fleet reports each of UNITS active (globals: on every machine they run on)."""

        def active() -> bool:
            rows = self.units()
            return all(
                any(
                    key.split()[0] == unit and row["active"] == "active"
                    for key, row in rows.items()
                )
                for unit in units
            )

        until(active, timeout=timeout, what=f"fleet reporting {', '.join(units)} active")

    def fleetd_running(self, host: Host) -> bool:
        return host.alive and host.is_active(FLEET_UNIT)

    def enable_agent(self, host: Host) -> None:
        """Put fleetpy's agent config in place on HOST (what provision.sh --endpoint writes),
        without starting the agent: the hand-over starts it."""
        host.run(["mv", f"/etc/fleetpy/{PENDING_CONFIG}", "/etc/fleetpy/agent.yaml"])


FleetClusterFactory = Callable[..., FleetCluster]


COREOS_UNIT_DIR = "/usr/lib/systemd/system"


def install_fleetd(
    host: Host,
    etcd: EtcdServer,
    metadata: Mapping[str, str],
    ttl: str,
    unit_dir: str = COREOS_UNIT_DIR,
) -> None:
    """fleet.service and fleet.socket where CoreOS shipped them (/usr/lib/systemd/system;
    UNIT_DIR /etc/systemd/system: as installed by hand elsewhere), enabled and started."""
    environment = {
        "FLEET_ETCD_SERVERS": etcd.endpoint,
        "FLEET_PUBLIC_IP": host.public_ip,
        "FLEET_AGENT_TTL": ttl,
        "FLEET_METADATA": ",".join(f"{k}={v}" for k, v in metadata.items()),
    }
    for name, text in ((FLEET_UNIT, _service(environment)), ("fleet.socket", _SOCKET)):
        host.run(["tee", f"{unit_dir}/{name}"], input=text)
    host.systemctl("daemon-reload")
    host.systemctl("enable", "--now", "fleet.socket", FLEET_UNIT)


@pytest.fixture
def fleet_cluster(
    host_rootfs: Path,
    host_docker: str,
    prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FleetClusterFactory]:
    """Factory: fleet_cluster(metadata=[{...}, ...], agent_ttl="10s", fleet_unit_dir=...,
    **launch_host options)
    -> FleetCluster, one host per mapping, fleetd on each; their fleetpy agents (off) are
    configured for the test's etcd and `prefix` (and the options' extra_config, binds...)."""
    fleet_tool("fleetd")  # skips the test when the binaries are missing
    workdir = tmp_path_factory.mktemp("fleet")
    etcd = EtcdServer(extra_args=("--enable-v2=true",))
    pools: list[HostPool] = []

    def start(
        metadata: Sequence[Mapping[str, str]] = ({},),
        agent_ttl: str = "10s",
        fleet_unit_dir: str = COREOS_UNIT_DIR,
        **options: Any,
    ) -> FleetCluster:
        if not etcd.running:
            etcd.start()
        pool = HostPool(
            rootfs=host_rootfs,
            state_root=workdir / "hosts",
            etcd_endpoints=[etcd.endpoint],
            name_prefix=pool_name_prefix(),
        )
        pools.append(pool)
        started = pool.start(
            len(metadata),
            metadata=list(metadata),
            etcd_prefix=prefix,
            ttl=3,
            agent=False,
            **{
                **options,
                "binds": [*options.get("binds", ()), (Path(fleet_tool("fleetd")), FLEETD_IN_HOST)],
            },
        )
        for host, host_metadata in zip(started, metadata):
            install_fleetd(host, etcd, host_metadata, agent_ttl, fleet_unit_dir)
        cluster = FleetCluster(etcd, started, workdir, metadata=list(metadata))
        until(
            lambda: cluster.machines() == sorted(h.machine_id for h in started),
            timeout=60,
            what=f"fleet listing {len(started)} machines",
        )
        return cluster

    try:
        yield start
    finally:
        for pool in pools:
            pool.close()
        etcd.stop()
