"""Server-sent events: the framing, and a log of numbered messages fanned out to every stream.

A `Broadcast` keeps the last messages (deltas) published, numbered 1, 2, ... Each stream
starts with a snapshot (its `snapshot()` gives the number of the last delta it includes)
and then sends every delta after it, in order; a stream that fell behind further than the
log keeps (a slow client), or a reconnecting client whose Last-Event-ID the log no longer
holds, gets a new snapshot instead, and goes on from there. A reconnecting client whose
deltas are still kept gets just those. Publishing costs the same for 1 or 1,000 streams:
each message is encoded once and the same bytes are written to every connection. An idle
stream gets a comment line every `heartbeat` seconds so proxies and the server's own socket
timeouts keep it open.

Message ids are `<epoch>.<number>`, the epoch a random token per Broadcast: a client that
reconnects to another server process (a restart) never has its old id taken for one here.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence

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


def frame_json(event: str, data: bytes, event_id: str) -> tuple[bytes, bytes, bytes]:
    """One SSE message of one line of JSON (which holds no line break: json.dumps escapes
    them in strings), in three pieces so a large `data` is not copied."""
    if b"\n" in data or b"\r" in data:
        raise ValueError("a JSON message for SSE must be one line")
    return frame(event, "", event_id)[: -len(b"data: \n\n")] + b"data: ", data, b"\n\n"


def retry_frame(milliseconds: int = RECONNECT_MS) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


# Deltas kept for streams behind and clients reconnecting: at most this many, and bytes.
KEEP_MESSAGES = 1000
KEEP_BYTES = 8 * 1024 * 1024

# The newest snapshot, framed (in pieces, written one after the other: a snapshot of
# 100,000 units is tens of MB, not copied into one), and the number of the last delta it
# includes.
Snapshot = Callable[[], tuple[int, Sequence[bytes]]]


class Broadcast:
    """The deltas published lately, and the streams waiting for the next one."""

    def __init__(
        self,
        snapshot: Snapshot,
        keep_messages: int | None = None,
        keep_bytes: int | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.epoch = secrets.token_hex(4)
        self._changed = threading.Condition()
        self._log: deque[tuple[int, bytes]] = deque()  # (number, framed message)
        self._log_bytes = 0
        self._keep = (keep_messages or KEEP_MESSAGES, keep_bytes or KEEP_BYTES)
        self._last = 0  # the newest number published (or reset to)
        self._closed = False
        self._streams = 0
        self.snapshots = 0  # snapshots sent (tests, logs)

    def event_id(self, number: int) -> str:
        return f"{self.epoch}.{number}"

    def publish(self, number: int, message: bytes) -> None:
        """Message `number` (the last one's + 1), framed."""
        with self._changed:
            self._log.append((number, message))
            self._log_bytes += len(message)
            while len(self._log) > 1 and (
                len(self._log) > self._keep[0] or self._log_bytes > self._keep[1]
            ):
                self._log_bytes -= len(self._log.popleft()[1])
            self._last = number
            self._changed.notify_all()

    def reset(self, number: int) -> None:
        """Everything changed up to `number` (a full rebuild): every stream sends a new
        snapshot next, and no older delta is kept."""
        with self._changed:
            self._log.clear()
            self._log_bytes = 0
            self._last = number
            self._changed.notify_all()

    @property
    def streams(self) -> int:
        """Streams open now (for logs and tests)."""
        with self._changed:
            return self._streams

    def _after(self, sent: int) -> bytes | None:
        """The deltas after `sent`, joined; None when the log no longer has them all
        (under the lock)."""
        if sent == self._last:
            return b""
        if not self._log or self._log[0][0] > sent + 1 or sent > self._last:
            return None
        return b"".join(message for number, message in self._log if number > sent)

    def close(self) -> None:
        """End every stream (they return at once) and refuse new ones."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def stream(
        self, heartbeat: float = HEARTBEAT_SECONDS, last_event_id: str = ""
    ) -> Iterator[bytes]:
        """What one client receives: the retry hint, a snapshot (or, for a client that
        reconnects with `last_event_id`, the deltas it missed if they are kept), every
        later delta, heartbeats while nothing changes; until close()."""
        with self._changed:
            if self._closed:
                return
            self._streams += 1
        try:
            yield retry_frame()
            sent: int | None = None
            epoch, dot, number = last_event_id.partition(".")
            if dot and epoch == self.epoch and number.isdigit():
                sent = int(number)
            while True:
                with self._changed:
                    if self._closed:
                        return
                    chunk = None if sent is None else self._after(sent)
                    if chunk == b"":
                        self._changed.wait(heartbeat)
                        if self._closed:
                            return
                        chunk = self._after(sent) if sent is not None else None
                    if chunk == b"":
                        chunk = HEARTBEAT
                    elif chunk is not None:
                        sent = self._last
                if chunk is None:  # behind the log, or new: a snapshot (outside the lock)
                    sent, pieces = self.snapshot()
                    with self._changed:
                        self.snapshots += 1
                    yield from pieces
                else:
                    yield chunk  # written outside the lock: a slow client holds up nobody
        finally:
            with self._changed:
                self._streams -= 1


__all__ = [
    "HEARTBEAT",
    "HEARTBEAT_SECONDS",
    "Broadcast",
    "Snapshot",
    "frame",
    "frame_json",
    "retry_frame",
]
