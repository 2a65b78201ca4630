"""`fleetpy api`: fleet's HTTP API v1 served from one watch-fed view of the cluster.

messages: requests and responses as plain data; fleetv1: fleet's routes as handlers of them;
audit: fleetpy's own /fleetpy/v1/units/<name>/history; auth: who may use a TCP listener;
server: sockets, TLS and the route table; dashboard (with dashboard_model, sse and
static/): the read-only page at / and its server-sent events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..client import operations
from ..client.history import unit_history
from ..config import ApiSettings
from ..live_view import LiveView
from ..log import log_event
from ..metadata import MetadataChange
from ..registry.roles import OperatorRegistry
from ..states import DesiredState
from .audit import PREFIX, AuditRoute
from .dashboard import DashboardFeed
from .fleetv1 import FleetV1
from .server import ApiServer, Route


@dataclass(frozen=True)
class RegistryWriter:
    """fleet's API writes, through the same library calls as the CLI's verbs."""

    registry: OperatorRegistry

    def put_unit(
        self, name: str, text: str | None, desired: DesiredState | None
    ) -> operations.PutResult:
        return operations.put_unit(self.registry, name, text, desired)

    def destroy_unit(self, name: str) -> bool:
        return operations.destroy_unit(self.registry, name)

    def change_metadata(self, changes: Sequence[MetadataChange]) -> int:
        revision = self.registry.change_metadata(changes)
        if changes:
            log_event(
                "machine_metadata_patched",
                machines=",".join(sorted({c.machine for c in changes})),
                changes=len(changes),
            )
        return revision


def fleet_routes(live: LiveView, registry: OperatorRegistry) -> list[Route]:
    handler = FleetV1(live, RegistryWriter(registry))
    history = AuditRoute(lambda name: unit_history(registry, name))
    # fleet served the same API under both prefixes; fleetpy's own routes beside it.
    return [Route("/fleet/v1", handler), Route("/v1-alpha", handler), Route(PREFIX, history)]


def serve_view(
    server: ApiServer, registry: OperatorRegistry, extra_routes: Sequence[Route] = ()
) -> LiveView:
    """Read the cluster into a live view (following), then mount on `server` fleet's
    routes, the dashboard (closed with the server) and `extra_routes` (e.g. /metrics)."""
    live = LiveView(registry, contents=True).follow()
    try:
        feed = DashboardFeed(live, registry).start()
    except BaseException:
        live.close()
        raise
    server.on_close(feed.close)
    server.mount([*fleet_routes(live, registry), *feed.routes(), *extra_routes])
    return live


def build(
    registry: OperatorRegistry, options: ApiSettings, extra_routes: Sequence[Route] = ()
) -> tuple[ApiServer, LiveView]:
    """The server and its view (following). The options are checked and the socket bound
    first, so a bad --listen or credential file fails before etcd is asked anything."""
    server = ApiServer(options)
    try:
        live = serve_view(server, registry, extra_routes)
    except BaseException:
        server.close()
        raise
    return server, live


__all__ = ["ApiServer", "Route", "build", "fleet_routes", "serve_view"]
