"""`fleetpy api`: fleet's HTTP API v1 served from one watch-fed view of the cluster.

messages: requests and responses as plain data; fleetv1: fleet's routes as handlers of them;
auth: who may use a TCP listener; server: sockets, TLS and the route table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import control
from ..log import log_event
from ..metadata import MetadataChange
from ..registry import Registry
from ..states import DesiredState
from ..view import LiveView
from .fleetv1 import FleetV1
from .server import ApiServer, Route, ServerOptions


@dataclass(frozen=True)
class RegistryWriter:
    """fleet's API writes, through the same library calls as the CLI's verbs."""

    registry: Registry

    def put_unit(
        self, name: str, text: str | None, desired: DesiredState | None
    ) -> control.PutResult:
        return control.put_unit(self.registry, name, text, desired)

    def destroy_unit(self, name: str) -> bool:
        return control.destroy_unit(self.registry, name)

    def change_metadata(self, changes: Sequence[MetadataChange]) -> int:
        revision = self.registry.change_metadata(changes)
        if changes:
            log_event(
                "machine_metadata_patched",
                machines=",".join(sorted({c.machine for c in changes})),
                changes=len(changes),
            )
        return revision


def fleet_routes(live: LiveView, registry: Registry) -> list[Route]:
    handler = FleetV1(live, RegistryWriter(registry))
    # fleet served the same API under both prefixes.
    return [Route("/fleet/v1", handler), Route("/v1-alpha", handler)]


def build(
    registry: Registry, options: ServerOptions, extra_routes: Sequence[Route] = ()
) -> tuple[ApiServer, LiveView]:
    """The server and its view (following); `extra_routes` adds e.g. /metrics or /."""
    live = LiveView(registry, contents=True).follow()
    try:
        server = ApiServer(options, [*fleet_routes(live, registry), *extra_routes])
    except BaseException:
        live.close()
        raise
    return server, live


__all__ = ["ApiServer", "Route", "ServerOptions", "build", "fleet_routes"]
