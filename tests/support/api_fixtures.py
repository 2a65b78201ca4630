"""The `fleetpy api` server fixture and a client for its unix socket, shared by the API's
test modules (test_api_server, test_api_hostile, test_api_scale, test_dashboard)."""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fleetpy.api import ApiServer, build
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.config import ApiSettings
from fleetpy.live_view import LiveView
from fleetpy.registry import Registry, RegistryConfig

Api = Callable[..., tuple[ApiServer, LiveView]]


@pytest.fixture
def api(registry_config: RegistryConfig) -> Iterator[Api]:
    """api(**ApiSettings) -> (server, live view): served in a thread, closed after the test."""
    made: list[tuple[ApiServer, LiveView, Registry]] = []

    def make(**options: Any) -> tuple[ApiServer, LiveView]:
        registry = Registry(registry_config)
        server, live = build(registry, ApiSettings(**options))
        made.append((server.start(), live, registry))
        return server, live

    yield make
    for server, live, registry in made:
        server.close()
        live.close()
        registry.close()


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, raw, all_headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, json.loads(data) if data else None


def etcd_requests(etcd: EtcdServer) -> int:
    """Unary requests etcd has handled (reads and writes; watches are streams)."""
    total = 0
    for line in etcd.metrics().splitlines():
        match = re.match(r'grpc_server_handled_total\{.*grpc_method="(\w+)".*\} (\S+)', line)
        if match and match.group(1) in ("Range", "Txn", "Put", "DeleteRange"):
            total += int(float(match.group(2)))
    return total
