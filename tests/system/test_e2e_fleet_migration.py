"""A running fleet v1.0 cluster moved to fleetpy without stopping a unit (issue 27, item 4):
the real fleetd on three nspawn hosts (tests/support/fleet_hosts.py) runs plain, template,
global and MachineOf units, some launched, some only loaded, one fleetpy refuses; then
`fleetpy migrate --from-fleet` writes fleetpy's desired state and `fleetpy migrate-host`
hands each host over. The migration is interrupted twice on the way (a migrate-host killed
right after it stopped fleetd; a host down, then back) and resumed by running it again.

Afterwards: every unit that ran keeps its MainPID on the machine it ran on, fleetpy lists it
there, fleetd runs nowhere, the refused unit still runs from fleet's files, the unit fleet
had placed but that was not running is started by fleetpy, and fleetpy's engine, started
last, moves nothing once the migration's holds are ended."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetpy.cluster.nspawn import Host

from support.fleet import Fleet, cli_env, run_cli
from support.fleet_hosts import FLEET_UNIT, FleetCluster, FleetClusterFactory
from support.fleetctl import fleetctl_on
from support.waiting import until

pytestmark = pytest.mark.hosts

SLEEP = "[Unit]\nDescription=%n\n\n[Service]\nExecStart=/bin/sleep 100000\n"
WEB = SLEEP + "\n[X-Fleet]\nMachineMetadata=role=web\n"
DB = SLEEP + "\n[X-Fleet]\nMachineMetadata=role=db\n"
UNITS = {
    "plain.service": WEB,
    "side.service": SLEEP + "\n[X-Fleet]\nMachineOf=plain.service\n",
    "tmpl@.service": SLEEP,
    "glob.service": SLEEP + "\n[X-Fleet]\nGlobal=true\nMachineMetadata=role=web\n",
    "db.service": DB,
    "idle-web.service": WEB,
    "idle-db.service": DB,
    "notyet.service": WEB,
    # fleet only warned about the misspelt option (and ignored it); fleetpy refuses the unit.
    # MachineOf= keeps it on a web host, which stays up: it must go on running there.
    "refused.service": SLEEP + "\n[X-Fleet]\nMachineOf=plain.service\nMachineMetdata=role=web\n",
}
LAUNCHED = [
    "plain.service",
    "side.service",
    "tmpl@1.service",
    "tmpl@2.service",
    "glob.service",
    "db.service",
    "notyet.service",
    "refused.service",
]
LOADED = ["idle-web.service", "idle-db.service"]


def running(cluster: FleetCluster) -> dict[tuple[str, str], int]:
    """(machine, unit) -> MainPID of every unit of UNITS active on a live host."""
    found = {}
    for host in cluster.hosts:
        if not host.alive:
            continue
        for unit in [*LAUNCHED, *LOADED]:
            if host.is_active(unit):
                found[host.machine_id, unit] = host.main_pid(unit)
    return found


def migrate_host(cluster: FleetCluster, host: Host) -> subprocess.CompletedProcess[str]:
    argv = ["fleetpy", "migrate-host", "--from-fleet", cluster.etcd.endpoint, "--timeout", "90"]
    return host.run(argv, check=False, timeout=150)


def killed_after_fleetd_stopped(cluster: FleetCluster, host: Host) -> None:
    """migrate-host on HOST, SIGKILLed as soon as fleetd is down (the agent not yet
    awaited): what an operator's lost ssh session leaves."""
    script = (
        f"fleetpy migrate-host --from-fleet {cluster.etcd.endpoint} & pid=$!; "
        f"while systemctl -q is-active {FLEET_UNIT}; do sleep 0.05; done; kill -KILL $pid; "
        "wait $pid; exit 0"
    )
    host.run(["sh", "-c", script], timeout=120)


def rows(listing: str) -> list[tuple[str, ...]]:
    return sorted(tuple(line.split()) for line in listing.strip().splitlines())


def fleetd_processes(host: Host) -> list[int]:
    found = []
    for pid in host.processes():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "fleetd":
                found.append(pid)
        except OSError:
            continue
    return found


def test_a_running_fleet_cluster_moves_to_fleetpy_without_a_restart(
    fleet_cluster: FleetClusterFactory, prefix: str, tmp_path: Path
) -> None:
    cluster = fleet_cluster(metadata=[{"role": "web"}, {"role": "web"}, {"role": "db"}])
    web1, web2, db = cluster.hosts
    paths = [cluster.write(name, text) for name, text in UNITS.items()]
    cluster.fleetctl("submit", *paths)
    cluster.fleetctl("start", "--no-block", *LAUNCHED)
    cluster.fleetctl("load", "--no-block", *LOADED)
    cluster.wait_active(LAUNCHED)
    # That waits for a global unit on one machine: both web hosts' copies reported active
    # before they are read (fleet's listing is compared with fleetpy's after the migration).
    webs = {web1.machine_id, web2.machine_id}
    until(
        lambda: (
            {
                row["machine"]
                for key, row in cluster.units().items()
                if key.split()[0] == "glob.service" and row["active"] == "active"
            }
            == webs
        ),
        timeout=90,
        what="fleet reporting glob.service active on both web hosts",
    )

    def loaded(unit: str) -> bool:
        return cluster.where(unit).show(unit, "LoadState") == "loaded"

    for unit in LOADED:
        until(lambda: loaded(unit), what=f"fleetd loading {unit}")
    placed = {
        unit: cluster.where(unit).machine_id
        for unit in [*LAUNCHED, *LOADED]
        if unit != "glob.service"
    }
    assert placed["side.service"] == placed["plain.service"]
    assert placed["db.service"] == placed["idle-db.service"] == db.machine_id
    # Placed by fleet, launched, but not running when the migration starts.
    cluster.where("notyet.service").systemctl("stop", "notyet.service")
    before = running(cluster)
    assert (web1.machine_id, "glob.service") in before and (
        web2.machine_id,
        "glob.service",
    ) in before
    assert not any(unit == "notyet.service" for _, unit in before)

    unit_files = ("list-unit-files", "--full", "--no-legend", "--fields=unit,dstate,target")
    machines = ("list-machines", "--full", "--no-legend", "--fields=machine,ip,metadata")
    units = ("list-units", "--full", "--no-legend", "--fields=unit,machine")
    fleet_said = {args: rows(cluster.fleetctl(*args)) for args in (unit_files, machines, units)}

    env = cli_env(cluster.etcd.endpoint, prefix)
    fleetpy = [sys.executable, "-m", "fleetpy"]
    migrate = [*fleetpy, "migrate", "--from-fleet", cluster.etcd.endpoint]
    migrated = run_cli(migrate, env, tmp_path)
    assert "! refused.service" in migrated.stdout, migrated.stdout
    for host in cluster.hosts:
        cluster.enable_agent(host)  # provisioned for fleetpy; its agent not started yet

    first = migrate_host(cluster, web1)
    assert first.returncode == 0, first.stderr
    assert f"Machine {web1.machine_id}: fleetd killed" in first.stdout
    assert f"`fleetpy uncordon {web1.machine_id}` ends it" in first.stderr  # migrate's hold

    db.power_off(hard=True)  # a host down half-way; fleet's engine, frozen, moves nothing
    killed_after_fleetd_stopped(cluster, web2)
    assert not web2.is_active(FLEET_UNIT)
    second = migrate_host(cluster, web2)  # resumed
    assert second.returncode == 0, second.stderr
    assert f"Machine {web2.machine_id}: fleetd not running" in second.stdout

    db.boot()  # back without fleetd (its /etc starts empty); its agent starts at boot
    third = migrate_host(cluster, db)
    assert third.returncode == 0, third.stderr
    assert f"Machine {db.machine_id}: fleetd absent" in third.stdout

    refused_on = placed["refused.service"]
    for result, host in ((first, web1), (second, web2), (third, db)):
        left = "= refused.service  left running under fleet's last state" in result.stdout
        assert left is (host.machine_id == refused_on), (host.name, result.stdout)

    fleet = Fleet(cluster.etcd, prefix, tmp_path)  # fleetpy's engine, started last
    try:
        for host in cluster.hosts:  # the migration's holds ended: nothing keeps units put
            fleet("uncordon", host.machine_id)
        # The engine leads and plans (slow under load: waited for, not slept through).
        started_by_fleetpy = {
            (placed["notyet.service"], "notyet.service"),
            (db.machine_id, "db.service"),
        }
        until(
            lambda: started_by_fleetpy <= running(cluster).keys(),
            timeout=90,
            what="notyet.service and db.service started by fleetpy",
        )
        after = running(cluster)
        survivors = {(m, u): pid for (m, u), pid in before.items() if m != db.machine_id}
        assert {key: after.get(key) for key in survivors} == survivors
        assert db.show("idle-db.service", "LoadState") == "loaded"
        assert not any(
            host.is_active(FLEET_UNIT) or fleetd_processes(host) for host in cluster.hosts
        )

        expected = {(u, m) for u, m in placed.items() if u != "refused.service"}
        expected |= {("glob.service", web1.machine_id), ("glob.service", web2.machine_id)}

        def listed() -> set[tuple[str, str]]:
            return {(u["unit"], u["machine"].split("/")[0]) for u in fleet.units()}

        until(lambda: listed() >= expected, timeout=30, what="every unit listed where it runs")
        assert not any(u == "refused.service" for u, _ in listed())
        # Operators' habits: fleetctl, pointed at `fleetpy api`, lists what it listed from fleet.
        sock = str(tmp_path / "api.sock")
        with open(tmp_path / "api.log", "ab") as log:
            api = subprocess.Popen([*fleetpy, "api", "--listen", sock], env=env, stderr=log)
        try:
            until(lambda: Path(sock).exists(), what="fleetpy api's socket")
            fleetctl = fleetctl_on(sock, tmp_path)
            for args, said in fleet_said.items():
                assert rows(fleetctl(*args)) == [r for r in said if r[0] != "refused.service"]
        finally:
            api.kill()
            api.wait()
        refused_host = cluster.host(refused_on)
        link = refused_host.run(["readlink", "/run/systemd/system/refused.service"]).stdout
        assert link.strip().startswith("/run/fleet/units/")
    finally:
        fleet.close()
