"""pytest fixtures for real hosts (systemd-nspawn): host_rootfs, host_docker and hosts,
registered by tests/conftest.py (pytest_plugins).

`hosts` needs the fixtures `etcd` (with `.endpoint`, "http://127.0.0.1:23790")
and `prefix` (the test's etcd key prefix; the hosts' agents use it, so a
registry built from it sees their machines). Without root or the tools
these fixtures skip, except on CI (CI=true), where a missing prerequisite
fails the test.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetpy.cluster.nspawn import (
    Host,
    HostPool,
    ensure_busybox_image,
    ensure_dockerd,
    ensure_rootfs,
)

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
    etcd: Any,
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
