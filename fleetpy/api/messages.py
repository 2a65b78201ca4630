"""Requests and responses as the API's handlers see them: plain data, no sockets, so the
handlers are pure functions that table tests can call."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str  # decoded path below the route's prefix, e.g. "/units/a.service"
    query: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    body: bytes = b""
    content_type: str = ""
    read_only: bool = False  # the caller's credentials allow no writes
    last_event_id: str = ""  # an event stream's client reconnecting: the last id it read

    def param(self, name: str) -> str | None:
        values = self.query.get(name, ())
        return values[0] if values else None


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()  # more response headers (e.g. the dashboard's CSP)
    # A body written piece by piece as the iterator yields, until it ends or the client or
    # the server goes (server-sent events); `body` is then unused.
    stream: Iterator[bytes] | None = field(default=None, compare=False)


def json_response(status: int, data: Any) -> ApiResponse:
    return ApiResponse(status, json.dumps(data, separators=(",", ":")).encode())


def error_response(status: int, message: str) -> ApiResponse:
    """fleet's error body: {"error": {"code": N, "message": "..."}}."""
    return json_response(status, {"error": {"code": status, "message": message}})


def no_content() -> ApiResponse:
    return ApiResponse(204, b"", "")
