"""test_transport.py's tests that need fleetpy or etcd processes of its own, TLS etcd, hosts or
tools of the machine (README "Tests"); what the module covers as a whole:
tests/integration/test_transport.py."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetpy.cluster.etcd import EtcdCluster, EtcdServer, EtcdTls
from fleetpy.registry.transport import (
    Compare,
    EtcdError,
    EtcdRefused,
    EtcdTransport,
    EtcdUnavailable,
    PutOp,
)

from support.etcd_transport import TIMEOUT, Recorder, transport
from support.waiting import until


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
        # Thrown away: killed, not stopped one by one (a member stopped last, without a
        # quorum, took up to 7 s to exit), then stop() removes the data dirs.
        for index in range(len(c.members)):
            c.kill(index)


def test_stream_break_gives_one_error_per_watch_then_a_new_stream(
    own_etcd: EtcdServer, prefix: str
) -> None:
    with transport(own_etcd.endpoint) as client:
        recorders = [Recorder() for _ in range(5)]
        for i, recorder in enumerate(recorders):
            client.watch(f"{prefix}/{i}", None, None, recorder)
        own_etcd.kill()
        until(lambda: all(r.ended for r in recorders), 10, "every watch ended")
        time.sleep(0.5)  # the point: a window for a second error (none may come)
        for recorder in recorders:
            assert len(recorder.items) == 1 and not recorder.ended[0].compacted
            assert "\n" not in str(recorder.ended[0].error)
        own_etcd.restart()
        after = Recorder()
        client.watch(f"{prefix}/new", None, None, after)
        client.put(f"{prefix}/new", "1")
        until(lambda: after.events, 5, "event on the new stream")
        assert all(len(r.items) == 1 for r in recorders)


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
        # The point: an outage long enough for gRPC's default reconnect backoff (1 s x 1.6
        # per attempt) to have grown far past the bound below, which capped backoff meets.
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
