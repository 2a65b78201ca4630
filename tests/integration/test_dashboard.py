"""The dashboard of `fleetpy api` (fleetpy/api/dashboard.py): in a real headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium) against a real etcd, an engine and
simulated hosts in this process; and over plain HTTP: who may read it, and its server-sent
events following the engine leader and deployment records.

The browser test writes its screenshots to its tmp_path (dashboard.png, and
dashboard-moving.png taken while a dead machine's units move) and copies them to
test-artifacts/ at the top of the checkout when that folder can be made and written.


Here: the tests that need the session's etcd or a short-lived helper process (README "Tests"); the others are in
tests/system/test_dashboard.py."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from fleetpy.api import ApiServer, sse
from fleetpy.api.dashboard import DashboardFeed
from fleetpy.cluster.etcd import EtcdTls
from fleetpy.errors import RegistryError
from fleetpy.live_view import LiveView
from fleetpy.model.changes import UnitChange
from fleetpy.model.events import WatchBatch
from fleetpy.model.records import DeploymentRecord, DeploymentSession, MachineRecord, UnitState
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitfile.unit import content_hash

from support.api_fixtures import Api, UnixConnection
from support.dashboard import READ_TOKEN, WRITE_TOKEN, EventReader
from support.sim_cluster import Cluster
from support.waiting import until


@pytest.fixture
def tls(tmp_path: Path) -> EtcdTls:
    return EtcdTls.generate(tmp_path / "tls", client_name="dashboard")


def https(server: ApiServer, tls: EtcdTls) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    return http.client.HTTPSConnection("127.0.0.1", server.address[1], context=context, timeout=10)


def get(
    server: ApiServer, tls: EtcdTls, path: str, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = https(server, tls)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read() if response.getheader("Content-Type") != "text/event-stream" else b""
    return response.status, response, body


def first_view(response: http.client.HTTPResponse) -> dict[str, Any]:
    """The first message of an event stream: a snapshot, as the document it carries."""
    reader = EventReader(response)
    document = reader.next()
    assert reader.snapshots == 1
    return document


# ----------------------------------------------------------------------------- over HTTP


def test_who_may_read_the_dashboard(
    dashboard: Callable[[], tuple[ApiServer, LiveView]], tls: EtcdTls
) -> None:
    server, _ = dashboard()
    # Without credentials: nothing but the script and style sheet (no cluster data in them).
    for path in ("/", "/events", "/dashboard.json", "/?token=wrong-0123456789abcdef"):
        assert get(server, tls, path)[0] == 401, path
    status, response, script = get(server, tls, "/assets/dashboard.js")
    assert status == 200 and response.getheader("Content-Type", "").startswith("text/javascript")
    assert b"innerHTML" not in script  # data reaches the page as text only
    assert get(server, tls, "/assets/dashboard.css")[0] == 200
    assert get(server, tls, "/assets/nope.js")[0] == 404

    # A read-only token as a header, as ?token= (which sets the cookie), or as that cookie.
    bearer = {"Authorization": f"Bearer {READ_TOKEN}"}
    status, response, page = get(server, tls, "/", bearer)
    assert status == 200 and b"assets/dashboard.js" in page
    assert "script-src 'self'" in response.getheader("Content-Security-Policy", "")
    assert response.getheader("Cache-Control") == "no-store"
    assert response.getheader("Set-Cookie") is None
    status, response, _ = get(server, tls, f"/?token={READ_TOKEN}")
    cookie = response.getheader("Set-Cookie", "")
    # Under TLS a __Host- cookie: Secure, Path=/ and no Domain, or the browser drops it.
    assert status == 200 and cookie.startswith(f"__Host-fleetpy_token={READ_TOKEN};")
    assert all(flag in cookie for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/"))
    assert "domain" not in cookie.lower()
    # Another site's cookie that does not parse (localhost is shared) loses ours nothing.
    with_cookie = {"Cookie": f'other={{"a": 1}}; __Host-fleetpy_token={READ_TOKEN}'}
    status, response, _ = get(server, tls, "/events", with_cookie)
    assert status == 200 and response.getheader("Content-Type") == "text/event-stream"
    assert response.getheader("Cache-Control") == "no-store"
    doc = first_view(response)
    assert doc["units"] == [] and doc["machines"] == [] and "leader" in doc
    response.close()
    status, response, body = get(server, tls, f"/dashboard.json?token={READ_TOKEN}")
    assert status == 200 and json.loads(body)["revision"] == doc["revision"]
    assert response.getheader("Cache-Control") == "no-store"  # cluster data
    spaced = {"Cookie": f"a=b c; __Host-fleetpy_token={READ_TOKEN}; z=1"}
    assert get(server, tls, "/dashboard.json", spaced)[0] == 200
    # Without TLS the cookie has another name: not taken under TLS.
    assert get(server, tls, "/dashboard.json", {"Cookie": f"fleetpy_token={READ_TOKEN}"})[0] == 401

    # The dashboard is read-only, and a token in a URL or cookie never reaches fleet's API.
    conn = https(server, tls)
    conn.request("POST", "/", b"", bearer)
    assert conn.getresponse().status == 405
    assert get(server, tls, f"/fleet/v1/units?token={READ_TOKEN}")[0] == 401
    read_cookie = {"Cookie": f"__Host-fleetpy_token={READ_TOKEN}"}
    assert get(server, tls, "/fleet/v1/units", read_cookie)[0] == 401
    assert get(server, tls, "/fleet/v1/units", {"Authorization": f"Bearer {WRITE_TOKEN}"})[0] == 200
    # A read-write token is not taken from a URL or a cookie at all, not even to read.
    for path, headers in (
        (f"/?token={WRITE_TOKEN}", {}),
        (f"/events?token={WRITE_TOKEN}", {}),
        ("/dashboard.json", {"Cookie": f"__Host-fleetpy_token={WRITE_TOKEN}"}),
    ):
        status, response, body = get(server, tls, path, headers)
        assert status == 401 and response.getheader("Set-Cookie") is None, path
        assert "use a read-only token" in json.loads(body)["error"]["message"]
    assert get(server, tls, "/?token=a%0d%0aSet-Cookie:%20x")[0] == 401  # no header injection
    # HEAD of the stream: its headers, and the connection is free at once.
    conn = https(server, tls)
    conn.request("HEAD", "/events", headers=bearer)
    head = conn.getresponse()
    assert head.status == 200 and head.getheader("Content-Type") == "text/event-stream"


def test_without_tls_the_cookie_is_fleetpy_token(
    api: Api,
    tmp_path: Path,
) -> None:
    """An --insecure listener with read-only tokens: the cookie keeps its plain name (a
    __Host- cookie needs Secure, which plain HTTP cannot set)."""
    (tmp_path / "ro").write_text(READ_TOKEN + "\n")
    server, _ = api(listen="127.0.0.1:0", insecure=True, read_only_token_file=str(tmp_path / "ro"))
    conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    conn.request("GET", f"/dashboard.json?token={READ_TOKEN}")
    response = conn.getresponse()
    response.read()
    cookie = response.getheader("Set-Cookie", "")
    assert response.status == 200 and cookie.startswith(f"fleetpy_token={READ_TOKEN};")
    assert "Secure" not in cookie and "HttpOnly" in cookie
    conn.request("GET", "/dashboard.json", headers={"Cookie": f"fleetpy_token={READ_TOKEN}"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200


class _HeldRegistry:
    """A registry whose second leader-and-deployments read (a resync in the feed's thread)
    waits for `release`; it counts the watches started and cancelled."""

    def __init__(self) -> None:
        self.reads = 0
        self.resyncing = threading.Event()
        self.release = threading.Event()
        self.live: set[int] = set()
        self.started = 0

    def read_leader_and_deployments(self) -> tuple[None, dict[str, DeploymentRecord], int]:
        self.reads += 1
        if self.reads == 2:
            self.resyncing.set()
            assert self.release.wait(30)
        return None, {}, 1

    def _watch(self, callback: Any, start: int) -> Callable[[], None]:
        self.started += 1
        watch = self.started
        self.live.add(watch)
        return lambda: self.live.discard(watch)

    watch_engine = watch_deployments = _watch


def test_closing_the_feed_mid_resync_leaves_no_watch(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() while the feed's thread reads for a resync: the watches that resync starts
    once its read returns are cancelled too."""
    held = _HeldRegistry()
    live = LiveView(registry)
    try:
        feed = DashboardFeed(live, cast(Registry, held)).start()
        assert held.live == {1, 2}
        feed._on(WatchBatch((), 0, error=RuntimeError("watch broke")))
        assert held.resyncing.wait(30)  # the thread is in the read; its old watches gone
        assert held.live == set()
        thread = feed._thread
        assert thread is not None
        join = thread.join

        def releasing_join(timeout: float | None = None) -> None:
            held.release.set()  # the read returns now, while close() waits for the thread
            join(timeout)

        monkeypatch.setattr(thread, "join", releasing_join)
        feed.close()
        held.release.set()
        join(10)
        assert not thread.is_alive()
        assert held.started == 4 and held.live == set()
    finally:
        live.close()


def test_the_stream_follows_the_leader_and_deployments(
    api: Api,
    registry_config: RegistryConfig,
    tmp_path: Path,
) -> None:
    """The feed's own watches: an engine elected, and gone, after the dashboard started;
    a deployment's record written by an apply."""
    sock = str(tmp_path / "api.sock")
    api(listen=sock)
    conn = UnixConnection(sock)
    conn.request("GET", "/events")
    stream = conn.getresponse()
    reader = EventReader(stream)
    assert reader.next()["leader"] is None
    cluster = Cluster(registry_config)
    try:
        engine = cluster.engine()
        until(lambda: reader.next()["leader"] == engine.candidate, what="leader shown")
        session = DeploymentSession(DeploymentRecord("shop"))
        cluster.registry.update_deployment(session, applying="c2", message="")
        until(
            lambda: (
                [(d["name"], d["applying"], d["target"]) for d in reader.next()["deployments"]]
                == [("shop", "c2", "c2")]
            ),
            what="the deployment shown",
        )
        engine.stop()
        until(lambda: reader.next()["leader"] is None, what="no leader shown")
    finally:
        cluster.close()
    stream.close()


def _events(
    sock: str, last_event_id: str = "", document: dict[str, Any] | None = None
) -> EventReader:
    conn = UnixConnection(sock)
    conn.request(
        "GET", "/events", headers={"Last-Event-ID": last_event_id} if last_event_id else {}
    )
    response = conn.getresponse()
    assert response.status == 200
    return EventReader(response, document)


def test_a_change_is_sent_as_a_delta_of_what_changed(
    api: Api, registry: Registry, tmp_path: Path
) -> None:
    """300 units on the dashboard; one reported active: the stream sends a delta with that
    unit and its machine alone (not the 300 units again), which the client applies."""
    sock = str(tmp_path / "api.sock")
    _, live = api(listen=sock)
    text = "[Service]\nExecStart=/bin/sleep 1000\n"
    registry.change_units(
        [UnitChange(f"u{i:03d}.service", None, text, content_hash(text)) for i in range(300)]
    )
    lease = registry.grant_lease(30)
    registry.register_machine(MachineRecord("m1", "10.0.0.1"), lease)
    until(lambda: len(live.current().units) == 300 and live.current().machines, what="the view")
    reader = _events(sock)
    until(lambda: len(reader.next()["units"]) == 300, what="the snapshot with every unit")
    snapshot_size = len(json.dumps(reader.document))
    sizes = len(reader.deltas)
    registry.report_states([UnitState("u007.service", "m1", "loaded", "active", "running")], lease)
    document = reader.next()
    while not any(u["active"] == "active" for u in document["units"]):
        document = reader.next()
    assert reader.snapshots == 1  # deltas only, after the first snapshot
    last = reader.deltas[-1]
    assert last < 1500 < snapshot_size / 20, (last, snapshot_size)
    assert [u["name"] for u in document["units"] if u["active"]] == ["u007.service"]
    assert [m["units"] for m in document["machines"]] == [["u007.service"]]
    assert len(reader.deltas) > sizes


def test_a_client_that_missed_deltas_gets_a_snapshot(
    api: Api, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser reconnecting with its Last-Event-ID gets the deltas it missed while they
    are kept, and a snapshot once they are not (or from another server); both end at the
    document a new client gets."""
    monkeypatch.setattr(sse, "KEEP_MESSAGES", 3)
    sock = str(tmp_path / "api.sock")
    _, live = api(listen=sock)
    text = "[Service]\nExecStart=/bin/sleep 1000\n"
    first = _events(sock)
    kept = dict(first.next())
    seen = first.last_id

    def submit(name: str) -> None:
        revision = len(live.current().units)
        registry.change_units([UnitChange(name, None, text, content_hash(text))])
        until(lambda: len(live.current().units) > revision, what=f"{name} in the view")
        until(lambda: name in [u["name"] for u in first.next()["units"]], what=f"{name} sent")

    submit("a.service")
    back = _events(sock, seen, kept)  # missed one delta: it is kept
    assert [u["name"] for u in back.next()["units"]] == ["a.service"]
    assert back.snapshots == 0 and len(back.deltas) >= 1
    for name in ("b.service", "c.service", "d.service", "e.service"):
        submit(name)
    late = _events(sock, back.last_id, back.document)  # missed four; the log keeps three
    assert len(late.next()["units"]) == 5 and late.snapshots == 1
    other = _events(sock, "feedface." + back.last_id.partition(".")[2])
    assert other.next() == _events(sock).next() == first.document
    assert other.snapshots == 1


class _FailingOnce(_HeldRegistry):
    """A registry whose second leader-and-deployments read fails (etcd away)."""

    def read_leader_and_deployments(self) -> tuple[None, dict[str, DeploymentRecord], int]:
        self.reads += 1
        if self.reads == 2:
            raise RegistryError("etcd is away")
        return None, {}, 1


def test_a_failed_refresh_loses_no_change(registry: Registry) -> None:
    """A refresh that fails (the leader's re-read, etcd away) after taking the units a
    change touched: the next one rebuilds, so the change is still shown. (The view and
    the feed are stepped by hand here, not by their threads.)"""
    live = LiveView(registry)
    held = _FailingOnce()
    feed = DashboardFeed(live, cast(Registry, held))
    live.subscribe(feed._on_view)
    try:
        feed._refresh()  # the first read
        text = "[Service]\nExecStart=/bin/sleep 1000\n"
        registry.change_units([UnitChange("a.service", None, text, content_hash(text))])
        until(lambda: "a.service" in live.update().units, what="the unit in the view")
        assert feed._units == {"a.service"}
        feed._on(WatchBatch((), 0, error=RuntimeError("watch broke")))  # next: a re-read
        with pytest.raises(RegistryError):
            feed._refresh()
        feed._refresh()
        assert b"a.service" in feed._snapshot()[1][1]
    finally:
        feed.close()
        live.close()
