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


def test_broadcast_sends_the_newest_message_once_and_heartbeats() -> None:
    hub = Broadcast()
    stream = hub.stream(heartbeat=0.05)
    assert next(stream) == retry_frame()
    assert next(stream) == HEARTBEAT  # nothing published yet
    hub.publish(b"one")
    hub.publish(b"two")  # a stream that did not read "one" yet skips it
    assert next(stream) == b"two"
    assert next(stream) == HEARTBEAT
    late = hub.stream(heartbeat=0.05)
    assert [next(late), next(late)] == [retry_frame(), b"two"]  # joins with the newest
    assert hub.streams == 2
    hub.close()
    assert list(stream) == [] and list(late) == []
    assert hub.streams == 0
    assert list(hub.stream()) == []  # closed: no new streams


def test_broadcast_close_wakes_waiting_streams_at_once() -> None:
    hub = Broadcast()
    hub.publish(b"m")
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
    hub = Broadcast()

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
    hub.publish(b"event: view\ndata: {}\n\n")
    assert reader.readline() in (b"event: view\n", b"\n", b": keepalive\n")
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
