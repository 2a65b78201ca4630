"""The bad-input corpus as data: every file tests/corpus/<class>/<case>.yaml is one case,
run through the real `fleetpy` executable against a real etcd (tests/hostile_harness.py).

A case must end with its exit code, exactly one clean `fleetpy: error:` line on stderr
matching its `error` pattern (no traceback, no raw control characters), and etcd
unchanged byte for byte. A case with `code: 0` (a limit's largest accepted input, on a
command that writes nothing) must print no error line and its stdout must match `stdout`.

A case file (read with yaml.safe_load):

    about: what the case is and why it must be refused       (required)
    argv: [submit, big.service]                               (required)
    code: 1                                                   (default 1)
    error: "larger than 64 KiB"                               (regex, searched in the line)
    stdout: "..."                                             (regex, for code 0)
    env: {NAME: value}                                        (added to the CLI's environment)
    files: {relative/path: SPEC}                              (made in a fresh directory)
    timeout: 30                                               (seconds)

argv items and file SPECs are text, or a generator (nothing big is committed):

    "text"                          as is (UTF-8); "{prefix}" becomes the case's etcd prefix
    {latin1: "\\xff..."}            bytes: each character one byte (invalid UTF-8, NULs)
    {head: .., repeat: .., times: N, tail: ..}
                                    head + repeat * N + tail; "{i}" in repeat is the index
                                    (with `numbered: true`)
    {symlink: /target}, {fifo: true}, {directory: true}     (files only)
    {series: {count: N, name: "u{i}.service", text: "...{i}...{next}..."}}
                                    (files: N files; next is (i + 1) % N)
    {glob: "dir/*.service"}         (argv: the matching files made for the case, sorted)
    {each: "u{i}.service", times: N}        (argv: N arguments)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetpy.cluster.etcd import EtcdServer

from support.hostile_harness import CONTROL, Hostile, assert_one_clean_error

CORPUS = Path(__file__).resolve().parent / "corpus"
CASE_FILES = sorted(CORPUS.glob("*/*.yaml"))
KEYS = {"about", "argv", "code", "error", "stdout", "env", "files", "timeout"}


@dataclass(frozen=True)
class Case:
    path: Path
    about: str
    argv: tuple[Any, ...]
    code: int = 1
    error: str | None = None
    stdout: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 30

    @classmethod
    def load(cls, path: Path) -> Case:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict), f"{path}: a case is a mapping"
        unknown = set(data) - KEYS
        assert not unknown, f"{path}: unknown keys {sorted(unknown)} (known: {sorted(KEYS)})"
        assert isinstance(data.get("about"), str) and data["about"], f"{path}: say what it is"
        assert isinstance(data.get("argv"), list) and data["argv"], f"{path}: argv is a list"
        code = data.get("code", 1)
        assert (code == 0) == ("stdout" in data), f"{path}: stdout goes with code 0, only"
        assert code == 0 or "error" in data, f"{path}: a refused case names its error"
        return cls(
            path,
            data["about"],
            tuple(data["argv"]),
            code,
            data.get("error"),
            data.get("stdout"),
            {str(k): str(v) for k, v in (data.get("env") or {}).items()},
            data.get("files") or {},
            float(data.get("timeout", 30)),
        )


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


def test_the_corpus_covers_every_class_of_the_issue() -> None:
    """Issue [7] item 4 names these classes; each has a directory of cases."""
    classes = {path.parent.name for path in CASE_FILES}
    assert classes >= {
        "names",
        "unit-files",
        "cycles",
        "templates",
        "yaml",
        "values",
        "endpoints",
        "prefixes",
        "limits",
    }, classes
    for path in CASE_FILES:
        Case.load(path)  # every case is well formed, even those a run would skip


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
