"""test_api_server.py's tests that need no etcd and no process (README "Tests"); what the
module covers as a whole: tests/system/test_api_server.py."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from fleetpy.api import ApiServer
from fleetpy.config import ApiSettings

from support.waiting import until


def test_close_right_after_start_stops_the_serving_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() before the thread got to serve_forever(): it must still stop it, not close
    the socket under a serve_forever() that starts afterwards."""
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    server = ApiServer(ApiSettings(listen=str(tmp_path / "s.sock")), [])
    gate = threading.Event()
    threads: list[threading.Thread] = []
    serve = server.serve

    def gated_serve() -> None:  # the thread, held before it serves
        threads.append(threading.current_thread())
        gate.wait(30)
        serve()

    shutdown = server._http.shutdown

    def releasing_shutdown() -> None:  # close() waits here for serve_forever to end
        gate.set()
        shutdown()

    monkeypatch.setattr(server, "serve", gated_serve)
    monkeypatch.setattr(server._http, "shutdown", releasing_shutdown)
    server.start()
    server.close()
    gate.set()
    until(lambda: bool(threads), what="the serving thread")
    threads[0].join(10)
    assert not threads[0].is_alive() and failures == []


def test_accepted_tcp_connections_send_without_nagle_delay() -> None:
    """Headers and body are two writes; with Nagle the body waits for a delayed ACK."""
    from fleetpy.api.server import IDLE_SECONDS, prepare_connection

    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                prepare_connection(accepted)
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                assert accepted.gettimeout() == IDLE_SECONDS
    left, right = socket.socketpair()  # a unix socket: only the timeout
    with left, right:
        prepare_connection(left)
        assert left.gettimeout() == IDLE_SECONDS
