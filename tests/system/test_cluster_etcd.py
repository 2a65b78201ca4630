"""The throwaway etcd servers the tests and benchmarks use: one member and a cluster."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from fleetpy.cluster.etcd import EtcdCluster, EtcdServer
from fleetpy.registry.transport import Endpoint, EtcdTransport


def client(*urls: str) -> EtcdTransport:
    endpoints = []
    for url in urls:
        parsed = urlparse(url)
        assert parsed.hostname is not None and parsed.port is not None
        endpoints.append(Endpoint(parsed.hostname, parsed.port))
    return EtcdTransport(endpoints, timeout=5.0)


def test_server_kill_and_restart_keep_data_and_ports() -> None:
    server = EtcdServer().start()
    try:
        url, data_dir = server.endpoint, server.data_dir
        with client(url) as etcd:
            etcd.put("/k", "kept")
        server.kill()
        assert not server.running and not server.healthy()
        server.restart()
        assert server.endpoint == url and server.data_dir == data_dir and server.healthy()
        with client(url) as etcd:
            assert etcd.range("/k").kvs[0].value == b"kept"
        server.pause()
        assert not server.healthy()
        server.resume()
        server.wait_healthy(5)
    finally:
        server.stop()
    assert data_dir is not None and not Path(data_dir).exists()


def test_cluster_of_three_survives_losing_any_one_member() -> None:
    with EtcdCluster(3) as cluster:
        assert len(cluster.endpoints) == len(set(cluster.endpoints)) == 3
        assert cluster.leader() is not None
        base = cluster.base_dir
        with client(*cluster.endpoints) as etcd:
            etcd.put("/k", "0")
        for index in range(3):
            cluster.kill(index)
            survivors = [u for i, u in enumerate(cluster.endpoints) if i != index]
            with client(*survivors) as etcd:
                etcd.put("/k", str(index + 1))
            cluster.restart(index)
            # the restarted member caught up from its own data dir and the others
            with client(cluster.endpoints[index]) as etcd:
                assert etcd.range("/k").kvs[0].value == str(index + 1).encode()
        leader = cluster.leader()
        assert leader is not None
        follower = (leader + 1) % 3
        cluster.pause(follower)  # a paused leader is the transport's business (failover)
        with client(cluster.endpoints[leader]) as etcd:
            etcd.put("/k", "paused")
        cluster.resume(follower)
        cluster.wait_healthy()
    assert base is not None and not base.exists()
