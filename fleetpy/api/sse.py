"""Server-sent events: the framing, and one latest message fanned out to every stream.

A `Broadcast` holds only the newest message. Each stream sends it when it connects and then
whenever a newer one is published; a client too slow to read skips to the newest instead of
queueing (each message is a whole snapshot, so nothing in between is needed). Publishing
costs the same for 1 or 1,000 streams: the message is encoded once and the same bytes are
written to every connection. An idle stream gets a comment line every `heartbeat` seconds so
proxies and the server's own socket timeouts keep it open.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

HEARTBEAT_SECONDS = 15.0
# Sent first: how long (ms) a browser's EventSource waits before reconnecting.
RECONNECT_MS = 2000
HEARTBEAT = b": keepalive\n\n"


def frame(event: str, data: str, event_id: str | None = None) -> bytes:
    """One SSE message. Each line of `data` gets its own `data:` field (the spec's way of
    carrying newlines); event names and ids must be single lines."""
    if (
        "\n" in event
        or "\r" in event
        or (event_id is not None and ("\n" in event_id or "\r" in event_id))
    ):
        raise ValueError("an SSE event name or id cannot contain a line break")
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [
        f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ]
    return ("\n".join(lines) + "\n\n").encode()


def retry_frame(milliseconds: int = RECONNECT_MS) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


class Broadcast:
    """The newest message, and the streams waiting for the next one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._message: bytes | None = None
        self._sequence = 0  # bumped by each publish: a stream sends what it has not sent
        self._closed = False
        self._streams = 0

    def publish(self, message: bytes) -> None:
        with self._changed:
            self._message = message
            self._sequence += 1
            self._changed.notify_all()

    def latest(self) -> bytes | None:
        with self._changed:
            return self._message

    @property
    def streams(self) -> int:
        """Streams open now (for logs and tests)."""
        with self._changed:
            return self._streams

    def _news(self, sent: int) -> bool:
        """Something for a stream that sent message `sent` (under the lock)."""
        return self._closed or (self._sequence != sent and self._message is not None)

    def close(self) -> None:
        """End every stream (they return at once) and refuse new ones."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def stream(self, heartbeat: float = HEARTBEAT_SECONDS) -> Iterator[bytes]:
        """What one client receives: the retry hint, the newest message, each newer one,
        heartbeats while nothing changes; until close()."""
        with self._changed:
            if self._closed:
                return
            self._streams += 1
        try:
            yield retry_frame()
            sent = 0
            while True:
                with self._changed:
                    if not self._news(sent):
                        self._changed.wait(heartbeat)
                    if self._closed:
                        return
                    if self._sequence == sent or self._message is None:
                        chunk = HEARTBEAT
                    else:
                        chunk, sent = self._message, self._sequence
                yield chunk  # written outside the lock: a slow client holds up nobody
        finally:
            with self._changed:
                self._streams -= 1


__all__ = ["HEARTBEAT", "HEARTBEAT_SECONDS", "Broadcast", "frame", "retry_frame"]
