"""End to end on real hosts: systemd-nspawn machines with real systemd, the real agent as
their systemd service, the CI machine's dockerd, and `fleetpy` driven from outside."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import Host
from fleetpy.registry import Registry

from support.fleet import Fleet, containers
from support.fleetctl import fleetctl_on
from support.hosts_fixtures import SharedHosts
from support.waiting import until

pytestmark = pytest.mark.hosts

# Booted once for the tests that need no fresh host (on_shared_hosts): each destroys its
# units after it. The tests that kill a host, stop or restart its agent, or pause etcd boot
# their own (hosts).
SHARED_HOSTS = ({"role": "web"}, {"role": "web"}, {"role": "db"})


def host_of(hosts: list[Host], machine: str) -> Host:
    return next(h for h in hosts if h.machine_id == machine)


def test_docker_unit_start_stop(on_shared_hosts: SharedHosts) -> None:
    fleet = on_shared_hosts.fleet
    unit = fleet.docker_unit("box.service")
    fleet("start", "--block-attempts", "60", unit)
    (state,) = fleet.units()
    host = on_shared_hosts.host(state["machine"])
    assert host.is_active("box.service")
    name = f"fleetpy-box--{host.machine_id}"
    until(lambda: name in containers(), what="container running")
    # systemctl status on the host shows it like any other unit
    status = host.systemctl("status", "box.service", check=False).stdout
    assert "Loaded: loaded (/run/systemd/system/box.service" in status
    fleet("stop", "box.service")
    until(lambda: name not in containers(), what="container gone")
    assert not host.is_active("box.service")
    fleet("destroy", "box.service")
    until(lambda: fleet.units() == [], what="unit gone")
    until(
        lambda: (
            host.run(["test", "-e", "/run/systemd/system/box.service"], check=False).returncode != 0
        ),
        what="unit file removed",
    )


def test_a_unit_kept_as_written_means_to_systemd_what_it_meant(
    on_shared_hosts: SharedHosts,
) -> None:
    """Stored as fleet kept it (continued lines, an empty assignment, keys repeated apart),
    the unit file a host's real systemd gets means what the user's file meant: the reset
    drops the ExecStartPre= before it, the continued ExecStart= is one command line."""
    fleet = on_shared_hosts.fleet
    text = (
        "[Unit]\nDescription=kept as written\nAfter=network.target\nWants=network.target\n"
        "After=basic.target\n\n[Service]\nExecStartPre=/bin/false\nExecStartPre=\n"
        "ExecStartPre=/bin/true\nExecStart=/bin/sh -c \\\n    'echo started; \\\n"
        "     exec sleep 1000'\n"
    )
    path = fleet.write("kept.service", text)
    fleet("start", "--block-attempts", "60", path)
    (state,) = fleet.units()
    host = on_shared_hosts.host(state["machine"])
    stored = host.run(["cat", "/run/systemd/system/kept.service"]).stdout
    assert "ExecStartPre=\n" in stored and "-c \\\n    'echo started; \\\n" in stored
    assert host.is_active("kept.service")
    shown = host.systemctl(
        "show", "-p", "ExecStartPre", "-p", "ExecStart", "-p", "After", "kept.service"
    ).stdout
    pre = [line for line in shown.splitlines() if line.startswith("ExecStartPre=")]
    assert len(pre) == 1 and "path=/bin/true" in pre[0], shown
    # The backslash became a space, the next line's blanks were kept: 1 + 1 + 5 spaces.
    assert "argv[]=/bin/sh -c echo started;       exec sleep 1000 ;" in shown, shown
    assert "network.target" in shown and "basic.target" in shown


def test_global_unit_runs_on_every_matching_host(on_shared_hosts: SharedHosts) -> None:
    fleet, started = on_shared_hosts.fleet, on_shared_hosts.hosts  # web, web, db
    unit = fleet.write(
        "mon.service",
        "[Service]\nExecStart=/bin/sleep 1000\n\n"
        "[X-Fleet]\nGlobal=true\nMachineMetadata=role=web\n",
    )
    fleet("start", "--block-attempts", "60", unit)
    until(
        lambda: len([u for u in fleet.units() if u["active"] == "active"]) == 2,
        what="active on both web hosts",
    )
    assert {u["machine"] for u in fleet.units()} == {started[0].machine_id, started[1].machine_id}
    assert started[0].is_active("mon.service") and started[1].is_active("mon.service")
    assert not started[2].is_active("mon.service")


def test_killed_host_units_move(
    hosts: Callable[..., list[Host]], fleet: Fleet, registry: Registry
) -> None:
    started = hosts(2, ttl=3)
    until(lambda: len(registry.list_machines()) == 2, what="2 machines")
    fleet("start", "--block-attempts", "60", fleet.docker_unit("mover.service"))
    (state,) = fleet.units()
    victim = host_of(started, state["machine"])
    survivor = next(h for h in started if h is not victim)
    victim.kill()
    until(
        lambda: (
            [(u["machine"], u["active"]) for u in fleet.units()]
            == [(survivor.machine_id, "active")]
        ),
        timeout=30,
        what="unit active on the survivor",
    )
    assert survivor.is_active("mover.service")
    until(lambda: f"fleetpy-mover--{survivor.machine_id}" in containers(), what="container")


def test_agent_restart_keeps_units_running(
    hosts: Callable[..., list[Host]], fleet: Fleet, registry: Registry
) -> None:
    (host,) = hosts(1, ttl=5)
    until(lambda: len(registry.list_machines()) == 1, what="machine")
    fleet("start", "--block-attempts", "60", fleet.docker_unit("steady.service"))
    pid = host.main_pid("steady.service")
    assert pid > 0
    host.restart_agent()
    until(lambda: "unit_adopted" in host.journal("fleetpy-agent"), what="agent adopted the unit")
    time.sleep(1)
    assert host.main_pid("steady.service") == pid
    # The new agent reports after it adopted the unit (later still under load).
    until(lambda: [u["active"] for u in fleet.units()] == ["active"], what="reported active")
    assert host.main_pid("steady.service") == pid


def test_failures_are_visible(on_shared_hosts: SharedHosts) -> None:
    """A blocking start waits for systemd's start job, as `systemctl start` does (README,
    "What a blocking start waits for"): a start that fails is an error, and a unit that
    started and failed a moment later is launched, its failure shown by list-units."""
    fleet, registry = on_shared_hosts.fleet, on_shared_hosts.registry

    def start(name: str, service: str) -> subprocess.CompletedProcess[str]:
        path = fleet.write(name, f"[Service]\n{service}\n")
        return fleet("start", "--block-attempts", "30", path, check=False)

    # The job fails: a oneshot that fails, an exec whose program cannot run.
    for name, service in (
        ("crash.service", "Type=oneshot\nExecStart=/bin/false"),
        ("missing.service", "Type=exec\nExecStart=/nonexistent/program"),
    ):
        result = start(name, service)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{name} failed on " in result.stderr and "(start job failed)" in result.stderr
    # The job is done: at fork for Type=simple (then /bin/false fails); a oneshot that
    # succeeds, though it is never active.
    for name, service in (
        ("brief.service", "ExecStart=/bin/false"),
        ("once.service", "Type=oneshot\nExecStart=/bin/true"),
    ):
        result = start(name, service)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Unit {name} launched on " in result.stdout
    until(
        lambda: (
            {u["unit"]: u["active"] for u in fleet.units()}
            == {
                "brief.service": "failed",
                "crash.service": "failed",
                "missing.service": "failed",
                "once.service": "inactive",
            }
        ),
        what="the failures reported",
    )
    # a unit file systemd refuses: the message comes from systemd itself
    refused = fleet.write("refused.service", "[Service]\nEnvironment=A=1\n")
    fleet("start", "--no-block", refused)
    until(
        lambda: any(s.message for s in registry.list_states().get("refused.service", {}).values()),
        what="systemd's message reported",
    )
    (state,) = registry.list_states()["refused.service"].values()
    assert state.load == "bad-setting" and "bad unit file setting" in state.message
    assert any(u["unit"] == "refused.service" for u in fleet.units())
    result = fleet("start", "--block-attempts", "30", "refused.service", check=False)
    assert result.returncode == 1 and "refused.service failed on " in result.stderr


def test_etcd_outage_keeps_units_running(
    hosts: Callable[..., list[Host]], fleet: Fleet, registry: Registry, etcd: EtcdServer
) -> None:
    (host,) = hosts(1, ttl=10)
    until(lambda: len(registry.list_machines()) == 1, what="machine")
    fleet(
        "start",
        "--block-attempts",
        "60",
        fleet.write("calm.service", "[Service]\nExecStart=/bin/sleep 1000\n"),
    )
    pid = host.main_pid("calm.service")
    etcd.pause()
    try:
        time.sleep(4)
        assert host.main_pid("calm.service") == pid
    finally:
        etcd.resume()
    until(lambda: [u["active"] for u in fleet.units()] == ["active"], what="state after outage")
    assert host.main_pid("calm.service") == pid


def test_agent_returning_after_its_lease_expired_stops_moved_units(
    hosts: Callable[..., list[Host]], fleet: Fleet, registry: Registry
) -> None:
    started = hosts(2, ttl=3)
    until(lambda: len(registry.list_machines()) == 2, what="2 machines")
    fleet(
        "start",
        "--block-attempts",
        "60",
        fleet.write("roam.service", "[Service]\nExecStart=/bin/sleep 1000\n"),
    )
    (state,) = fleet.units()
    away = host_of(started, state["machine"])
    other = next(h for h in started if h is not away)
    # The agent goes silent (its units keep running) until its lease expires.
    away.systemctl("stop", "fleetpy-agent")
    assert away.is_active("roam.service")
    until(
        lambda: (
            [(u["machine"], u["active"]) for u in fleet.units()] == [(other.machine_id, "active")]
        ),
        what="unit moved to the other host",
    )
    away.systemctl("start", "fleetpy-agent")
    until(lambda: not away.is_active("roam.service"), what="returning agent stops its stale copy")
    until(lambda: len(registry.list_machines()) == 2, what="machine back")
    # The returning agent reported its stale copy when it registered, and reports it gone
    # only once it has removed its unit file (after the stop: later under load).
    until(
        lambda: (
            [(u["machine"], u["active"]) for u in fleet.units()] == [(other.machine_id, "active")]
        ),
        what="only the moved copy listed",
    )


def test_fleets_own_fleetctl_drives_real_hosts_through_the_api(
    on_shared_hosts: SharedHosts, tmp_path: Path
) -> None:
    """fleet's fleetctl v1.0.0 (--driver=API) against `fleetpy api` on a unix socket: the
    unit it starts runs under the systemd of a real host."""
    fleet, started = on_shared_hosts.fleet, on_shared_hosts.hosts
    sock = tmp_path / "api.sock"
    with open(tmp_path / "api.log", "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "fleetpy", "api", "--listen", str(sock)],
            env=fleet.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        until(sock.exists, what="the API socket")
        fleetctl = fleetctl_on(str(sock), tmp_path)
        machines = fleetctl("list-machines", "--full", "--no-legend", "--fields", "machine")
        assert sorted(machines.split()) == sorted(h.machine_id for h in started)
        text = (
            "[Unit]\nDescription=fleetctl on real hosts\n\n[Service]\nExecStart=/bin/sleep 1000\n"
        )
        (tmp_path / "hello.service").write_text(text)
        out = fleetctl("start", "hello.service")  # blocks until a host reports it launched
        assert "Unit hello.service launched on " in out, out
        (line,) = fleetctl(
            "list-units", "--full", "--no-legend", "--fields", "unit,machine,active,sub"
        ).splitlines()
        unit, machine, active, sub = line.split("\t")
        assert (unit, active, sub) == ("hello.service", "active", "running")
        host = host_of(started, machine.split("/")[0])
        assert host.is_active("hello.service")  # systemd on that host runs it
        assert fleetctl("cat", "hello.service").strip() == text.strip()
        assert "Unit hello.service loaded" in fleetctl("stop", "hello.service")
        until(lambda: not host.is_active("hello.service"), what="stopped on the host")
        assert "Destroyed hello.service" in fleetctl("destroy", "hello.service")
        until(lambda: fleetctl("list-units", "--no-legend").strip() == "", what="unit gone")
        until(
            lambda: (
                host.run(
                    ["test", "-e", "/run/systemd/system/hello.service"], check=False
                ).returncode
                != 0
            ),
            what="unit file removed from the host",
        )
    finally:
        server.terminate()
        server.wait(10)
