"""The example deployment end to end on real hosts: pushed to a bare repository, applied
by its hook, then a push of a new image tag replaces every web instance one at a time,
each container running the new image, the unit names unchanged in systemctl. The
repository holds only this deployment, at its top (hooks installed without --dir); the
layout with the deployment in a subdirectory is tests/system/test_gitops.py's too."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fleetpy.cluster.nspawn import Host
from fleetpy.registry import Registry

from support.fleet import Fleet, containers
from support.git import commit, git
from support.hosts_fixtures import HostFactory
from support.paths import ROOT
from support.waiting import until

pytestmark = pytest.mark.hosts


def image_of(container: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.Config.Image}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_push_of_a_new_image_rolls_every_web_instance(
    hosts: HostFactory,
    fleet: Fleet,
    registry: Registry,
    host_docker: str,
    tmp_path: Path,
) -> None:
    started: list[Host] = hosts(3, metadata=[{"rack": "a"}, {"rack": "b"}, {"rack": "c"}], ttl=5)
    until(lambda: len(registry.list_machines()) == 3, what="3 machines")
    subprocess.run(["docker", "tag", host_docker, "local/busybox:v2"], check=True)
    bare, work = tmp_path / "units.git", tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    shutil.copytree(ROOT / "units", work, dirs_exist_ok=True)
    yaml_path = work / "fleetpy.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("min_ready: 5", "min_ready: 2"))
    fleet("git", "install-hooks", str(bare))
    commit(work, "v1")
    pushed = git("push", "-q", "origin", "main", cwd=work)
    assert "7 added" in pushed.stderr, pushed.stderr
    web = {f"web@{i}.service" for i in (1, 2, 3)}
    states = registry.list_states()
    placed = {name: next(iter(states[name])) for name in web}
    names = {name: f"fleetpy-web-{name[4]}-{machine}" for name, machine in placed.items()}
    until(lambda: set(names.values()) <= set(containers()), what="3 web containers")
    assert {image_of(c) for c in names.values()} == {host_docker}
    pids = {
        name: next(h for h in started if h.machine_id == placed[name]).main_pid(name)
        for name in web
    }

    yaml_path.write_text(yaml_path.read_text().replace("local/busybox:latest", "local/busybox:v2"))
    commit(work, "v2: new image")
    pushed = git("push", "-q", "origin", "main", cwd=work)
    assert "3 replaced" in pushed.stderr, pushed.stderr
    steps = re.findall(r"replace \[(\d)/3\]: (web@\d\.service)", pushed.stderr)
    assert [s[0] for s in steps] == ["0", "1", "2"]  # one at a time
    until(
        lambda: (
            {image_of(c) for c in names.values() if c in containers()} == {"local/busybox:v2"}
            and set(names.values()) <= set(containers())
        ),
        what="every web container on the new image",
    )
    for name in web:
        host = next(h for h in started if h.machine_id == placed[name])
        assert host.is_active(name)  # the same name, on the same host
        assert host.main_pid(name) != pids[name]
        status = host.systemctl("status", name, check=False).stdout
        assert f"{name} - example web server" in status
    # Each version's write is in the unit's audit trail ([17] item 4), with its commit.
    for name in web:
        trail, record = registry.unit_history(name), registry.get_unit(name)
        assert trail is not None and record is not None
        assert [e.verb for e in trail.entries] == ["start", "replace"]
        assert len({e.origin for e in trail.entries}) == 2
        assert not trail.unrecorded(record.revision)
