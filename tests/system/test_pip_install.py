"""fleetpy the way a pip user gets it: a wheel built from the checkout's files, installed
into a fresh venv in a temp dir, and that venv's own `fleetpy`, run from there, making a
local cluster, starting a unit on it, serving the dashboard and removing the cluster.
Nothing can come from the checkout: the wheel is built from a copy of its files, and
every command runs with the venv's interpreter, in the temp dir, without PYTHONPATH."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import free_port
from fleetpy.cluster.local import STATE_ROOT

from support.cluster_harness import TEST_CLUSTERS, cli, leftovers
from support.hosts_fixtures import require_host_prerequisites
from support.paths import ROOT
from support.waiting import until

pytestmark = pytest.mark.hosts
NAME = "tpip"
SUBNET = TEST_CLUSTERS[NAME]
SHIPPED = ("fleetpy/share/provision.sh", "fleetpy/share/fleetpy-agent.service")


@dataclass(frozen=True)
class Venv:
    path: Path
    workdir: Path  # where its commands run: outside the checkout

    def fleetpy(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        return cli(
            *args,
            env={**self.env, **(env or {})},
            timeout=timeout,
            program=(str(self.path / "bin" / "fleetpy"),),
            cwd=self.workdir,
        )

    @property
    def env(self) -> dict[str, str]:
        """The caller's environment without anything pointing at the checkout or its venv."""
        ours = str(Path(sys.executable).parent)
        path = [p for p in os.environ["PATH"].split(os.pathsep) if p != ours]
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSAFEPATH")
        }
        env["PATH"] = os.pathsep.join([str(self.path / "bin"), *path])
        return env


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{argv}: {result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("pip-user")
    # The files a clone has (tracked, or new and not ignored), as they are now.
    source = base / "source"
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = base / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        base,
    )
    (wheel,) = dist.glob("fleetpy-*.whl")
    assert set(SHIPPED) <= set(zipfile.ZipFile(wheel).namelist())

    venv = Venv(base / "venv", base)
    _run([sys.executable, "-m", "venv", str(venv.path)], base)
    _run([str(venv.path / "bin" / "pip"), "install", "-q", str(wheel)], base, venv.env)
    where = _run(
        [str(venv.path / "bin" / "python"), "-c", "import fleetpy; print(fleetpy.__file__)"],
        base,
        venv.env,
    )
    assert Path(where.strip()).is_relative_to(venv.path), where
    return venv


def test_a_pip_user_gets_the_agents_unit_and_config(venv: Venv) -> None:
    unit = venv.fleetpy("agent-files", "unit")
    assert unit.returncode == 0, unit.stderr
    agent = venv.path / "bin" / "fleetpy-agent"
    assert f"\nExecStart={agent} --config /etc/fleetpy/agent.yaml\n" in unit.stdout
    assert "\n[Install]\nWantedBy=multi-user.target\n" in unit.stdout
    example = venv.fleetpy("agent-files", "config")
    assert example.returncode == 0, example.stderr
    assert "\nendpoint: " in example.stdout and "\nmetadata:\n" in example.stdout


@pytest.fixture
def cluster(venv: Venv) -> Iterator[dict[str, str]]:
    """`cluster up` by the venv's fleetpy; yields the settings of its env file."""
    require_host_prerequisites()
    if (STATE_ROOT / NAME).exists():
        venv.fleetpy("cluster", "down", "--name", NAME)
    try:
        up = venv.fleetpy("cluster", "up", "--name", NAME, "--hosts", "1", "--subnet", SUBNET)
        assert up.returncode == 0, up.stderr[-3000:]
        env_file = STATE_ROOT / NAME / "env"
        assert f". {env_file}" in up.stdout
        lines = env_file.read_text().splitlines()
        yield dict(line.removeprefix("export ").split("=", 1) for line in lines)
    finally:
        if (STATE_ROOT / NAME).exists():
            venv.fleetpy("cluster", "down", "--name", NAME)


def test_a_pip_installed_fleetpy_runs_a_cluster(venv: Venv, cluster: dict[str, str]) -> None:
    unit = venv.workdir / "hello-pip.service"
    unit.write_text("[Unit]\nDescription=from a pip install\n[Service]\nExecStart=/bin/sleep 1d\n")
    started = venv.fleetpy("start", str(unit), env=cluster)
    assert started.returncode == 0, started.stderr
    units = json.loads(venv.fleetpy("list-units", "-o", "json", env=cluster).stdout)
    assert [(u["unit"], u["active"]) for u in units] == [("hello-pip.service", "active")]

    port = free_port()
    api = subprocess.Popen(
        [str(venv.path / "bin" / "fleetpy"), "api", "--listen", f"127.0.0.1:{port}", "--insecure"],
        cwd=venv.workdir,
        env={**venv.env, **cluster},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def get(path: str) -> tuple[int, str]:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                return response.status, response.read().decode()
            finally:
                connection.close()

        def answers() -> bool:
            assert api.poll() is None, api.communicate()[1]
            try:
                return get("/")[0] == 200
            except OSError:
                return False

        until(answers, timeout=30, what="fleetpy api to answer")
        status, page = get("/")
        assert status == 200 and "<html" in page.lower()
        assert get("/assets/dashboard.js")[0] == 200  # package data of fleetpy.api
        status, data = get("/dashboard.json")
        assert status == 200 and "hello-pip.service" in data
    finally:
        api.terminate()
        api.wait(timeout=30)

    down = venv.fleetpy("cluster", "down", "--name", NAME)
    assert down.returncode == 0, down.stderr
    assert leftovers(NAME) == []
