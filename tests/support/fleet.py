"""The operator's side of the real-host tests: the fleetpy CLI as a process and an engine
(the `fleet` fixture), and the containers the machine's dockerd runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.unitfile.template import render

from support.paths import UNITS


def run_cli(
    argv: list[str], env: dict[str, str], workdir: Path, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """A fleetpy command (ARGV: an interpreter's `-m fleetpy ...`) run to its end."""
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=workdir
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def cli_env(endpoint: str, prefix: str) -> dict[str, str]:
    """The environment of a fleetpy command on etcd ENDPOINT and PREFIX (none of the
    test run's own FLEETPY_ settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
    env.update(FLEETPY_ENDPOINT=endpoint, FLEETPY_ETCD_PREFIX=prefix)
    return env


class Fleet:
    """The operator's side: the fleetpy CLI and an engine, outside the hosts."""

    def __init__(self, etcd: EtcdServer, prefix: str, workdir: Path) -> None:
        self.env = cli_env(etcd.endpoint, prefix)
        self.workdir = workdir
        with open(workdir / "engine.log", "ab") as log:  # the engine keeps its own copy
            self.engine = subprocess.Popen(
                [sys.executable, "-m", "fleetpy", "engine", "--lease-ttl", "3"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli([sys.executable, "-m", "fleetpy", *args], self.env, self.workdir, check)

    def units(self) -> list[dict[str, str]]:
        return json.loads(self("list-units", "-o", "json").stdout)  # type: ignore[no-any-return]

    def write(self, name: str, text: str) -> str:
        path = self.workdir / name
        path.write_text(text)
        return str(path)

    def docker_unit(self, name: str, **values: object) -> str:
        template = UNITS / "docker-service.service.j2"
        values.setdefault("image", "local/busybox:latest")
        values.setdefault("command", ["sleep", "1000"])
        values.setdefault("name", name.split("@")[0].split(".")[0])
        return self.write(name, render(template, values))

    def close(self) -> None:
        self.engine.kill()
        self.engine.wait()


@pytest.fixture
def fleet(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(etcd, prefix, tmp_path)
    yield f
    f.close()


def containers() -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()
