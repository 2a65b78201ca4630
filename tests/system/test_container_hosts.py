"""Container units on a real host (systemd-nspawn, real systemd, the machine's dockerd):
what docker actually receives from hostile values, and a container started, healthy,
replaced by a rolling update, stopped and removed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support.fleet import containers
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
