"""fleetpy's etcd transport built on given endpoints, and a watch callback that records what
it got (test_transport.py, every tier)."""

from __future__ import annotations

import threading
from urllib.parse import urlparse

from fleetpy.registry.transport import (
    Endpoint,
    EtcdTransport,
    TlsCredentials,
    WatchEnded,
    WatchResponse,
)

TIMEOUT = 5.0


def endpoint(url: str) -> Endpoint:
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    return Endpoint(parsed.hostname, parsed.port)


def transport(
    *urls: str,
    timeout: float = TIMEOUT,
    tls: TlsCredentials | None = None,
    user: str | None = None,
    password: str | None = None,
) -> EtcdTransport:
    return EtcdTransport(
        [endpoint(u) for u in urls], timeout=timeout, tls=tls, user=user, password=password
    )


class Recorder:
    """Collects watch callbacks from the stream's thread."""

    def __init__(self) -> None:
        self.items: list[WatchResponse | WatchEnded] = []
        self.lock = threading.Lock()

    def __call__(self, item: WatchResponse | WatchEnded) -> None:
        with self.lock:
            self.items.append(item)

    @property
    def events(self) -> list[tuple[str, bytes, bytes]]:
        with self.lock:
            return [
                (e.kind.value, e.key, e.value)
                for item in self.items
                if isinstance(item, WatchResponse)
                for e in item.events
            ]

    @property
    def ended(self) -> list[WatchEnded]:
        with self.lock:
            return [item for item in self.items if isinstance(item, WatchEnded)]
