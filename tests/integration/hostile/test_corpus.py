"""Every case of the bad-input corpus (tests/corpus/<class>/<case>.yaml), fleetpy in process
against one seeded prefix of the session's etcd; what the corpus covers as a whole:
tests/pure/test_corpus.py; a sample of each class as the console script:
tests/system/test_corpus.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer

from support.corpus import CASE_FILES, CASE_IDS, run_case
from support.hostile_harness import Hostile


@pytest.fixture(scope="module")
def corpus_cluster(etcd: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """One seeded cluster for the whole corpus: refused cases change nothing, so they
    can share it (each case checks etcd before and after)."""
    cluster = Hostile(etcd, "/corpus", tmp_path_factory.mktemp("corpus-seed"))
    cluster.seed()
    yield cluster
    cluster.close()


@pytest.mark.parametrize("path", CASE_FILES, ids=CASE_IDS)
def test_case(corpus_cluster: Hostile, tmp_path: Path, path: Path) -> None:
    run_case(corpus_cluster, tmp_path, path)
