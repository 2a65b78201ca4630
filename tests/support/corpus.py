"""A case of the bad-input corpus (tests/corpus/<class>/<case>.yaml), read from its file, and
run against a seeded cluster (tests/integration/hostile/test_corpus.py: every case, in
process; tests/system/test_corpus.py: a sample of each class, as the console script too)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support.hostile_harness import CONTROL, Hostile, Outcome, Via, assert_one_clean_error
from support.paths import CORPUS

CASE_FILES = sorted(CORPUS.glob("*/*.yaml"))
CASE_IDS = [str(p.relative_to(CORPUS).with_suffix("")) for p in CASE_FILES]


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


def run_case(cluster: Hostile, workdir: Path, path: Path, via: Via = Via.IN_PROCESS) -> Outcome:
    """Run the case at PATH in WORKDIR (its files made there) against CLUSTER's etcd and
    prefix, VIA in process or the console script, and check it: its exit code, its one
    clean error line or its output, and etcd unchanged under the prefix."""
    case = Case.load(path)
    workdir.mkdir(parents=True, exist_ok=True)
    user = cluster.derived(workdir=workdir, via=via)
    make_files(workdir, case.files)
    args = expand_argv(workdir, case.argv, user.prefix)
    before = user.state()
    outcome = user.run(*args, env=case.env, timeout=case.timeout)
    if case.code == 0:
        assert outcome.code == 0, f"{case.about}\n{outcome.describe()}"
        assert "Traceback" not in outcome.stderr and "fleetpy: error:" not in outcome.stderr
        assert not CONTROL.search(outcome.stdout + outcome.stderr), outcome.describe()
        assert case.stdout is not None
        assert re.search(case.stdout, outcome.stdout), f"{case.stdout!r}: {outcome.describe()}"
    else:
        assert_one_clean_error(outcome, case.code, case.error)
    user.assert_unchanged(before, outcome)
    return outcome
