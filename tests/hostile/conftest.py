"""Fixtures of the hostile-input corpus; the harness itself is tests/hostile_harness.py
(shared with the data corpus, tests/test_corpus.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer

from support.hostile_harness import Hostile


@pytest.fixture
def hostile(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Hostile:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    return Hostile(etcd, prefix, workdir)


@pytest.fixture(scope="module")
def seeded(
    etcd: EtcdServer, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Hostile:
    """One seeded cluster per corpus module: rejected cases change nothing, so they
    can share it (each case still checks etcd before and after)."""
    workdir = tmp_path_factory.mktemp("hostile")
    cluster = Hostile(etcd, f"/hostile-{request.module.__name__.rsplit('.', 1)[-1]}", workdir)
    cluster.seed()
    return cluster
