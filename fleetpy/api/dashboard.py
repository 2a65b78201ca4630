"""The read-only dashboard of `fleetpy api`: a page at `/` kept current by server-sent events.

Routes (GET and HEAD only; nothing here writes):

  /                the page (HTML; its script and style sheet are under /assets/, public:
                   they hold no cluster data)
  /events          `text/event-stream`: a snapshot when the stream opens, then a delta
                   per change (what changed: units and machines set or gone, the
                   summary; see dashboard_model):
                       event: view                  event: delta
                       id: <epoch>.<N>              id: <epoch>.<N>
                       data: <document, "seq": N>   data: <delta N, one line of JSON>
                   a comment line (`: keepalive`) every 15 s while nothing changes. A
                   client too far behind (sse.Broadcast keeps the last 1,000 deltas), or
                   reconnecting with a Last-Event-ID no longer kept, gets a new snapshot;
                   one reconnecting in time gets the deltas it missed.
  /dashboard.json  the document once (scripts, the benchmark)

Access on a TCP listener: any bearer token (read-only tokens included) as the Authorization
header, or (a browser's EventSource sends no headers) a read-only token as `/?token=TOKEN`,
after which a cookie carries it to /events; see fleetpy.api.server.

Cost: one feed per server. It re-reads nothing per client: the live view's updates (which
say the units and machines they touched), and two watches of its own (the engine's leader
key, the deployment records) update one document by parts (dashboard_model.Dashboard: a
change costs what it touched), each delta serialized once, and every stream writes those
same bytes. etcd is read at start and again only after a watch broke.
"""

from __future__ import annotations

import functools
import threading
from importlib import resources
from typing import Any

from ..errors import FleetpyError
from ..live_view import LiveView, Touched, run_coalesced
from ..log import log_event
from ..model.events import DeploymentEvent, EngineEvent, WatchBatch
from ..model.records import ClusterView, DeploymentRecord
from ..registry.roles import OperatorRegistry
from .dashboard_model import Dashboard
from .messages import ApiRequest, ApiResponse, error_response
from .server import Route
from .sse import Broadcast, frame_json

EVENT = "view"  # a snapshot
DELTA = "delta"

# The page may run only its own script and style, talk only to its own server, and be
# framed by nobody; data reaches the DOM as text (textContent), never as markup.
_NO_STORE = ("Cache-Control", "no-store")  # cluster data, or a page fetched with ?token=
_PAGE_HEADERS = (
    _NO_STORE,
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),  # the page's URL may carry ?token=
    ("X-Frame-Options", "DENY"),
)
_ASSETS = {
    "/dashboard.js": "text/javascript; charset=utf-8",
    "/dashboard.css": "text/css; charset=utf-8",
}


@functools.cache
def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class DashboardFeed:
    """The dashboard's document, rebuilt when the view, the leader or a deployment
    changes, and published to every stream."""

    def __init__(self, live: LiveView, registry: OperatorRegistry) -> None:
        self.live = live
        self.registry = registry
        self.board = Dashboard()
        self._board_lock = threading.Lock()  # the board, and publishing its deltas in order
        self.broadcast = Broadcast(self._snapshot)
        self.leader: str | None = None
        self.deployments: dict[str, DeploymentRecord] = {}
        self.revision = 0  # of the last read of the leader and deployments
        self._lock = threading.Lock()
        self._pending: list[WatchBatch[Any]] = []
        self._stale = True  # the leader and deployments need a (re-)read
        self._full = True  # the board needs a rebuild (the view was read anew)
        self._units: set[str] = set()  # touched since the last refresh
        self._machines: set[str] = set()
        self._cancels: list[Any] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DashboardFeed:
        """Read what the view lacks, publish the first document, then follow in a thread."""
        self.live.subscribe(self._on_view)
        self._refresh()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        # The thread first: in the middle of a resync it starts watches of its own, which
        # only a cancel after it has ended reaches (and _resync cancels them itself when it
        # finishes after a join that gave up).
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._cancel()
        self.broadcast.close()

    # -- following

    def _on(self, batch: WatchBatch[Any]) -> None:
        with self._lock:
            if batch.error is not None:
                self._stale = True
            else:
                self._pending.append(batch)
        self._wake.set()

    def _on_view(self, view: ClusterView, touched: Touched | None) -> None:
        with self._lock:
            if touched is None:
                self._full = True
            else:
                self._units |= touched.units
                self._machines |= touched.machines
        self._wake.set()

    def _cancel(self) -> None:
        for cancel in self._cancels:
            cancel()
        self._cancels = []

    def _resync(self) -> None:
        self._cancel()
        leader, deployments, revision = self.registry.read_leader_and_deployments()
        with self._lock:
            self._pending.clear()
            self._stale = False
        self.leader, self.deployments, self.revision = leader, deployments, revision
        self._cancels = [
            self.registry.watch_engine(self._on, revision + 1),
            self.registry.watch_deployments(self._on, revision + 1),
        ]
        if self._stop.is_set():  # closed meanwhile, and close() may have stopped waiting
            self._cancel()

    def _refresh(self) -> None:
        with self._lock:
            stale = self._stale
            batches, self._pending = self._pending, []
            full, self._full = self._full, False
            units, self._units = self._units, set()
            machines, self._machines = self._machines, set()
        try:
            self._apply(stale, batches, full, units, machines)
        except BaseException:
            with self._lock:  # what it touched is not lost: everything again, next time
                self._full = True
            raise

    def _apply(
        self,
        stale: bool,
        batches: list[WatchBatch[Any]],
        full: bool,
        units: set[str],
        machines: set[str],
    ) -> None:
        if stale:
            self._resync()
        else:
            for batch in batches:
                if batch.revision <= self.revision:
                    continue
                for event in batch.events:
                    if isinstance(event, EngineEvent) and event.leader_changed:
                        self.leader = event.leader
                    elif isinstance(event, DeploymentEvent):
                        if event.record is None:
                            self.deployments.pop(event.name, None)
                        else:
                            self.deployments[event.name] = event.record
        # The view may already hold changes whose touched sets come with the next call:
        # those units are computed again then (from the same or a newer view).
        view = self.live.current()
        with self._board_lock:
            if full:
                self.board.rebuild(view, self.leader, self.deployments)
                self.broadcast.reset(self.board.seq)  # every stream: a new snapshot
                return
            delta = self.board.update(view, units, machines, self.leader, self.deployments)
            if delta is not None:
                number = self.board.seq
                message = b"".join(frame_json(DELTA, delta, self.broadcast.event_id(number)))
                self.broadcast.publish(number, message)

    def _snapshot(self) -> tuple[int, tuple[bytes, bytes, bytes]]:
        with self._board_lock:
            number = self.board.seq
            return number, frame_json(EVENT, self.board.snapshot(), self.broadcast.event_id(number))

    def _run(self) -> None:
        run_coalesced(self._wake, self._stop, self._refresh, self._failed)

    def _failed(self, error: FleetpyError) -> None:  # etcd away: the last document stays served
        log_event("dashboard_refresh_failed", error=error)
        with self._lock:
            self._stale = True

    # -- serving

    def page(self, request: ApiRequest) -> ApiResponse:
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "the dashboard is read-only")
        if request.path in ("", "/"):
            return ApiResponse(
                200, _static("dashboard.html"), "text/html; charset=utf-8", _PAGE_HEADERS
            )
        if request.path == "/events":
            stream = self.broadcast.stream(last_event_id=request.last_event_id)
            return ApiResponse(200, b"", "text/event-stream", stream=stream)
        if request.path == "/dashboard.json":
            with self._board_lock:
                document = self.board.snapshot()
            return ApiResponse(200, document, headers=(_NO_STORE,))
        return error_response(404, "not found")

    def routes(self) -> list[Route]:
        return [Route("", self.page, browser=True), Route("/assets", _asset, public=True)]


def _asset(request: ApiRequest) -> ApiResponse:
    content_type = _ASSETS.get(request.path)
    if content_type is None or request.method not in ("GET", "HEAD"):
        return error_response(404, "not found")
    return ApiResponse(
        200,
        _static(request.path.lstrip("/")),
        content_type,
        (("X-Content-Type-Options", "nosniff"),),
    )


__all__ = ["DELTA", "EVENT", "DashboardFeed"]
