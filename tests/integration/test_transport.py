"""fleetpy's etcd transport against real etcd: operations, watches, failover, reconnect.

Here: the tests that need the session's etcd or a short-lived helper process (README "Tests"); the others are in
tests/system/test_transport.py, tests/pure/test_transport.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.errors import RegistryError
from fleetpy.registry.transport import (
    Compare,
    DeleteOp,
    DeleteResult,
    EtcdCompacted,
    EtcdError,
    EtcdTransport,
    EventKind,
    GetOp,
    PutOp,
    PutResult,
    RangeResult,
    WatchEnded,
    WatchResponse,
    prefix_range_end,
)

from support.etcd_transport import TIMEOUT, Recorder, transport
from support.waiting import until


@pytest.fixture
def client(etcd: EtcdServer) -> Iterator[EtcdTransport]:
    with transport(etcd.endpoint) as t:
        yield t


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
    delivered_so_far(client, prefix)
    assert len(seen.items) == count and seen.ended == []
    cancel()  # twice is harmless


def delivered_so_far(client: EtcdTransport, prefix: str) -> None:
    """Returns once the client's watch stream has delivered every event of the writes
    made before: a watch of its own sees a put made after them (the client's watches
    share one stream, which etcd and the client deliver in revision order)."""
    marker = Recorder()
    cancel = client.watch(f"{prefix}/marker", None, None, marker)
    client.put(f"{prefix}/marker", "1")
    until(lambda: marker.events, 5, "the marker's event")
    cancel()


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
    delivered_so_far(client, prefix)
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
    assert len(seen.items) == 1  # the ended watch got nothing more, not even k=3


def test_close_is_silent_and_ends_watches_without_callbacks(
    etcd: EtcdServer, prefix: str, capfd: pytest.CaptureFixture[str]
) -> None:
    client = transport(etcd.endpoint)
    seen = Recorder()
    client.watch(f"{prefix}/", prefix_range_end(f"{prefix}/"), None, seen)
    client.lease_keepalive_once(client.lease_grant(5).id)
    client.close()
    time.sleep(0.3)  # the point: a window for a late callback (none may come)
    assert seen.items == []
    with pytest.raises(EtcdError):
        client.range(f"{prefix}/x")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


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
