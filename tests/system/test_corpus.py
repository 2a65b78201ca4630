"""The console script gives what the in-process runs of tests/integration/hostile/
test_corpus.py give: the first case of each class of the corpus (tests/corpus/<class>/), run
as the script with the case's own checks, then in process, the two byte for byte alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer

from support.corpus import CASE_FILES, run_case
from support.hostile_harness import Hostile, Via
from support.paths import CORPUS

# The first case of each class.
SAMPLES = sorted({path.parent.name: path for path in reversed(CASE_FILES)}.values())


@pytest.fixture(scope="module")
def corpus_cluster(etcd: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    cluster = Hostile(etcd, "/script-corpus", tmp_path_factory.mktemp("corpus-seed"))
    cluster.seed()
    yield cluster
    cluster.close()


@pytest.mark.parametrize(
    "path", SAMPLES, ids=[str(p.relative_to(CORPUS).with_suffix("")) for p in SAMPLES]
)
def test_the_console_script_gives_what_the_in_process_run_gives(
    corpus_cluster: Hostile, tmp_path: Path, path: Path
) -> None:
    # Each in a folder of its own (a case's files may be FIFOs), named alike in length.
    there, here = tmp_path / "script", tmp_path / "inproc"
    script = run_case(corpus_cluster, there, path, Via.SCRIPT)
    in_process = run_case(corpus_cluster, here, path, Via.IN_PROCESS)
    assert in_process.code == script.code
    assert in_process.stdout == script.stdout.replace(str(there), str(here))
    assert in_process.stderr == script.stderr.replace(str(there), str(here))
