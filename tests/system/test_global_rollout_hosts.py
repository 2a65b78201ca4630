"""A global container unit with a health check rolled on real hosts: `fleetpy apply` of a
new version replaces it one machine at a time, each machine's new container healthy (its
unit active) before the next machine's old one is stopped; then `fleetpy restart` does
the same without a new version."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleetpy.cluster.nspawn import Host
from fleetpy.registry import Registry

from support.fleet import Fleet, containers
from support.hosts_fixtures import HostFactory
from support.waiting import until

pytestmark = pytest.mark.hosts

BOX = """\
[Unit]
Description=health-checked global box {{ version | systemd_value }}

[Container]
Image={{ image | systemd_value }}
Exec=sh -c "sleep 2; touch /tmp/ok; exec sleep 1000"
Environment=VERSION={{ version | systemd_value }}
HealthCmd=test -e /tmp/ok
HealthInterval=1s
StopTimeout=2

[Service]
Restart=always

[X-Fleet]
Global=true
"""


def inspect(container: str) -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def monotonic(host: Host, prop: str) -> int:
    """A systemd timestamp of box.service on HOST, in the machine's CLOCK_MONOTONIC (the
    hosts share this machine's kernel, so the hosts' figures compare)."""
    return int(host.show("box.service", prop))


def test_a_global_container_rolls_host_by_host_each_healthy_before_the_next(
    hosts: HostFactory, fleet: Fleet, registry: Registry, tmp_path: Path
) -> None:
    started = sorted(hosts(3, ttl=5), key=lambda h: h.machine_id)
    until(lambda: len(registry.list_machines()) == 3, what="3 machines")
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "box.service.j2").write_text(BOX)

    def apply(version: str) -> subprocess.CompletedProcess[str]:
        (deploy / "fleetpy.yaml").write_text(
            "name: boxes\nvalues: {image: 'local/busybox:latest'}\n"
            "units:\n  - name: box.service\n    template: box.service.j2\n"
            f"    values: {{version: {version}}}\n"
            "rollout: {max_unavailable: 1, min_ready: 1, timeout: 90}\n"
        )
        return fleet("apply", str(deploy))

    def versions() -> list[str]:
        names = [f"fleetpy-box-{h.machine_id}" for h in started]
        running = set(containers())
        return [
            next(e for e in inspect(n)["Config"]["Env"] if e.startswith("VERSION="))
            if n in running
            else "none"
            for n in names
        ]

    apply("v1")
    until(lambda: all(h.is_active("box.service") for h in started), what="box active everywhere")
    until(lambda: versions() == ["VERSION=v1"] * 3, what="v1 containers")

    result = apply("v2")
    steps = re.findall(r"roll \[(\d)/3\]: box\.service \(machine (\S+)\)", result.stderr)
    assert steps == [(str(i), h.machine_id[:8]) for i, h in enumerate(started)], result.stderr
    until(lambda: versions() == ["VERSION=v2"] * 3, what="v2 containers")
    assert all(h.is_active("box.service") for h in started)
    for host in started:
        assert inspect(f"fleetpy-box-{host.machine_id}")["State"]["Health"]["Status"] == "healthy"
    # One at a time: each host's old box stopped only after the previous host's new box
    # was active, i.e. healthy (the unit's start waits for docker's health check).
    for before, after in itertools.pairwise(started):
        assert monotonic(after, "InactiveEnterTimestampMonotonic") > monotonic(
            before, "ActiveEnterTimestampMonotonic"
        )

    pids = {h.machine_id: h.main_pid("box.service") for h in started}
    result = fleet("restart", "box.service", "--max-unavailable", "2")
    assert result.stdout.splitlines() == ["Restarted box.service"]
    assert len(re.findall(r"^restart \[\d/3\]: box\.service", result.stderr, re.M)) == 2
    assert all(h.is_active("box.service") for h in started)
    assert all(h.main_pid("box.service") != pids[h.machine_id] for h in started)
    # The third host was stopped only after the first two were active again.
    assert monotonic(started[2], "InactiveEnterTimestampMonotonic") > max(
        monotonic(h, "ActiveEnterTimestampMonotonic") for h in started[:2]
    )
