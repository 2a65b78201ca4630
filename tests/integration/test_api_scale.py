"""One view for any number of clients (issue [8] item 5): 100 dashboards on /events and 20
API clients polling GET /fleet/v1/units cost etcd nothing once the view is warm, and a
change costs the server the same few requests however many dashboards watch it.

Counted, not timed: etcd's own request counter (grpc_server_handled_total, every client of
this etcd) and the server's registry's count of the requests it sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.client import operations
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.registry import Registry
from fleetpy.registry.roles import Connected

from support.api_fixtures import Api, UnixConnection, etcd_requests
from support.dashboard import EventReader
from support.waiting import until

DASHBOARDS = 100
POLLERS = 20
POLLS = 25  # each poller's requests
UNITS = 50
UNIT = "[Service]\nExecStart=/bin/sleep 1000\n"


class Dashboard:
    """One SSE client: reads the snapshot and the deltas in a thread, keeps the document."""

    def __init__(self, sock: str) -> None:
        self.conn = UnixConnection(sock)
        self.conn.request("GET", "/events")
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.reader = EventReader(self.response)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                self.reader.next()
        except (OSError, ValueError, AssertionError):
            pass  # closed by the test

    def units(self) -> int:
        document = self.reader.document
        return -1 if document is None else len(document["units"])

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def dashboards() -> Iterator[list[Dashboard]]:
    made: list[Dashboard] = []
    yield made
    for dashboard in made:
        dashboard.close()


def poll(sock: str, failures: list[str]) -> None:
    conn = UnixConnection(sock)
    for _ in range(POLLS):
        conn.request("GET", "/fleet/v1/units")
        response = conn.getresponse()
        body = json.loads(response.read())
        if response.status != 200 or len(body["units"]) != UNITS:
            failures.append(f"{response.status} {len(body.get('units', []))} units")
    conn.close()


def server_requests(registry: Connected) -> int:
    return sum(endpoint.requests for endpoint in registry.etcd_stats())


def test_many_clients_share_one_view(
    api: Api,
    registry: Registry,
    etcd: EtcdServer,
    dashboards: list[Dashboard],
    tmp_path: Path,
) -> None:
    sock = str(tmp_path / "api.sock")
    _, live = api(listen=sock)
    server_registry = live.registry
    for i in range(UNITS):
        operations.put_unit(registry, f"u{i}.service", UNIT, None)
    until(lambda: len(live.current().units) == UNITS, what="the view to hold every unit")
    until(lambda: len(live.texts) == 1, what="the view to hold the units' text")
    warm_etcd, warm_server = etcd_requests(etcd), server_requests(server_registry)
    assert warm_etcd > 0 and warm_server > 0  # the counters count (the puts, the view's reads)

    dashboards.extend(Dashboard(sock) for _ in range(DASHBOARDS))
    until(
        lambda: all(d.units() == UNITS for d in dashboards),
        what="every dashboard to get the document",
    )
    failures: list[str] = []
    pollers = [threading.Thread(target=poll, args=(sock, failures)) for _ in range(POLLERS)]
    for thread in pollers:
        thread.start()
    for thread in pollers:
        thread.join(120)
    assert failures == []
    # 100 streams opened and 500 polls answered: not one etcd request for them.
    assert etcd_requests(etcd) == warm_etcd
    assert server_requests(server_registry) == warm_server

    # A change reaches every dashboard, for what one would cost the server: the new
    # content's text, read once, whatever the number of clients.
    operations.put_unit(registry, "new.service", UNIT.replace("1000", "2000"), None)
    until(
        lambda: all(d.units() == UNITS + 1 for d in dashboards),
        what="every dashboard to see the new unit",
    )
    assert server_requests(server_registry) - warm_server <= 2
