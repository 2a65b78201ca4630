"""Harness for bad-input tests (tests/*/hostile/, tests/corpus/ via test_corpus.py): the
`fleetpy` command against a real etcd, run in process (tests/support/inprocess.py: the
console script's entry point, argv, environment, working directory and standard streams)
or, for the system tier's samples, as the console script itself.

Every rejected case must exit with the expected code, print exactly one clean line on
stderr (`fleetpy: error: ...`, no traceback, no raw control characters), and leave etcd
unchanged: every key under the test's prefix byte for byte with its mod revision, and no
key anywhere written since. etcd is read with its own gRPC API (not with fleetpy's
registry), and only the prefix: the rest of the key space is asked for the keys written
after the revision read before, which are normally none.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

import grpc
import pytest
from pyetcd import etcdrpc  # type: ignore[import-untyped]

from fleetpy.cluster.etcd import EtcdServer

from support.inprocess import Hung, run_in_process

# Raw control characters a terminal would act on (C0 but newline, DEL, C1).
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f\x80-\x9f]")
SERVICE = "[Unit]\nDescription=hostile test\n\n[Service]\nExecStart=/bin/sleep 1000\n"
SEEDED = ("hello.service", "db.service", "web@.service", "web@1.service", "web@2.service")
# The console script pip made for pyproject's [project.scripts] (beside this interpreter).
CONSOLE_SCRIPT = str(Path(sys.executable).parent / "fleetpy")

# (revision, key -> (value, mod_revision)) of the keys under one prefix.
State = tuple[int, dict[str, tuple[str, int]]]


class Via(Enum):
    """How a Hostile runs fleetpy."""

    IN_PROCESS = "in process"
    SCRIPT = "the console script"


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


def _prefix_end(prefix: bytes) -> bytes:
    """The end of the key range that holds every key starting with PREFIX."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"  # every key from PREFIX on
    end[-1] += 1
    return bytes(end)


class Keyspace:
    """Reads of one etcd member over its gRPC API: a prefix, and what was written since."""

    def __init__(self, endpoint: str) -> None:
        url = urlparse(endpoint)
        self.endpoint = endpoint
        self._channel = grpc.insecure_channel(f"{url.hostname}:{url.port}")
        self._kv: Any = etcdrpc.KVStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Keyspace:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def state(self, prefix: str) -> State:
        """(revision, key -> (value, mod_revision)) of the keys under PREFIX."""
        key = prefix.encode()
        reply = self._kv.Range(
            etcdrpc.RangeRequest(key=key or b"\0", range_end=_prefix_end(key)), timeout=30
        )
        kvs = {
            kv.key.decode("utf-8", "replace"): (
                kv.value.decode("utf-8", "replace"),
                int(kv.mod_revision),
            )
            for kv in reply.kvs
        }
        return int(reply.header.revision), kvs

    def written_since(self, revision: int) -> list[str]:
        """The keys anywhere whose last write came after REVISION (keys only, and only
        those: not a dump of the key space)."""
        reply = self._kv.Range(
            etcdrpc.RangeRequest(
                key=b"\0", range_end=b"\0", keys_only=True, min_mod_revision=revision + 1
            ),
            timeout=30,
        )
        return sorted(kv.key.decode("utf-8", "replace") for kv in reply.kvs)

    def put(self, key: str, value: bytes) -> None:
        """Write a raw value, as another tool would (not through fleetpy)."""
        self._kv.Put(etcdrpc.PutRequest(key=key.encode(), value=value), timeout=30)

    def leased(self, prefix: str) -> list[str]:
        """The keys under PREFIX that a lease holds (a daemon's, until it expires)."""
        key = prefix.encode()
        reply = self._kv.Range(
            etcdrpc.RangeRequest(key=key, range_end=_prefix_end(key), keys_only=True), timeout=30
        )
        return sorted(kv.key.decode("utf-8", "replace") for kv in reply.kvs if kv.lease)


def etcd_state(endpoint: str, prefix: str) -> State:
    """(revision, key -> (value, mod_revision)) of the keys under PREFIX."""
    with Keyspace(endpoint) as keyspace:
        return keyspace.state(prefix)


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

    def __init__(
        self,
        etcd: EtcdServer,
        prefix: str,
        workdir: Path,
        via: Via = Via.IN_PROCESS,
        keyspace: Keyspace | None = None,
    ) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.workdir = workdir
        self.via = via
        self._keyspace = keyspace
        self._owns_keyspace = keyspace is None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPY_")}
        self.env.update(
            FLEETPY_ENDPOINT=etcd.endpoint, FLEETPY_ETCD_PREFIX=prefix, FLEETPY_REQUEST_TIMEOUT="3"
        )

    def derived(
        self, *, prefix: str | None = None, workdir: Path | None = None, via: Via | None = None
    ) -> Hostile:
        """Another user of the same etcd (sharing this one's connection for its checks)."""
        other = Hostile(
            self.etcd,
            self.prefix if prefix is None else prefix,
            self.workdir if workdir is None else workdir,
            self.via if via is None else via,
            self.keyspace(),
        )
        other.env = {**self.env, "FLEETPY_ETCD_PREFIX": other.prefix}
        return other

    def close(self) -> None:
        if self._keyspace is not None and self._owns_keyspace:
            self._keyspace.close()
        self._keyspace = None

    def keyspace(self) -> Keyspace:
        """Where the checks read etcd."""
        if self._keyspace is None:
            self._keyspace = Keyspace(self.etcd.endpoint)
            self._owns_keyspace = True
        return self._keyspace

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
        stdout: int | None = None,
        input: str | None = None,
        via: Via | None = None,
    ) -> Outcome:
        full_env = {**self.env, **(env or {})}
        data = (input or "").encode()
        if (via or self.via) is Via.IN_PROCESS:
            try:
                ran = run_in_process(
                    args,
                    env=full_env,
                    cwd=self.workdir,
                    input=data,
                    stdout_fd=stdout,
                    timeout=timeout,
                )
            except Hung:
                pytest.fail(f"fleetpy {' '.join(args)!r} hung for {timeout:g}s (in process)")
            return Outcome(
                tuple(args),
                ran.code,
                ran.stdout.decode("utf-8", "replace"),
                ran.stderr.decode("utf-8", "replace"),
            )
        try:
            result = subprocess.run(
                [CONSOLE_SCRIPT, *args],
                env=full_env,
                cwd=self.workdir,
                stdout=stdout if stdout is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=timeout,
                input=data,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"fleetpy {' '.join(args)!r} hung for {timeout:g}s")
        return Outcome(
            tuple(args),
            result.returncode,
            (result.stdout or b"").decode("utf-8", "replace"),
            result.stderr.decode("utf-8", "replace"),
        )

    def ok(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
        via: Via | None = None,
    ) -> Outcome:
        outcome = self.run(*args, env=env, timeout=timeout, via=via)
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

    def state(self) -> State:
        """The keys under our prefix, and the revision they were read at."""
        return self.keyspace().state(self.prefix)

    def rejects(
        self,
        *args: str,
        code: int = 1,
        match: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
        via: Via | None = None,
    ) -> str:
        """Run a command that must fail cleanly and write nothing; returns its line."""
        before = self.state()
        outcome = self.run(*args, env=env, timeout=timeout, via=via)
        line = assert_one_clean_error(outcome, code, match)
        self.assert_unchanged(before, outcome)
        return line

    def assert_unchanged(self, before: State, outcome: Outcome) -> None:
        """Nothing under our prefix changed, byte for byte, and nothing was written
        anywhere else. (Keys of other tests' expiring leases may vanish meanwhile: deletions
        elsewhere are not looked for.)"""
        revision, mine_before = before
        _, mine_now = self.state()
        assert mine_now == mine_before, f"etcd changed under {self.prefix}: {outcome.describe()}"
        written = self.keyspace().written_since(revision)
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
        return {str(row["unit"]): str(row["desired_state"]) for row in rows}


# Records fleetpy did not write (class 3, test_hostile_records.py in both tiers).

GOOD_HASH = "ab" * 32

# key (relative to the prefix) -> raw value: each is not a record fleetpy would write.
MALFORMED: dict[str, bytes] = {
    "unit/notjson.service": b"not json",
    "unit/array.service": b"[]",
    "unit/nohash.service": b'{"desired": "launched"}',
    "unit/badhash.service": b'{"hash": 1, "desired": "launched"}',
    "unit/baddesired.service": json.dumps({"hash": GOOD_HASH, "desired": "running"}).encode(),
    "unit/badglobal.service": json.dumps(
        {"hash": GOOD_HASH, "desired": "loaded", "global": "yes"}
    ).encode(),
    "unit/binary.service": b"\xff\xfe\x00\x01",
    "unit/deep.service": b"[" * 100_000,
    "unit/Weird Name": b"{}",
    "unit/unit/nested.service": json.dumps({"hash": GOOD_HASH, "desired": "launched"}).encode(),
    "unit/esc\x1b]0;pwned\x07.service": b"x",
    "machines/m-bad": b"garbage",
    "machines/bad id!": json.dumps({"ip": "1.2.3.4"}).encode(),
    "machines/m-meta": json.dumps({"ip": "1.2.3.4", "metadata": {"a": 1}}).encode(),
    "schedule/m-x/hello.service": b"{",
    "schedule/m-x/Bad Unit": b"{}",
    "state/m-x/hello.service": b"nope",
    "state/noslash": b"{}",
    "reason/hello.service": b"\xff",
    "global/g.service": b"garbage",
    "content/not-a-hash": b"x",
}


def pollute(cluster: Hostile) -> Hostile:
    """Put every MALFORMED record under CLUSTER's prefix."""
    for key, value in MALFORMED.items():
        cluster.keyspace().put(f"{cluster.prefix}/{key}", value)
    return cluster


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("fleetpy: warning: ")]


# Fixtures of the hostile-input corpus (tests/*/hostile/), registered by tests/conftest.py.


@pytest.fixture
def hostile(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[Hostile]:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    user = Hostile(etcd, prefix, workdir)
    yield user
    user.close()


def seeded_cluster(
    etcd: EtcdServer, workdir: Path, request: pytest.FixtureRequest, via: Via
) -> Hostile:
    # The module's path, tier included: tiers may hold modules of the same name.
    module = request.module.__name__.removeprefix("tests.").replace(".", "-")
    cluster = Hostile(etcd, f"/hostile-{module}", workdir, via)
    cluster.seed()
    return cluster


@pytest.fixture(scope="module")
def seeded(
    etcd: EtcdServer, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Hostile]:
    """One seeded cluster per corpus module: rejected cases change nothing, so they
    can share it (each case still checks etcd before and after). fleetpy in process."""
    cluster = seeded_cluster(etcd, tmp_path_factory.mktemp("hostile"), request, Via.IN_PROCESS)
    yield cluster
    cluster.close()
