"""pytest fixtures for real hosts (systemd-nspawn): host_rootfs, host_docker, hosts (fresh
hosts for one test) and on_shared_hosts (hosts booted once for a module), registered by
tests/conftest.py (pytest_plugins).

`hosts` needs the fixtures `etcd` (with `.endpoint`, "http://127.0.0.1:23790")
and `prefix` (the test's etcd key prefix; the hosts' agents use it, so a
registry built from it sees their machines). Without root or the tools
these fixtures skip, except on CI (CI=true), where a missing prerequisite
fails the test.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import (
    Host,
    HostPool,
    ensure_busybox_image,
    ensure_dockerd,
    ensure_rootfs,
)
from fleetpy.config import AgentSettings
from fleetpy.registry import Registry, RegistryConfig

from support.fleet import Fleet
from support.waiting import until

HOST_TOOLS = ("systemd-nspawn", "debootstrap", "nsenter", "docker", "dockerd", "busybox", "setsid")

HostFactory = Callable[..., list[Host]]

_pools = itertools.count(1)


def pool_name_prefix() -> str:
    """Host names for a new pool, unique on this machine while its hosts live: this process's
    pid (pytest-xdist workers, and other pytest runs beside this one, are other processes)
    and a count of the pools it made. Host names reach docker's container names and nspawn's
    machine names, both machine-wide."""
    return f"fp{os.getpid():x}p{next(_pools)}-h"


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_host_prerequisites() -> None:
    """Skip (fail on CI) unless this machine can run hosts."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append("missing " + " ".join(missing))
    if problems:
        reason = (
            "real hosts need root and systemd-container, debootstrap, docker.io, busybox-static: "
            + "; ".join(problems)
        )
        if on_ci():
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def host_rootfs() -> Path:
    """The cached, provisioned rootfs (minutes the first time, then instant)."""
    require_host_prerequisites()
    return ensure_rootfs()


@pytest.fixture(scope="session")
def host_docker() -> str:
    """A running dockerd and the local busybox image; returns the image tag."""
    require_host_prerequisites()
    ensure_dockerd()
    return ensure_busybox_image()


@pytest.fixture
def hosts(
    host_rootfs: Path,
    host_docker: str,
    etcd: EtcdServer,
    prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostFactory]:
    """Factory: hosts(n, metadata=None, **launch_host options) -> list[Host].

    metadata is one mapping for every host or a list with one per host;
    etcd_prefix defaults to the test's `prefix`. All
    hosts are killed at teardown, also when the test failed; their console
    logs stay under pytest's tmp dir.
    """
    pool = HostPool(
        rootfs=host_rootfs,
        state_root=tmp_path_factory.mktemp("hosts"),
        etcd_endpoints=[etcd.endpoint],
        name_prefix=pool_name_prefix(),
    )

    def start(
        n: int = 1,
        *,
        metadata: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
        **options: Any,
    ) -> list[Host]:
        options.setdefault("etcd_prefix", prefix)
        return pool.start(n, metadata=metadata, **options)

    try:
        yield start
    finally:
        pool.close()


def unit_dir(host: Host) -> str:
    """Where HOST's agent writes its unit files (its agent.yaml's unit_dir, or the default)."""
    config = yaml.safe_load(host.config_path.read_text()) or {}
    return str(config.get("unit_dir") or AgentSettings().unit_dir)


@dataclass(frozen=True)
class SharedHosts:
    """Hosts booted once for a module, in an etcd prefix of the module's own, with an
    engine and the operator's CLI (fleet) and a registry on that prefix."""

    hosts: list[Host]
    fleet: Fleet
    registry: Registry

    def host(self, machine: str) -> Host:
        return next(h for h in self.hosts if h.machine_id == machine)

    def ready(self) -> None:
        """Every host's agent registered (again, after an etcd outage of another test)."""
        until(
            lambda: len(self.registry.list_machines()) == len(self.hosts),
            timeout=60,
            what=f"{len(self.hosts)} shared hosts' machines",
        )

    def clean(self) -> None:
        """Destroy every unit; wait until no host has a unit file of fleetpy's left (the
        agent removes it once the unit's stop job is done)."""
        units = sorted(self.registry.list_units())
        if units:
            self.fleet("destroy", *units)
        until(
            lambda: (
                not self.registry.list_units()
                and not any(h.run(["ls", "-A", unit_dir(h)]).stdout.split() for h in self.hosts)
            ),
            timeout=60,
            what="every unit gone from the shared hosts",
        )


@pytest.fixture(scope="module")
def shared_hosts(
    host_rootfs: Path,
    host_docker: str,
    etcd: EtcdServer,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SharedHosts]:
    """The module's SHARED_HOSTS (one metadata mapping per host) booted once, agents with a
    3 s lease (or the module's SHARED_HOST_OPTIONS: launch_host options, one mapping per
    host, e.g. a ttl each); killed after the module's last test."""
    metadata: Sequence[Mapping[str, str]] = request.module.SHARED_HOSTS
    each: Sequence[Mapping[str, Any]] | None = getattr(request.module, "SHARED_HOST_OPTIONS", None)
    workdir = tmp_path_factory.mktemp("shared-hosts")
    prefix = "/shared-" + re.sub(r"[^A-Za-z0-9_.-]", "_", request.module.__name__)
    pool = HostPool(
        rootfs=host_rootfs,
        state_root=workdir / "hosts",
        etcd_endpoints=[etcd.endpoint],
        name_prefix=pool_name_prefix(),
    )
    fleet = Fleet(etcd, prefix, workdir)
    registry = Registry(RegistryConfig(endpoints=(etcd.endpoint,), prefix=prefix, timeout=5.0))
    try:
        shared = SharedHosts(
            pool.start(len(metadata), metadata=metadata, each=each, etcd_prefix=prefix, ttl=3),
            fleet,
            registry,
        )
        yield shared
    finally:
        registry.close()
        fleet.close()
        pool.close()


@pytest.fixture
def on_shared_hosts(shared_hosts: SharedHosts) -> Iterator[SharedHosts]:
    """The module's shared hosts for one test, every agent registered; the test's units are
    destroyed after it, also when it failed."""
    shared_hosts.ready()
    yield shared_hosts
    shared_hosts.clean()
