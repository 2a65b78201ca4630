"""Harness for bad-input tests (tests/system/hostile/, tests/corpus/ via tests/system/test_corpus.py): the real
`fleetpy` executable against a real etcd.

Every rejected case must exit with the expected code, print exactly one clean line on
stderr (`fleetpy: error: ...`, no traceback, no raw control characters), and leave etcd
unchanged byte for byte: the whole key space and its revision, read with etcdctl (not
with fleetpy's own registry) before and after.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdServer

# Raw control characters a terminal would act on (C0 but newline, DEL, C1).
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f\x80-\x9f]")
SERVICE = "[Unit]\nDescription=hostile test\n\n[Service]\nExecStart=/bin/sleep 1000\n"
SEEDED = ("hello.service", "db.service", "web@.service", "web@1.service", "web@2.service")


@dataclass(frozen=True)
class Outcome:
    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"fleetpy {' '.join(self.argv)!r} exited {self.code}\n"
            f"stdout: {self.stdout[-2000:]!r}\nstderr: {self.stderr[-2000:]!r}"
        )


def etcd_state(endpoint: str, prefix: str = "") -> tuple[int, dict[str, tuple[str, int]]]:
    """(revision, key -> (value, mod_revision)) of the whole key space, or of the keys under
    `prefix`, via etcdctl."""
    keys = [prefix, "--prefix"] if prefix else ["", "--from-key"]
    result = subprocess.run(
        ["etcdctl", "--endpoints", endpoint, "get", *keys, "-w", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    data = json.loads(result.stdout)
    kvs = {
        base64.b64decode(kv["key"]).decode("utf-8", "replace"): (
            base64.b64decode(kv.get("value", "")).decode("utf-8", "replace"),
            int(kv["mod_revision"]),
        )
        for kv in data.get("kvs", [])
    }
    return int(data["header"]["revision"]), kvs


def assert_one_clean_error(outcome: Outcome, code: int = 1, match: str | None = None) -> str:
    """The process failed with `code` and said why in one clean line."""
    assert outcome.code == code, outcome.describe()
    everything = outcome.stdout + outcome.stderr
    assert "Traceback" not in everything, outcome.describe()
    assert not CONTROL.search(everything), outcome.describe()
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, outcome.describe()
    line = lines[0]
    assert line.startswith("fleetpy: error: "), outcome.describe()
    if match is not None:
        assert re.search(match, line), f"{match!r} not in {line!r}"
    return line


class Hostile:
    """The user's side: a working directory, the environment, and the CLI."""

    def __init__(self, etcd: EtcdServer, prefix: str, workdir: Path) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
        self.env.update(
            FLEETPY_ENDPOINT=etcd.endpoint, FLEETPY_ETCD_PREFIX=prefix, FLEETPY_REQUEST_TIMEOUT="3"
        )

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
        stdout: int | None = None,
        input: str | None = None,
    ) -> Outcome:
        full_env = {**self.env, **(env or {})}
        try:
            result = subprocess.run(
                [sys.executable, "-m", "fleetpy", *args],
                env=full_env,
                cwd=self.workdir,
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=timeout,
                input=(input or "").encode(),
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"fleetpy {' '.join(args)!r} hung for {timeout:g}s")
        return Outcome(
            tuple(args),
            result.returncode,
            (result.stdout or b"").decode("utf-8", "replace"),
            result.stderr.decode("utf-8", "replace"),
        )

    def ok(self, *args: str, **kwargs: object) -> Outcome:
        outcome = self.run(*args, **kwargs)  # type: ignore[arg-type]
        assert outcome.code == 0, outcome.describe()
        assert "Traceback" not in outcome.stderr, outcome.describe()
        return outcome

    def write(self, name: str, text: str | bytes = SERVICE) -> str:
        path = self.workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return str(path)

    def state(self) -> tuple[int, dict[str, tuple[str, int]]]:
        return etcd_state(self.etcd.endpoint)

    def rejects(self, *args: str, code: int = 1, match: str | None = None, **kwargs: object) -> str:
        """Run a command that must fail cleanly and write nothing; returns its line."""
        before = self.state()
        outcome = self.run(*args, **kwargs)  # type: ignore[arg-type]
        line = assert_one_clean_error(outcome, code, match)
        self.assert_unchanged(before, outcome)
        return line

    def assert_unchanged(
        self, before: tuple[int, dict[str, tuple[str, int]]], outcome: Outcome
    ) -> None:
        """Nothing under our prefix changed, byte for byte, and nothing was written
        anywhere else. (Keys of other tests' expiring leases may vanish meanwhile.)"""
        revision, kvs = before
        _, now = self.state()
        ours = (self.prefix + "/", self.prefix) if self.prefix else ("",)
        mine_before = {k: v for k, v in kvs.items() if k.startswith(ours)}
        mine_now = {k: v for k, v in now.items() if k.startswith(ours)}
        assert mine_now == mine_before, f"etcd changed under {self.prefix}: {outcome.describe()}"
        written = sorted(k for k, (_, mod) in now.items() if mod > revision)
        assert not written, f"{outcome.describe()}\nwrote {written}"

    def seed(self) -> None:
        """A few submitted units in various desired states, as victims for bad input."""
        seed_dir = self.workdir / ".seed"
        seed_dir.mkdir(exist_ok=True)
        paths = []
        for name in ("hello.service", "db.service", "web@.service"):
            path = seed_dir / name
            path.write_text(SERVICE)
            paths.append(str(path))
        self.ok("submit", *paths)
        self.ok("start", "--no-block", "hello.service", "web@1.service", "web@2.service")
        self.ok("load", "--no-block", "db.service")

    def units(self) -> dict[str, str]:
        """unit -> desired state, as list-unit-files shows them."""
        rows = json.loads(self.ok("list-unit-files", "-o", "json").stdout)
        return {row["unit"]: row["desired_state"] for row in rows}


# Fixtures of the hostile-input corpus (tests/system/hostile/), registered by tests/conftest.py.


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
    # The module's path, tier included: tiers may hold modules of the same name.
    module = request.module.__name__.removeprefix("tests.").replace(".", "-")
    cluster = Hostile(etcd, f"/hostile-{module}", workdir)
    cluster.seed()
    return cluster
