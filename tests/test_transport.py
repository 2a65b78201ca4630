"""fleetpy's etcd transport against real etcd: operations, watches, failover, reconnect."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import grpc
import pytest

from fleetpy.cluster.etcd import EtcdCluster, EtcdServer, EtcdTls, free_port
from fleetpy.errors import RegistryError
from fleetpy.registry.transport import (
    Compare,
    DeleteOp,
    DeleteResult,
    Endpoint,
    EtcdCompacted,
    EtcdError,
    EtcdRefused,
    EtcdTransport,
    EtcdUnavailable,
    EventKind,
    GetOp,
    PutOp,
    PutResult,
    RangeResult,
    WatchEnded,
    WatchResponse,
    prefix_range_end,
)

from support.waiting import until

TIMEOUT = 5.0


def endpoint(url: str) -> Endpoint:
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    return Endpoint(parsed.hostname, parsed.port)


def transport(*urls: str, timeout: float = TIMEOUT, **kwargs: object) -> EtcdTransport:
    return EtcdTransport([endpoint(u) for u in urls], timeout=timeout, **kwargs)  # type: ignore[arg-type]


class Recorder:
    """Collects watch callbacks from the stream's thread."""

    def __init__(self) -> None:
        self.items: list[WatchResponse | WatchEnded] = []
        self.lock = threading.Lock()

    def __call__(self, item: WatchResponse | WatchEnded) -> None:
        with self.lock:
            self.items.append(item)

    @property
    def events(self) -> list[tuple[str, bytes, bytes]]:
        with self.lock:
            return [
                (e.kind.value, e.key, e.value)
                for item in self.items
                if isinstance(item, WatchResponse)
                for e in item.events
            ]

    @property
    def ended(self) -> list[WatchEnded]:
        with self.lock:
            return [item for item in self.items if isinstance(item, WatchEnded)]


@pytest.fixture
def client(etcd: EtcdServer) -> Iterator[EtcdTransport]:
    with transport(etcd.endpoint) as t:
        yield t


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd this test may kill and restart (the session one is shared)."""
    with EtcdServer() as server:
        yield server


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as c:
        yield c


# ----------------------------------------------------------------------------- key-value


def test_put_range_delete(client: EtcdTransport, prefix: str) -> None:
    first = client.put(f"{prefix}/a", "1")
    second = client.put(f"{prefix}/b", b"2")
    assert second.revision == first.revision + 1
    found = client.range(f"{prefix}/", prefix_range_end(f"{prefix}/"))
    assert [(kv.key, kv.value) for kv in found.kvs] == [
        (f"{prefix}/a".encode(), b"1"),
        (f"{prefix}/b".encode(), b"2"),
    ]
    assert found.revision >= second.revision and found.count == 2
    assert found.kvs[0].mod_revision == first.revision and found.kvs[0].version == 1
    assert client.range(f"{prefix}/", prefix_range_end(f"{prefix}/"), count_only=True).count == 2
    keys = client.range(f"{prefix}/", prefix_range_end(f"{prefix}/"), keys_only=True)
    assert [kv.value for kv in keys.kvs] == [b"", b""]
    assert client.range(f"{prefix}/missing").kvs == ()
    deleted = client.delete(f"{prefix}/", prefix_range_end(f"{prefix}/"))
    assert deleted.deleted == 2 and deleted.revision > second.revision


def test_txn_compares_guard_writes_with_revisions(client: EtcdTransport, prefix: str) -> None:
    key = f"{prefix}/k"
    created = client.txn([Compare.version(key, 0)], [PutOp(key.encode(), b"v1")])
    assert created.succeeded and isinstance(created.responses[0], PutResult)
    again = client.txn(
        [Compare.version(key, 0)], [PutOp(key.encode(), b"other")], [GetOp(key.encode())]
    )
    assert not again.succeeded  # create-if-absent lost: the failure branch read it
    current = again.responses[0]
    assert isinstance(current, RangeResult) and current.kvs[0].value == b"v1"
    revision = current.kvs[0].mod_revision
    assert revision == created.revision

    updated = client.txn(
        [Compare.mod(key, revision), Compare.value_is(key, "v1")],
        [PutOp(key.encode(), b"v2"), GetOp(key.encode())],
    )
    assert updated.succeeded and updated.revision == revision + 1
    read = updated.responses[1]
    assert isinstance(read, RangeResult) and read.kvs[0].value == b"v2"
    stale = client.txn([Compare.mod(key, revision)], [PutOp(key.encode(), b"lost")])
    assert not stale.succeeded and stale.responses == ()
    assert stale.revision == updated.revision  # the header even when nothing matched
    removed = client.txn([], [DeleteOp(key.encode())])
    assert isinstance(removed.responses[0], DeleteResult) and removed.responses[0].deleted == 1


def test_non_retryable_error_is_one_line_and_immediate(client: EtcdTransport, prefix: str) -> None:
    ops = [PutOp(f"{prefix}/{i}".encode(), b"x") for i in range(200)]  # > --max-txn-ops
    started = time.monotonic()
    with pytest.raises(EtcdError) as info:
        client.txn([], ops)
    assert time.monotonic() - started < 1
    assert isinstance(info.value, RegistryError)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "\n" not in str(info.value) and "too many operations" in str(info.value)


def test_leases(client: EtcdTransport, prefix: str) -> None:
    lease = client.lease_grant(30)
    assert lease.ttl == 30
    client.put(f"{prefix}/owned", "x", lease=lease.id)
    assert client.range(f"{prefix}/owned").kvs[0].lease == lease.id
    assert 0 < client.lease_keepalive_once(lease.id) <= 30
    client.lease_revoke(lease.id)
    assert client.range(f"{prefix}/owned").kvs == ()
    assert client.lease_keepalive_once(lease.id) <= 0
    client.lease_revoke(lease.id)  # already gone counts as revoked


def test_concurrent_calls_from_many_threads(client: EtcdTransport, prefix: str) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                client.put(f"{prefix}/{n}/{i}", str(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert client.range(f"{prefix}/", prefix_range_end(f"{prefix}/"), count_only=True).count == 320


# ----------------------------------------------------------------------------- watches


def test_watch_events_and_cancel(client: EtcdTransport, prefix: str) -> None:
    start = client.put(f"{prefix}/before", "0").revision
    seen = Recorder()
    cancel = client.watch(f"{prefix}/", prefix_range_end(f"{prefix}/"), start, seen)
    put = client.put(f"{prefix}/a", "1")
    client.delete(f"{prefix}/a")
    until(lambda: len(seen.events) == 3, 5, "three events")
    assert seen.events == [
        ("put", f"{prefix}/before".encode(), b"0"),
        ("put", f"{prefix}/a".encode(), b"1"),
        ("delete", f"{prefix}/a".encode(), b""),
    ]
    responses = [i for i in seen.items if isinstance(i, WatchResponse)]
    assert responses[0].events[0].mod_revision == start
    assert any(
        e.mod_revision == put.revision and e.kind is EventKind.PUT
        for r in responses
        for e in r.events
    )
    assert all(r.revision >= r.events[-1].mod_revision for r in responses)

    cancel()
    count = len(seen.items)
    client.put(f"{prefix}/b", "2")
    time.sleep(0.5)
    assert len(seen.items) == count and seen.ended == []
    cancel()  # twice is harmless


def test_many_watches_share_one_stream(client: EtcdTransport, prefix: str) -> None:
    recorders = [Recorder() for _ in range(20)]
    cancels = [client.watch(f"{prefix}/{i}", None, None, r) for i, r in enumerate(recorders)]
    for i in range(20):
        client.put(f"{prefix}/{i}", str(i))
    until(lambda: all(len(r.events) == 1 for r in recorders), 5, "one event per watch")
    assert [r.events[0][2] for r in recorders] == [str(i).encode() for i in range(20)]
    for cancel in cancels:
        cancel()


def test_cancel_from_inside_the_callback(client: EtcdTransport, prefix: str) -> None:
    seen = Recorder()
    cancels: list[Callable[[], None]] = []

    def once(item: WatchResponse | WatchEnded) -> None:
        seen(item)
        cancels[0]()

    cancels.append(client.watch(f"{prefix}/k", None, None, once))
    client.put(f"{prefix}/k", "1")
    client.put(f"{prefix}/k", "2")
    until(lambda: seen.items, 5, "first event")
    time.sleep(0.3)
    assert len(seen.items) == 1


def test_callback_error_is_one_log_line_and_the_stream_lives(
    client: EtcdTransport, prefix: str, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken(item: WatchResponse | WatchEnded) -> None:
        raise ValueError("boom")

    seen = Recorder()
    cancel_broken = client.watch(f"{prefix}/x", None, None, broken)
    cancel_good = client.watch(f"{prefix}/y", None, None, seen)
    client.put(f"{prefix}/x", "1")
    client.put(f"{prefix}/y", "1")
    until(lambda: seen.events, 5, "event on the healthy watch")
    cancel_broken()
    cancel_good()
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if "watch_callback_failed" in line]) == 1


def test_watch_from_compacted_revision_ends_with_compacted(
    client: EtcdTransport, prefix: str
) -> None:
    old = client.put(f"{prefix}/k", "1").revision
    latest = client.put(f"{prefix}/k", "2").revision
    client.compact(latest)
    seen = Recorder()
    client.watch(f"{prefix}/k", None, old, seen)
    until(lambda: seen.ended, 5, "watch ended")
    time.sleep(0.2)
    assert len(seen.items) == 1
    ended = seen.ended[0]
    assert ended.compacted and isinstance(ended.error, EtcdCompacted)
    assert ended.error.compact_revision == latest
    with pytest.raises(EtcdCompacted):
        client.range(f"{prefix}/k", revision=old)
    # the stream still serves other watches
    other = Recorder()
    client.watch(f"{prefix}/k", None, None, other)
    client.put(f"{prefix}/k", "3")
    until(lambda: other.events, 5, "event after a compacted watch")


def test_stream_break_gives_one_error_per_watch_then_a_new_stream(
    own_etcd: EtcdServer, prefix: str
) -> None:
    with transport(own_etcd.endpoint) as client:
        recorders = [Recorder() for _ in range(5)]
        for i, recorder in enumerate(recorders):
            client.watch(f"{prefix}/{i}", None, None, recorder)
        own_etcd.kill()
        until(lambda: all(r.ended for r in recorders), 10, "every watch ended")
        time.sleep(0.5)
        for recorder in recorders:
            assert len(recorder.items) == 1 and not recorder.ended[0].compacted
            assert "\n" not in str(recorder.ended[0].error)
        own_etcd.restart()
        after = Recorder()
        client.watch(f"{prefix}/new", None, None, after)
        client.put(f"{prefix}/new", "1")
        until(lambda: after.events, 5, "event on the new stream")
        assert all(len(r.items) == 1 for r in recorders)


def test_close_is_silent_and_ends_watches_without_callbacks(
    etcd: EtcdServer, prefix: str, capfd: pytest.CaptureFixture[str]
) -> None:
    client = transport(etcd.endpoint)
    seen = Recorder()
    client.watch(f"{prefix}/", prefix_range_end(f"{prefix}/"), None, seen)
    client.lease_keepalive_once(client.lease_grant(5).id)
    client.close()
    time.sleep(0.3)
    assert seen.items == []
    with pytest.raises(EtcdError):
        client.range(f"{prefix}/x")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


# ----------------------------------------------------------------------------- failover


def test_every_endpoint_down_is_one_line_within_the_timeout() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    with transport(*urls, timeout=2.0) as client:
        for call in (
            lambda: client.range("/x"),
            lambda: client.watch(b"/x", None, None, Recorder()),
        ):
            started = time.monotonic()
            with pytest.raises(EtcdUnavailable) as info:
                call()
            assert time.monotonic() - started < 2.5
            assert str(info.value) == (
                f"cannot reach etcd at {urls[0]} (connection refused), "
                f"{urls[1]} (connection refused) after 2s"
            )


def test_blackholed_endpoint_times_out_per_attempt(etcd: EtcdServer, prefix: str) -> None:
    """A member that accepts connections but never answers (a listening socket nobody
    serves) must not eat the budget: the healthy member listed second answers."""
    with socket_that_never_answers() as dead:
        with transport(dead, etcd.endpoint, timeout=TIMEOUT) as client:
            started = time.monotonic()
            client.put(f"{prefix}/k", "v")
            elapsed = time.monotonic() - started
            assert elapsed < TIMEOUT
            assert client.range(f"{prefix}/k").kvs[0].value == b"v"


class socket_that_never_answers:
    def __enter__(self) -> str:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def exercise(client: EtcdTransport, prefix: str, rounds: int = 10) -> list[float]:
    """Every kind of call, `rounds` times; returns each call's duration."""
    durations: list[float] = []

    def timed(call: Callable[[], object]) -> None:
        started = time.monotonic()
        call()
        durations.append(time.monotonic() - started)

    started = time.monotonic()
    lease = client.lease_grant(30).id
    durations.append(time.monotonic() - started)
    for i in range(rounds):
        key = f"{prefix}/{i}"
        timed(lambda: client.put(key, str(i), lease=lease))
        timed(lambda: client.range(key))
        timed(lambda: client.txn([Compare.version(key, 1)], [PutOp(key.encode(), b"y")]))
        timed(lambda: client.lease_keepalive_once(lease))
        seen = Recorder()
        cancel = client.watch(key, None, None, seen)
        client.put(key, "z")
        until(lambda: seen.events, TIMEOUT, "watch event")
        cancel()
    client.lease_revoke(lease)
    return durations


@pytest.mark.parametrize("which", ["first", "leader"])
def test_failover_with_one_member_killed(cluster: EtcdCluster, prefix: str, which: str) -> None:
    long_lived = transport(*cluster.endpoints)
    exercise(long_lived, prefix + "/warm", 1)
    watched = Recorder()
    long_lived.watch(f"{prefix}/w", None, None, watched)
    victim = 0 if which == "first" else cluster.leader()
    assert victim is not None
    cluster.kill(victim)
    try:
        for client in (long_lived, transport(*cluster.endpoints)):
            durations = exercise(client, f"{prefix}/{id(client)}")
            print(f"killed={which} max_call={max(durations):.2f}s")
            assert max(durations) < TIMEOUT
            client.close()
        # a dead member listed first, or healthy ones first: both work
        survivors = [u for i, u in enumerate(cluster.endpoints) if i != victim]
        dead = cluster.endpoints[victim]
        for order in ([dead, *survivors], [*survivors, dead]):
            with transport(*order) as client:
                assert max(exercise(client, f"{prefix}/o{order.index(dead)}", 3)) < TIMEOUT
    finally:
        cluster.restart(victim)
    if victim == 0:  # the watch stream was on the killed member
        until(lambda: watched.ended, 5, "watch on the killed member ended")
        assert len(watched.items) == 1


@pytest.mark.parametrize("which", ["first", "leader"])
def test_failover_with_one_member_paused(cluster: EtcdCluster, prefix: str, which: str) -> None:
    """A hung member (SIGSTOP) answers nothing; a hung leader also strands proposals
    that followers forwarded to it until etcd's own request timeout (~7 s)."""
    leader = cluster.leader()
    assert leader is not None
    victim = 0 if which == "first" else leader
    # the victim listed first: our preferred member, and the one our watches sit on
    order = [cluster.endpoints[victim]] + [
        u for i, u in enumerate(cluster.endpoints) if i != victim
    ]
    client = transport(*order)
    exercise(client, prefix + "/warm", 1)
    watched = Recorder()
    client.watch(f"{prefix}/w", None, None, watched)
    cluster.pause(victim)
    try:
        durations = exercise(client, f"{prefix}/a")
        print(f"paused={which} max_call={max(durations):.2f}s")
        assert max(durations) < TIMEOUT
        # the watch on the hung member was moved off it: one error, resync
        until(lambda: watched.ended, 20, "watch on the paused member ended")
        with transport(*order) as fresh:  # paused member listed first
            durations = exercise(fresh, f"{prefix}/b", 3)
            print(f"paused={which} fresh max_call={max(durations):.2f}s")
            assert max(durations) < TIMEOUT
    finally:
        cluster.resume(victim)
        client.close()
    assert len(watched.ended) == 1


# ----------------------------------------------------------------------------- auth


def etcdctl(server: EtcdServer, *args: str) -> None:
    subprocess.run(
        ["etcdctl", f"--endpoints={server.endpoint}", *args],
        check=True,
        capture_output=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")
def test_auth_tokens_are_renewed(prefix: str) -> None:
    with EtcdServer(extra_args=("--auth-token-ttl", "1")) as server:
        etcdctl(server, "user", "add", "root:secret")
        etcdctl(server, "auth", "enable")
        with transport(server.endpoint, user="root", password="secret") as client:
            client.put(f"{prefix}/k", "1")
            seen = Recorder()
            client.watch(f"{prefix}/k", None, None, seen)
            time.sleep(3)  # the simple token expires after 1 s unused
            assert client.range(f"{prefix}/k").kvs[0].value == b"1"
            client.put(f"{prefix}/k", "2")
            until(lambda: seen.events, 5, "watch event with auth")
        with transport(server.endpoint, user="root", password="wrong") as client:
            started = time.monotonic()
            with pytest.raises(EtcdError) as info:
                client.range(f"{prefix}/k")
            assert time.monotonic() - started < 2
            assert "authentication failed" in str(info.value)
            assert not isinstance(info.value, EtcdUnavailable)


# ----------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Pem:
    """What the transport needs for TLS (fleetpy.registry.tls.TlsMaterial in real use)."""

    root_certificates: bytes | None
    certificate_chain: bytes | None
    private_key: bytes | None


def test_tls_with_client_certificate(tmp_path: Path, prefix: str) -> None:
    tls = EtcdTls.generate(tmp_path / "pki")
    other = EtcdTls.generate(tmp_path / "other")
    with EtcdServer(tls=tls) as server:
        assert server.endpoint.startswith("https://")
        material = Pem(
            tls.ca_file.read_bytes(),
            tls.client_cert_file.read_bytes(),
            tls.client_key_file.read_bytes(),
        )
        with transport(server.endpoint, tls=material) as client:
            seen = Recorder()
            client.watch(f"{prefix}/k", None, None, seen)
            client.put(f"{prefix}/k", "secret")
            assert client.range(f"{prefix}/k").kvs[0].value == b"secret"
            until(lambda: seen.events, 5, "watch event over TLS")
        wrong_ca = Pem(
            other.ca_file.read_bytes(),
            tls.client_cert_file.read_bytes(),
            tls.client_key_file.read_bytes(),
        )
        with transport(server.endpoint, tls=wrong_ca, timeout=2.0) as client:
            # Not retried until the deadline: no retry can fix a certificate.
            with pytest.raises(EtcdRefused) as info:
                client.range(f"{prefix}/k")
            assert str(info.value) == (
                f"etcd at {server.endpoint}: TLS handshake failed: etcd's certificate is not "
                "trusted (unable to get local issuer certificate)"
            )
            with pytest.raises(EtcdRefused, match="TLS handshake failed"):
                client.watch(f"{prefix}/k", None, None, Recorder())
        with pytest.raises(ValueError):  # gRPC would abort the process
            transport(
                server.endpoint,
                tls=Pem(material.root_certificates, material.certificate_chain, None),
            )


# ----------------------------------------------------------------------------- reconnect

OUTAGE = 20.0


def test_long_lived_transports_reconnect_within_a_second_of_etcd(prefix: str) -> None:
    """etcd down 20 s then back on the same data dir: every long-lived transport in
    this process (and a new one) succeeds within ~1 s of etcd being healthy.
    Measured in bench/bench_reconnect.py; here only a generous bound."""
    with EtcdServer() as server:
        clients = [transport(server.endpoint, timeout=1.0) for _ in range(5)]
        watchers = [Recorder() for _ in clients]
        for client, watcher in zip(clients, watchers):
            client.put(f"{prefix}/k", "1")
            client.watch(f"{prefix}/k", None, None, watcher)
        first_ok: dict[int, float] = {}
        stop = threading.Event()

        def poll(index: int, client: EtcdTransport) -> None:
            while not stop.is_set():
                try:
                    client.range(f"{prefix}/k")
                except EtcdError:
                    continue
                if back_at and index not in first_ok:
                    first_ok[index] = time.monotonic()
                time.sleep(0.01)

        back_at: list[float] = []
        server.kill()
        threads = [
            threading.Thread(target=poll, args=(i, c), daemon=True) for i, c in enumerate(clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(OUTAGE)
        server.restart()
        back_at.append(time.monotonic())
        with transport(server.endpoint, timeout=3.0) as fresh:
            fresh.range(f"{prefix}/k")
            fresh_latency = time.monotonic() - back_at[0]
        until(lambda: len(first_ok) == len(clients), 10, "every transport back")
        stop.set()
        for thread in threads:
            thread.join()
        latencies = sorted(max(0.0, t - back_at[0]) for t in first_ok.values())
        print(
            f"outage={OUTAGE:g}s reconnect after healthy: "
            f"max={latencies[-1]:.2f}s min={latencies[0]:.2f}s fresh={fresh_latency:.2f}s"
        )
        assert latencies[-1] < 3.0 and fresh_latency < 3.0
        # watches ended with the outage; new ones work at once
        assert all(len(w.ended) == 1 for w in watchers)
        seen = Recorder()
        clients[0].watch(f"{prefix}/k", None, None, seen)
        clients[1].put(f"{prefix}/k", "2")
        until(lambda: seen.events, 3, "watch after the outage")
        for client in clients:
            client.close()


def test_messages_name_every_endpoint() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with transport(dead, timeout=1.0) as client:
        with pytest.raises(EtcdUnavailable) as info:
            client.put("/k", "v")
    assert re.fullmatch(
        rf"cannot reach etcd at {re.escape(dead)} \(connection refused\) "
        r"after 1s",
        str(info.value),
    )
    assert [f.url for f in info.value.failures] == [dead]
