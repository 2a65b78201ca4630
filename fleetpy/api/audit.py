"""fleetpy's own route beside fleet's API: GET /fleetpy/v1/units/<name>/history, a unit's
audit trail (the JSON of `fleetpy history -o json`), read from etcd at each request (the
live view does not follow trails: nothing watches them)."""

from __future__ import annotations

from collections.abc import Callable

from ..client.history import UnitHistory, history_json
from ..errors import FleetpyError, RegistryError, UnitNameError, UnknownUnitError
from .messages import ApiRequest, ApiResponse, error_response, json_response

PREFIX = "/fleetpy/v1"


class AuditRoute:
    """The handler of PREFIX; READ gives a unit's history (fleetpy.client.history)."""

    def __init__(self, read: Callable[[str], UnitHistory]) -> None:
        self.read = read

    def __call__(self, request: ApiRequest) -> ApiResponse:
        parts = request.path.split("/")[1:]
        if len(parts) != 3 or parts[0] != "units" or parts[2] != "history" or not parts[1]:
            return error_response(404, "not found")
        if request.method not in ("GET", "HEAD"):
            return error_response(405, f"method {request.method} not allowed on {request.path}")
        try:
            return json_response(200, history_json(self.read(parts[1])))
        except (UnknownUnitError, UnitNameError) as exc:
            return error_response(404, str(exc))
        except RegistryError as exc:
            return error_response(503, str(exc))
        except FleetpyError as exc:
            return error_response(400, str(exc))


__all__ = ["PREFIX", "AuditRoute"]
