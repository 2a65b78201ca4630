"""Container units on a real host (systemd-nspawn, real systemd, the machine's dockerd):
what docker actually receives from hostile values, a container started, healthy,
replaced by a rolling update, stopped and removed, and its health over time: restarted in
place when it turns unhealthy (also found so by an agent that was down), or only reported
with HealthOnFailure=none."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleetpy.cluster.nspawn import AGENT_UNIT

from support.fleet import Fleet, containers
from support.hosts_fixtures import SharedHosts
from support.waiting import until

pytestmark = pytest.mark.hosts
SHARED_HOSTS: tuple[dict[str, str], ...] = ({},)  # one host for both tests (on_shared_hosts)

# Each value must reach docker unchanged: no systemd specifier, variable, command
# separator or shell syntax may act on it.
CORPUS = [
    "a b",
    '"',
    "'",
    "$HOME",
    "${HOME}",
    "$$",
    "%n",
    "%%",
    ";",
    "a ; b",
    "\\",
    "x\\",
    "line\nbreak",
    "tab\there",
    "$(id)",
    "`id`",
    "&& rm -rf /",
]


def inspect(container: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def word(value: str) -> str:
    """A value as one quoted word of a [Container] list key (Exec=, Environment=, ...)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'


def test_hostile_values_reach_docker_unchanged(on_shared_hosts: SharedHosts) -> None:
    fleet, (host,) = on_shared_hosts.fleet, on_shared_hosts.hosts
    raw = "a b\"'$HOME${HOME}%n%%;\\x"  # a single-value key holds one line, as written
    text = "\n".join(
        [
            "[Container]",
            "Image=local/busybox:latest",
            "Exec=sh -c 'exec sleep 1000' " + " ".join(word(v) for v in CORPUS),
            *(f"Environment=E{i}={word(v)}" for i, v in enumerate(CORPUS)),
            *(f"Label=l{i}={word(v)}" for i, v in enumerate(CORPUS)),
            f"WorkingDir=/w {raw}",
            # docker hands HealthCmd= to the container's shell: a comment keeps it valid.
            f"HealthCmd=true # {raw}",
            "HealthInterval=1s",
            "StopTimeout=2",
        ]
    )
    path = fleet.write("inj.service", text + "\n")
    fleet("start", "--block-attempts", "60", path)
    name = f"fleetpy-inj-{host.machine_id}"
    until(lambda: name in containers(), what="container running")
    got = inspect(name)
    assert got["Config"]["Cmd"] == ["sh", "-c", "exec sleep 1000", *CORPUS]
    env = got["Config"]["Env"]
    for i, value in enumerate(CORPUS):
        assert f"E{i}={value}" in env
        assert got["Config"]["Labels"][f"l{i}"] == value
    assert got["Config"]["WorkingDir"] == f"/w {raw}"
    assert got["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", f"true # {raw}"]
    assert host.is_active("inj.service")
    fleet("destroy", "inj.service")
    until(lambda: name not in containers(), what="container removed")


BOX = """\
[Unit]
Description=health-checked box {{ version | systemd_value }}

[Container]
Image={{ image | systemd_value }}
Exec=sh -c "sleep 2; touch /tmp/ok; exec sleep 1000"
Environment=VERSION={{ version | systemd_value }}
HealthCmd=test -e /tmp/ok
HealthInterval=1s
StopTimeout=2

[Service]
Restart=always
"""


def test_container_healthy_rolled_stopped_removed(
    on_shared_hosts: SharedHosts, tmp_path: Path
) -> None:
    fleet, (host,) = on_shared_hosts.fleet, on_shared_hosts.hosts
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "box.service.j2").write_text(BOX)

    def apply(version: str) -> subprocess.CompletedProcess[str]:
        (deploy / "fleetpy.yaml").write_text(
            "name: boxes\nvalues: {image: 'local/busybox:latest'}\n"
            f"units:\n  - name: box.service\n    template: box.service.j2\n"
            f"    values: {{version: {version}}}\n"
            "rollout: {max_unavailable: 1, min_ready: 1, timeout: 90}\n"
        )
        return fleet("apply", str(deploy))

    apply("v1")
    name = f"fleetpy-box-{host.machine_id}"
    until(lambda: host.is_active("box.service"), what="box active")
    # Active only once healthy: the health wait held the unit in "activating".
    first = inspect(name)
    assert first["State"]["Health"]["Status"] == "healthy"
    assert "VERSION=v1" in first["Config"]["Env"]
    expanded = fleet("cat", "--expanded", "box.service").stdout
    assert "ExecStartPost=/bin/sh -c" in expanded and "[X-Container]" in expanded
    assert "ExecStart=" not in fleet("cat", "box.service").stdout

    result = apply("v2")
    assert "replace" in result.stdout + result.stderr
    until(lambda: "VERSION=v2" in inspect(name)["Config"]["Env"], what="new container")
    until(lambda: host.is_active("box.service"), what="box active again")
    second = inspect(name)
    assert second["Id"] != first["Id"]
    assert second["State"]["Health"]["Status"] == "healthy"

    fleet("stop", "box.service")
    until(lambda: name not in containers(), what="container stopped and removed (--rm)")
    assert not host.is_active("box.service")
    fleet("destroy", "box.service")
    until(lambda: fleet.units() == [], what="unit gone")


# Healthy once /tmp/ok exists; `docker exec rm` makes it unhealthy after its start.
TURNS = """\
[Container]
Image=local/busybox:latest
Exec=sh -c "touch /tmp/ok; exec sleep 1000"
HealthCmd=test -e /tmp/ok
HealthInterval=1s
StopTimeout=2
"""


def container_id(name: str) -> str | None:
    """The container's id; None while there is none (between a stop and the next run)."""
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True
    )
    return out.stdout.strip() if out.returncode == 0 else None


def health(fleet: Fleet, unit: str) -> str | None:
    """UNIT's health as `list-units` shows it (None: not listed active)."""
    rows = [r for r in fleet.units() if r["unit"] == unit and r["active"] == "active"]
    return rows[0]["health"] if rows else None


def test_container_turning_unhealthy_is_restarted_in_place(on_shared_hosts: SharedHosts) -> None:
    fleet, (host,) = on_shared_hosts.fleet, on_shared_hosts.hosts
    fleet("start", "--block-attempts", "60", fleet.write("turns.service", TURNS))
    name = f"fleetpy-turns-{host.machine_id}"
    until(lambda: health(fleet, "turns.service") == "healthy", what="health listed")
    first = inspect(name)["Id"]
    subprocess.run(["docker", "exec", name, "rm", "/tmp/ok"], check=True)
    # docker marks it unhealthy after 3 failed checks; the agent restarts the unit in place
    # (systemd's RestartUnit: a new container, on the same host).
    until(lambda: container_id(name) not in (first, None), timeout=60, what="container replaced")
    until(lambda: health(fleet, "turns.service") == "healthy", what="healthy again")
    assert host.is_active("turns.service")
    assert "unit_unhealthy_restart" in host.journal(lines=2000)
    assert [r["machine"] for r in fleet.units()] == [host.machine_id]


def test_unhealthy_container_with_health_on_failure_none_is_only_reported(
    on_shared_hosts: SharedHosts,
) -> None:
    fleet, (host,) = on_shared_hosts.fleet, on_shared_hosts.hosts
    text = TURNS + "HealthOnFailure=none\n"
    fleet("start", "--block-attempts", "60", fleet.write("watched.service", text))
    name = f"fleetpy-watched-{host.machine_id}"
    until(lambda: health(fleet, "watched.service") == "healthy", what="health listed")
    first = inspect(name)["Id"]
    subprocess.run(["docker", "exec", name, "rm", "/tmp/ok"], check=True)
    until(lambda: health(fleet, "watched.service") == "unhealthy", timeout=60, what="unhealthy")
    table = fleet("list-units", "--no-legend", "--fields", "unit,active,health").stdout.split()
    assert table == ["watched.service", "active", "unhealthy"]
    assert inspect(name)["Id"] == first and host.is_active("watched.service")


def test_container_unhealthy_while_its_agent_was_down_is_restarted_when_it_is_back(
    on_shared_hosts: SharedHosts,
) -> None:
    """No event is missed for good: the agent, back, reads the container's health
    (docker inspect) and acts on what it finds."""
    fleet, (host,) = on_shared_hosts.fleet, on_shared_hosts.hosts
    fleet("start", "--block-attempts", "60", fleet.write("late.service", TURNS))
    name = f"fleetpy-late-{host.machine_id}"
    until(lambda: health(fleet, "late.service") == "healthy", what="health listed")
    first = container_id(name)
    host.systemctl("stop", AGENT_UNIT)
    try:
        subprocess.run(["docker", "exec", name, "rm", "/tmp/ok"], check=True)
        # Unhealthy at 3 failed checks; 3 more (3 s) and its event is older than the
        # second `docker events --since` replays: only the inspect can tell the agent.
        until(
            lambda: inspect(name)["State"]["Health"]["FailingStreak"] >= 6,
            timeout=60,
            what="docker marks it unhealthy, no agent running",
        )
        assert inspect(name)["State"]["Health"]["Status"] == "unhealthy"
        assert container_id(name) == first and host.is_active("late.service")
    finally:
        host.systemctl("start", AGENT_UNIT)
    until(lambda: container_id(name) not in (first, None), timeout=60, what="container replaced")
    until(lambda: health(fleet, "late.service") == "healthy", what="healthy again")
    assert [r["machine"] for r in fleet.units()] == [host.machine_id]
