"""Server-sent events: the framing, the one-message fan-out to many streams, and the API
server's streams (heartbeats through its idle timeout, ended at once by close())."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from fleetpy.api import ApiServer, Route
from fleetpy.api import server as api_server
from fleetpy.api.messages import ApiRequest, ApiResponse
from fleetpy.api.sse import HEARTBEAT, Broadcast, frame, retry_frame
from fleetpy.config import ApiSettings

FRAMES = [
    ("view", '{"a":1}', None, b'event: view\ndata: {"a":1}\n\n'),
    ("view", '{"a":1}', "42", b'event: view\nid: 42\ndata: {"a":1}\n\n'),
    ("view", "one\ntwo", None, b"event: view\ndata: one\ndata: two\n\n"),
    ("view", "cr\r\nlf\rx", None, b"event: view\ndata: cr\ndata: lf\ndata: x\n\n"),
    ("view", "", None, b"event: view\ndata: \n\n"),
]


@pytest.mark.parametrize(("event", "data", "event_id", "expected"), FRAMES)
def test_frame(event: str, data: str, event_id: str | None, expected: bytes) -> None:
    assert frame(event, data, event_id) == expected


@pytest.mark.parametrize(("event", "event_id"), [("a\nb", None), ("view", "1\n2"), ("a\rb", None)])
def test_frame_refuses_line_breaks_in_names(event: str, event_id: str | None) -> None:
    with pytest.raises(ValueError, match="line break"):
        frame(event, "x", event_id)


class Board:
    """A snapshot source for a Broadcast (lines "snap" and the number of the last delta
    it includes), and deltas ("d<number>")."""

    def __init__(self) -> None:
        self.number = 0

    def __call__(self) -> tuple[int, tuple[bytes, ...]]:
        return self.number, (b"snap\n", b"%d\n" % self.number)

    def publish(self, hub: Broadcast) -> bytes:
        self.number += 1
        message = b"d%d\n" % self.number
        hub.publish(self.number, message)
        return message


def test_a_stream_sends_a_snapshot_then_every_delta_in_order_and_heartbeats() -> None:
    board = Board()
    hub = Broadcast(board)
    stream = hub.stream(heartbeat=0.05)
    assert next(stream) == retry_frame()
    assert [next(stream), next(stream)] == [b"snap\n", b"0\n"]
    assert next(stream) == HEARTBEAT  # nothing published since
    board.publish(hub)
    board.publish(hub)  # a stream that did not read d1 yet gets both, in order
    assert next(stream) == b"d1\nd2\n"
    assert next(stream) == HEARTBEAT
    late = hub.stream(heartbeat=0.05)
    assert [next(late), next(late), next(late)] == [retry_frame(), b"snap\n", b"2\n"]
    board.publish(hub)
    assert next(stream) == b"d3\n" and next(late) == b"d3\n"
    assert hub.streams == 2
    hub.close()
    assert list(stream) == [] and list(late) == []
    assert hub.streams == 0
    assert list(hub.stream()) == []  # closed: no new streams


def test_a_client_that_missed_deltas_resyncs_with_a_snapshot() -> None:
    """A stream further behind than the log keeps gets a snapshot and goes on from it; a
    client reconnecting with a Last-Event-ID still kept gets only what it missed; one
    with an id no longer kept, or of another server (epoch), or none, a snapshot."""
    board = Board()
    hub = Broadcast(board, keep_messages=3)
    slow = hub.stream(heartbeat=0.05)
    assert [next(slow) for _ in range(3)] == [retry_frame(), b"snap\n", b"0\n"]
    for _ in range(5):
        board.publish(hub)  # d1..d5: the log keeps d3..d5; the slow stream needs d1
    assert [next(slow), next(slow)] == [b"snap\n", b"5\n"]
    board.publish(hub)
    assert next(slow) == b"d6\n"
    assert hub.snapshots == 2

    def reconnect(last_event_id: str) -> list[bytes]:
        stream = hub.stream(heartbeat=0.05, last_event_id=last_event_id)
        sent = [next(stream), next(stream)]
        stream.close()  # type: ignore[attr-defined]  # a generator
        return sent

    assert reconnect(hub.event_id(4)) == [retry_frame(), b"d5\nd6\n"]
    assert reconnect(hub.event_id(6)) == [retry_frame(), HEARTBEAT]  # up to date
    assert reconnect(hub.event_id(1)) == [retry_frame(), b"snap\n"]  # d2 is gone
    assert reconnect("0000." + "4") == [retry_frame(), b"snap\n"]  # another server's
    assert reconnect("") == [retry_frame(), b"snap\n"]
    hub.reset(9)  # rebuilt: nothing older is kept
    board.number = 9
    assert reconnect(hub.event_id(6)) == [retry_frame(), b"snap\n"]
    assert next(slow) == b"snap\n"
    hub.close()


def test_broadcast_close_wakes_waiting_streams_at_once() -> None:
    board = Board()
    hub = Broadcast(board)
    board.publish(hub)
    ended = threading.Event()

    def read() -> None:
        for _ in hub.stream(heartbeat=60):
            pass
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    threading.Event().wait(0.2)
    hub.close()
    assert ended.wait(2)


def test_streams_outlive_the_idle_timeout_and_end_with_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream writes a heartbeat more often than the idle timeout, so it stays; a plain
    request's silent client is still dropped; close() ends every stream at once."""
    monkeypatch.setattr(api_server, "IDLE_SECONDS", 0.5)
    board = Board()
    hub = Broadcast(board)

    def handler(request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, b"", "text/event-stream", stream=hub.stream(heartbeat=0.1))

    sock = str(tmp_path / "s.sock")
    server = ApiServer(ApiSettings(listen=sock), [Route("", handler)]).start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(sock)
    client.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = client.makefile("rb")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += reader.readline()
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    began = time.monotonic()
    heartbeats = 0
    while time.monotonic() - began < 1.5:  # three idle timeouts
        line = reader.readline()
        assert line, "the stream ended while idle"
        heartbeats += line == b": keepalive\n"
    assert heartbeats >= 5
    # One stream is open; at the limit the next gets 503 and its connection closes.
    monkeypatch.setattr(api_server, "MAX_STREAMS", 1)
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.settimeout(5)
    extra.connect(sock)
    extra.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    refused = extra.makefile("rb").read()
    assert refused.startswith(b"HTTP/1.1 503 ") and b"too many streams" in refused
    extra.close()
    board.publish(hub)
    assert reader.readline() in (b"d1\n", b"\n", b": keepalive\n")
    # A plain connection that says nothing is still dropped after the idle timeout.
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.settimeout(5)
    idle.connect(sock)
    assert idle.recv(100) == b""
    idle.close()
    closing = threading.Thread(target=server.close)
    closing.start()
    began = time.monotonic()
    while reader.readline():
        pass
    assert time.monotonic() - began < 2  # ended by close(), not by a timeout
    closing.join(5)
    client.close()
