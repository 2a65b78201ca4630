"""test_corpus.py's tests that need fleetpy or etcd processes of its own, TLS etcd, hosts or
tools of the machine (README "Tests"); what the module covers as a whole:
tests/pure/test_corpus.py."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fleetpy.cluster.etcd import EtcdServer

from support.corpus import CASE_FILES, Case
from support.hostile_harness import CONTROL, Hostile, assert_one_clean_error
from support.paths import CORPUS


def _generated(spec: Mapping[str, Any]) -> str:
    repeat = str(spec.get("repeat", ""))
    times = int(spec.get("times", 0))
    if spec.get("numbered"):
        body = "".join(repeat.format(i=i) for i in range(times))
    else:
        body = repeat * times
    return str(spec.get("head", "")) + body + str(spec.get("tail", ""))


def _content(spec: Any) -> bytes:
    if isinstance(spec, str):
        return spec.encode("utf-8", "surrogatepass")
    if "latin1" in spec:
        return str(spec["latin1"]).encode("latin-1")
    return _generated(spec).encode("utf-8")


def make_files(root: Path, files: Mapping[str, Any]) -> None:
    for name, spec in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, Mapping) and "series" in spec:
            series = spec["series"]
            path.mkdir(parents=True, exist_ok=True)
            count = int(series["count"])
            for i in range(count):
                fields = {"i": i, "next": (i + 1) % count}
                (path / series["name"].format(**fields)).write_text(series["text"].format(**fields))
        elif isinstance(spec, Mapping) and "symlink" in spec:
            path.symlink_to(spec["symlink"])
        elif isinstance(spec, Mapping) and "fifo" in spec:
            os.mkfifo(path)
        elif isinstance(spec, Mapping) and "directory" in spec:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(_content(spec))


def expand_argv(root: Path, argv: tuple[Any, ...], prefix: str) -> list[str]:
    args: list[str] = []
    for item in argv:
        if isinstance(item, str):
            args.append(item.replace("{prefix}", prefix))
        elif "glob" in item:
            found = sorted(str(p.relative_to(root)) for p in root.glob(item["glob"]))
            assert found, f"glob {item['glob']} matches no file of the case"
            args.extend(found)
        elif "latin1" in item:
            args.append(os.fsdecode(str(item["latin1"]).encode("latin-1")))
        elif "each" in item:  # N arguments
            args.extend(str(item["each"]).format(i=i) for i in range(int(item["times"])))
        else:
            args.append(_generated(item))
    return args


@pytest.fixture(scope="module")
def corpus_cluster(etcd: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    """One seeded cluster for the whole corpus: refused cases change nothing, so they
    can share it (each case checks etcd before and after)."""
    cluster = Hostile(etcd, "/corpus", tmp_path_factory.mktemp("corpus-seed"))
    cluster.seed()
    return cluster


@pytest.mark.parametrize(
    "path", CASE_FILES, ids=[str(p.relative_to(CORPUS).with_suffix("")) for p in CASE_FILES]
)
def test_case(corpus_cluster: Hostile, tmp_path: Path, path: Path) -> None:
    case = Case.load(path)
    cluster = Hostile(corpus_cluster.etcd, corpus_cluster.prefix, tmp_path)
    make_files(tmp_path, case.files)
    args = expand_argv(tmp_path, case.argv, cluster.prefix)
    before = cluster.state()
    outcome = cluster.run(*args, env=case.env, timeout=case.timeout)
    if case.code == 0:
        assert outcome.code == 0, f"{case.about}\n{outcome.describe()}"
        assert "Traceback" not in outcome.stderr and "fleetpy: error:" not in outcome.stderr
        assert not CONTROL.search(outcome.stdout + outcome.stderr), outcome.describe()
        assert case.stdout is not None
        assert re.search(case.stdout, outcome.stdout), f"{case.stdout!r}: {outcome.describe()}"
    else:
        assert_one_clean_error(outcome, case.code, case.error)
    cluster.assert_unchanged(before, outcome)
