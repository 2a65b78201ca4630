"""Deploys from git with a real bare repository: a valid push deploys, an invalid one is
rejected and the branch does not move; `git watch` applies a new commit from a path."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.registry import RegistryConfig

from support.git import commit, git
from support.rollout import APP, Cluster
from support.waiting import until


@pytest.fixture
def cluster(registry_config: RegistryConfig) -> Iterator[Cluster]:
    c = Cluster(registry_config)
    yield c
    c.close()


def write_deployment(work: Path, version: str, template: str = APP, where: str = "deploy") -> None:
    """The deployment in `where` inside the repository ("" for its top)."""
    deploy = work / where
    deploy.mkdir(exist_ok=True)
    (deploy / "app.service.j2").write_text(template)
    (deploy / "fleetpy.yaml").write_text(
        f"name: pushed\nvalues: {{version: '{version}', command: /bin/sleep 1000}}\nunits:\n"
        "  - {name: app@.service, template: app.service.j2, instances: 2}\n"
        "rollout: {min_ready: 0, timeout: 20}\n"
    )


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


# Where fleetpy.yaml is in the repository, and the --dir a user would type for it.
LAYOUTS = {
    "subdirectory": ("deploy", ["--dir", "deploy"]),
    "subdirectory-spelled-loosely": ("deploy", ["--dir", "./deploy/"]),
    "top-dot": ("", ["--dir", "."]),
    "top-dot-slash": ("", ["--dir", "./"]),
    "top-by-default": ("", []),
}


@pytest.mark.parametrize("where, dir_args", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_push_deploys_and_an_invalid_push_is_rejected(
    cluster: Cluster,
    etcd: EtcdServer,
    prefix: str,
    repos: tuple[Path, Path],
    where: str,
    dir_args: list[str],
) -> None:
    bare, work = repos
    result = fleetpy(etcd, prefix, "git", "install-hooks", str(bare), *dir_args)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(
        ["Installed", f"{bare}/hooks/post-receive", "Installed", f"{bare}/hooks/pre-receive"]
    )

    write_deployment(work, "1", where=where)
    first = commit(work, "v1")
    pushed = git("push", "-q", "origin", "main", cwd=work)
    assert "applied" in pushed.stderr and "2 added" in pushed.stderr, pushed.stderr
    units = cluster.registry.list_units()
    assert {n: (u.owner, u.origin) for n, u in units.items()} == {
        "app@1.service": ("pushed", first),
        "app@2.service": ("pushed", first),
    }
    until(lambda: len(cluster.active()) == 2, what="pushed units active")

    write_deployment(work, "2", APP.replace("{{ version }}", "{{ version | nope }}"), where)
    commit(work, "broken")
    rejected = git("push", "origin", "main", cwd=work, check=False)
    assert rejected.returncode != 0
    shown = f"{where}/app.service.j2" if where else "app.service.j2"
    assert f"remote: fleetpy: error: {shown}:" in rejected.stderr, rejected.stderr
    assert "No filter named 'nope'" in rejected.stderr and "push rejected" in rejected.stderr
    assert git("--git-dir", str(bare), "rev-parse", "main", cwd=work).stdout.strip() == first
    assert cluster.registry.list_units() == units  # nothing deployed

    write_deployment(work, "3", where=where)
    third = commit(work, "v3")
    pushed = git("push", "-q", "origin", "main", cwd=work)
    assert "2 replaced" in pushed.stderr, pushed.stderr
    record = cluster.registry.get_deployment("pushed")
    assert record is not None and record.commit == third


@pytest.mark.parametrize(
    "where, dir_args, message",
    [
        ("deploy", ["--dir", "nothere"], "commit {commit} has no directory 'nothere'"),
        ("deploy", [], "the top of commit {commit} has no fleetpy.yaml"),
        ("", ["--dir", "deploy"], "commit {commit} has no directory 'deploy'"),
        (
            "deploy",
            ["--dir", "deploy/app.service.j2"],
            "'deploy/app.service.j2' in commit {commit} is not a directory",
        ),
    ],
    ids=["missing", "top-without-deployment", "subdirectory-of-a-top-layout", "a-file"],
)
def test_a_push_without_the_deployment_is_rejected_in_one_line(
    etcd: EtcdServer,
    prefix: str,
    repos: tuple[Path, Path],
    where: str,
    dir_args: list[str],
    message: str,
) -> None:
    bare, work = repos
    assert fleetpy(etcd, prefix, "git", "install-hooks", str(bare), *dir_args).returncode == 0
    write_deployment(work, "1", where=where)
    head = commit(work, "v1")
    rejected = git("push", "origin", "main", cwd=work, check=False)
    assert rejected.returncode != 0 and "Traceback" not in rejected.stderr
    lines = rejected.stderr.splitlines()
    ours = [line.rstrip() for line in lines if line.startswith("remote: ")]  # git pads them
    assert ours == [f"remote: fleetpy: error: {message.format(commit=head[:12])}"]
    assert "pre-receive hook declined" in rejected.stderr
    assert git("--git-dir", str(bare), "branch", "--list", cwd=work).stdout == ""
    assert fleetpy(etcd, prefix, "list-unit-files", "--no-legend").stdout == ""


@pytest.mark.parametrize("directory", ["/srv/deploy", "..", "../elsewhere", "deploy/../.."])
def test_a_dir_outside_the_repository_is_refused_at_install(
    etcd: EtcdServer, prefix: str, repos: tuple[Path, Path], directory: str
) -> None:
    bare, _ = repos
    before = sorted((bare / "hooks").iterdir())
    result = fleetpy(etcd, prefix, "git", "install-hooks", str(bare), "--dir", directory)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"fleetpy: error: --dir {directory!r}")
    assert sorted((bare / "hooks").iterdir()) == before


WATCH_LAYOUTS = {k: LAYOUTS[k] for k in ("subdirectory", "top-dot", "top-by-default")}


@pytest.mark.parametrize("where, dir_args", WATCH_LAYOUTS.values(), ids=WATCH_LAYOUTS.keys())
def test_git_watch_applies_a_new_commit(
    cluster: Cluster,
    etcd: EtcdServer,
    prefix: str,
    repos: tuple[Path, Path],
    tmp_path: Path,
    where: str,
    dir_args: list[str],
) -> None:
    bare, work = repos
    write_deployment(work, "1", where=where)
    head = commit(work, "v1")
    git("push", "-q", "origin", "main", cwd=work)
    args = ("git", "watch", str(bare), *dir_args, "--once", "--workdir", str(tmp_path / "clones"))
    result = fleetpy(etcd, prefix, *args)
    assert result.returncode == 0, result.stderr
    assert "event=git_watch_apply" in result.stderr
    record = cluster.registry.get_deployment("pushed")
    assert record is not None and record.commit == head
    result = fleetpy(etcd, prefix, *args)  # nothing new: nothing applied
    assert result.returncode == 0 and "git_watch_apply" not in result.stderr
    write_deployment(work, "2", where=where)
    head = commit(work, "v2")
    git("push", "-q", "origin", "main", cwd=work)
    result = fleetpy(etcd, prefix, *args)
    assert result.returncode == 0, result.stderr
    assert "plan" not in result.stderr or "2 replaced" in result.stdout + result.stderr
    record = cluster.registry.get_deployment("pushed")
    assert record is not None and record.commit == head


def test_git_watch_of_a_missing_directory_says_so(
    etcd: EtcdServer, prefix: str, repos: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repos
    write_deployment(work, "1", where="")
    head = commit(work, "v1")
    git("push", "-q", "origin", "main", cwd=work)
    args = ("git", "watch", str(bare), "--once", "--workdir", str(tmp_path / "clones"))
    result = fleetpy(etcd, prefix, *args, "--dir", "deploy")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # One log line (after its timestamp) for the error.
    errors = [line.partition(" ")[2] for line in result.stderr.splitlines() if "error" in line]
    missing = f"commit {head[:12]} has no directory 'deploy'"
    assert errors == [f'event=git_watch_error url={bare} error="{missing}"']
    result = fleetpy(etcd, prefix, *args, "--dir", "/srv/deploy")
    assert result.returncode == 1
    assert result.stderr.startswith("fleetpy: error: --dir '/srv/deploy'")
    assert fleetpy(etcd, prefix, "list-unit-files", "--no-legend").stdout == ""
