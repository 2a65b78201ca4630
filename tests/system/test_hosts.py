"""The host harness (fleetpy/cluster/nspawn.py): real systemd hosts on this machine."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import AGENT_UNIT, Host

from support.hosts_fixtures import HostFactory
from support.waiting import until

pytestmark = pytest.mark.hosts


def docker_names(all_containers: bool = False) -> list[str]:
    argv = ["docker", "ps", "--format", "{{.Names}}"] + (["-a"] if all_containers else [])
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()


def start_probe(host: Host, image: str) -> str:
    name = f"probe-{host.name}"
    host.run(
        [
            "systemd-run",
            "--unit=probe",
            "/usr/bin/docker",
            "run",
            "--rm",
            "--name",
            name,
            image,
            "sleep",
            "30",
        ]
    )
    until(lambda: name in docker_names(), 30, f"container {name}", interval=0.2)
    return name


def test_hosts_boot_with_their_own_identity_and_config(
    hosts: HostFactory, etcd: EtcdServer, prefix: str
) -> None:
    a, b = hosts(2, metadata=[{"role": "web"}, {"role": "db"}], ttl=5)
    assert a.machine_id != b.machine_id
    for host, role in ((a, "web"), (b, "db")):
        assert host.run(["systemctl", "is-system-running"], check=False).stdout.strip() in (
            "running",
            "degraded",
        )
        assert host.run(["cat", "/etc/machine-id"]).stdout.strip() == host.machine_id
        assert host.run(["hostname"]).stdout.strip() == host.name
        config = yaml.safe_load(host.run(["cat", "/etc/fleetpy/agent.yaml"]).stdout)
        assert config["endpoint"] == etcd.endpoint
        assert config["etcd_prefix"] == prefix
        assert config["metadata"] == {"role": role}
        assert config["ttl"] == 5


def test_agent_unit_enabled_and_runtime_importable(hosts: HostFactory) -> None:
    (host,) = hosts(1)
    assert host.systemctl("is-enabled", AGENT_UNIT).stdout.strip() == "enabled"
    assert (
        "fleetpy-agent --config /etc/fleetpy/agent.yaml"
        in host.run(["cat", f"/etc/systemd/system/{AGENT_UNIT}"]).stdout
    )
    # fleetpy comes from the bound checkout, its deps from the venv, D-Bus and
    # GLib from Debian: everything the agent imports.
    imported = host.run(
        [
            "/opt/fleetpy/venv/bin/python",
            "-c",
            "import dbus, gi, yaml, jinja2, grpc, pyetcd, fleetpy.unitfile.unit; print(fleetpy.unitfile.unit.__file__)",
        ]
    )
    assert imported.stdout.strip() == "/opt/fleetpy/src/fleetpy/unitfile/unit.py"
    for launcher in ("fleetpy", "fleetpy-agent"):
        assert (
            host.run(["test", "-x", f"/opt/fleetpy/venv/bin/{launcher}"], check=False).returncode
            == 0
        )
    # The checkout is bound read-only: a host can never change the source.
    assert host.run(["touch", "/opt/fleetpy/src/fleetpy/x"], check=False).returncode != 0


def test_docker_unit_inside_each_host(hosts: HostFactory, host_docker: str) -> None:
    booted = hosts(2)
    for host in booted:
        start_probe(host, host_docker)
        assert host.is_active("probe")
        assert host.main_pid("probe") > 0


def test_kill_ends_every_process_of_the_host_only(hosts: HostFactory, host_docker: str) -> None:
    victim, survivor = hosts(2)
    container = start_probe(victim, host_docker)
    assert victim.init_pid in victim.processes()

    victim.kill()

    assert not victim.alive
    assert victim.processes() == []
    assert container not in docker_names(
        all_containers=True
    )  # a dead machine's containers are dead
    assert survivor.run(["systemctl", "is-system-running"], check=False).stdout.strip() in (
        "running",
        "degraded",
    )


def test_stop_powers_off_cleanly(hosts: HostFactory) -> None:
    (host,) = hosts(1)
    host.stop()
    assert not host.alive
    assert host.process.returncode == 0
    assert host.processes() == []
    assert "Powering off." in Path(host.console_log).read_text(errors="replace")


def test_a_reboot_from_inside_boots_the_host_again_a_poweroff_from_inside_ends_it(
    hosts: HostFactory,
) -> None:
    """The guest's own `systemctl reboot` (nspawn exits 133): the host boots again, the
    same machine, and Host follows it into its new boot; its own `systemctl poweroff`
    ends it, as under systemd-nspawn@.service."""
    (host,) = hosts(1)
    first = host.init_pid
    host.systemctl("reboot")
    until(lambda: host.follow() and host.init_pid != first, 60, "the host booted again")
    host.wait_booted()
    assert host.run(["cat", "/etc/machine-id"]).stdout.strip() == host.machine_id
    assert host.init_pid in host.processes()
    assert "Rebooting" in Path(host.console_log).read_text(errors="replace")

    host.systemctl("poweroff")
    host.process.wait(60)
    assert (host.alive, host.process.returncode) == (False, 0)
    time.sleep(2)  # nothing boots it again
    assert not host.follow()
