"""Deploys from git with a real bare repository: a valid push deploys, an invalid one is
rejected and the branch does not move; `git watch` applies a new commit from a path."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_rollout import APP, Cluster
from waiting import until

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.registry import RegistryConfig

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, **GIT_ENV},
        timeout=120,
    )


@pytest.fixture
def cluster(registry_config: RegistryConfig) -> Iterator[Cluster]:
    c = Cluster(registry_config)
    yield c
    c.close()


def write_deployment(work: Path, version: str, template: str = APP) -> None:
    deploy = work / "deploy"
    deploy.mkdir(exist_ok=True)
    (deploy / "app.service.j2").write_text(template)
    (deploy / "fleetpy.yaml").write_text(
        f"name: pushed\nvalues: {{version: '{version}', command: /bin/sleep 1000}}\nunits:\n"
        "  - {name: app@.service, template: app.service.j2, instances: 2}\n"
        "rollout: {min_ready: 0, timeout: 20}\n"
    )


def commit(work: Path, message: str) -> str:
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    bare, work = tmp_path / "repo.git", tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    return bare, work


def fleetpy(etcd: EtcdServer, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetpy",
            "--endpoint",
            etcd.endpoint,
            "--etcd-prefix",
            prefix,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_push_deploys_and_an_invalid_push_is_rejected(
    cluster: Cluster, etcd: EtcdServer, prefix: str, repos: tuple[Path, Path]
) -> None:
    bare, work = repos
    result = fleetpy(etcd, prefix, "git", "install-hooks", str(bare), "--dir", "deploy")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(
        ["Installed", f"{bare}/hooks/post-receive", "Installed", f"{bare}/hooks/pre-receive"]
    )

    write_deployment(work, "1")
    first = commit(work, "v1")
    pushed = git("push", "-q", "origin", "main", cwd=work)
    assert "applied" in pushed.stderr and "2 added" in pushed.stderr, pushed.stderr
    units = cluster.registry.list_units()
    assert {n: (u.owner, u.origin) for n, u in units.items()} == {
        "app@1.service": ("pushed", first),
        "app@2.service": ("pushed", first),
    }
    until(lambda: len(cluster.active()) == 2, what="pushed units active")

    write_deployment(work, "2", APP.replace("{{ version }}", "{{ version | nope }}"))
    commit(work, "broken")
    rejected = git("push", "origin", "main", cwd=work, check=False)
    assert rejected.returncode != 0
    assert "remote: fleetpy: error: deploy/app.service.j2:" in rejected.stderr, rejected.stderr
    assert "No filter named 'nope'" in rejected.stderr and "push rejected" in rejected.stderr
    assert git("--git-dir", str(bare), "rev-parse", "main", cwd=work).stdout.strip() == first
    assert cluster.registry.list_units() == units  # nothing deployed

    write_deployment(work, "3")
    third = commit(work, "v3")
    pushed = git("push", "-q", "origin", "main", cwd=work)
    assert "2 replaced" in pushed.stderr, pushed.stderr
    record = cluster.registry.get_deployment("pushed")
    assert record is not None and record.commit == third


def test_git_watch_applies_a_new_commit(
    cluster: Cluster, etcd: EtcdServer, prefix: str, repos: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repos
    write_deployment(work, "1")
    head = commit(work, "v1")
    git("push", "-q", "origin", "main", cwd=work)
    args = (
        "git",
        "watch",
        str(bare),
        "--dir",
        "deploy",
        "--once",
        "--workdir",
        str(tmp_path / "clones"),
    )
    result = fleetpy(etcd, prefix, *args)
    assert result.returncode == 0, result.stderr
    assert "event=git_watch_apply" in result.stderr
    record = cluster.registry.get_deployment("pushed")
    assert record is not None and record.commit == head
    result = fleetpy(etcd, prefix, *args)  # nothing new: nothing applied
    assert result.returncode == 0 and "git_watch_apply" not in result.stderr
    write_deployment(work, "2")
    head = commit(work, "v2")
    git("push", "-q", "origin", "main", cwd=work)
    result = fleetpy(etcd, prefix, *args)
    assert result.returncode == 0, result.stderr
    assert "plan" not in result.stderr or "2 replaced" in result.stdout + result.stderr
    record = cluster.registry.get_deployment("pushed")
    assert record is not None and record.commit == head
