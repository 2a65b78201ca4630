"""`fleetpy api` in front of hostile clients, over raw sockets: requests a browser page can
make against an --insecure listener (a foreign Host, a cross-origin write, a body that is
itself a request), requests no HTTP library would send (conflicting framing, HTTP/0.9,
folded or broken header lines, unknown methods), and bodies a handler must survive.

Each refused request gets one answer, fleet's error JSON, and leaves etcd unchanged (the
whole key space and its revision, read with etcdctl); one whose body was not read closes
its connection, so the body is never taken for the next request.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleetpy.client import operations
from fleetpy.cluster.etcd import EtcdServer, EtcdTls
from fleetpy.files import MAX_UNIT_FILE_BYTES
from fleetpy.registry import Registry

from support.api_fixtures import Api
from support.hostile_harness import etcd_state

UNIT = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep 1000\n"
OPTIONS = [
    {"section": "Unit", "name": "Description", "value": "Hello"},
    {"section": "Service", "name": "ExecStart", "value": "/bin/sleep 1000"},
]
TOKEN = "rw-token-0123456789abcdef"

Connect = Callable[[], socket.socket]


@dataclass(frozen=True)
class Answer:
    status: int
    head: str  # status line and headers, as sent
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def error(self) -> dict[str, Any]:
        """fleet's {"error": {"code": N, "message": ...}}, with N the status."""
        assert self.header("Content-Type") == "application/json", self.head
        data = json.loads(self.body)
        assert set(data) == {"error"} and data["error"]["code"] == self.status, data
        return dict(data["error"])


def answers_of(data: bytes) -> list[Answer]:
    """The responses in what a connection received (each framed by its Content-Length)."""
    found = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1.1 "), data[:300]
        text = head.decode("latin-1")
        answer = Answer(int(text.split(" ", 2)[1]), text, b"")
        length = int(answer.header("Content-Length") or 0)
        found.append(Answer(answer.status, text, rest[:length]))
        data = rest[length:]
    return found


def converse(connect: Connect, data: bytes, wait: float = 5.0) -> tuple[list[Answer], bool]:
    """Send `data` on a new connection without closing our side; (the answers, whether the
    server closed the connection within `wait` seconds)."""
    sock = connect()
    sock.settimeout(wait)
    received = b""
    closed = False
    try:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            received += chunk
        closed = True
    except TimeoutError:
        pass
    finally:
        sock.close()
    return answers_of(received), closed


def http_request(
    method: str, target: str, host: str, body: bytes = b"", headers: tuple[str, ...] = ()
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def smuggled(host: str) -> bytes:
    """Two requests that, run, would change etcd: destroy web.service, create evil.service."""
    unit = json.dumps({"options": OPTIONS, "desiredState": "launched"}).encode()
    return http_request("DELETE", "/fleet/v1/units/web.service", host) + http_request(
        "PUT",
        "/fleet/v1/units/evil.service",
        host,
        unit,
        ("Content-Type: application/json",),
    )


@pytest.fixture
def seeded(registry: Registry) -> Registry:
    operations.put_unit(registry, "web.service", UNIT, None)
    return registry


@pytest.fixture
def unix(api: Api, seeded: Registry, tmp_path: Path) -> Connect:
    path = str(tmp_path / "api.sock")
    api(listen=path)

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return sock

    return connect


@pytest.fixture
def insecure(api: Api, seeded: Registry) -> tuple[Connect, int]:
    server, _ = api(listen="127.0.0.1:0", insecure=True)
    port = int(server.address[1])
    return (lambda: socket.create_connection(("127.0.0.1", port))), port


@pytest.fixture
def with_token(api: Api, seeded: Registry, tmp_path: Path) -> Connect:
    tls = EtcdTls.generate(tmp_path / "tls")
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    server, _ = api(
        listen="127.0.0.1:0",
        cert_file=str(tls.cert_file),
        key_file=str(tls.key_file),
        token_file=str(tmp_path / "tokens"),
    )
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    port = int(server.address[1])

    def connect() -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", port))
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    return connect


class EtcdReference:
    """Every key under the test's prefix with its value and mod revision, as a reference to
    compare with. Only the prefix: the session's etcd is shared, and other tests' leases
    run out (deleting their keys) while this one runs."""

    def __init__(self, etcd: EtcdServer, prefix: str) -> None:
        self.endpoint = etcd.endpoint
        self.prefix = prefix + "/"
        self.state = self._now()

    def _now(self) -> dict[str, tuple[str, int]]:
        return etcd_state(self.endpoint, self.prefix)[1]

    def unchanged(self) -> None:
        assert self._now() == self.state, "etcd changed"

    def changed(self) -> None:
        """After requests meant to write: their result is the reference from now on."""
        now = self._now()
        assert now != self.state, "etcd did not change"
        self.state = now


@pytest.fixture
def reference(etcd: EtcdServer, prefix: str, seeded: Registry) -> Iterator[EtcdReference]:
    """etcd as the fixtures before it left it (seeded); checked once more at the end."""
    kept = EtcdReference(etcd, prefix)
    assert kept.state, "the reference holds nothing: not the test's prefix?"
    yield kept
    kept.unchanged()


def refused(connect: Connect, data: bytes, status: int, etcd: EtcdReference) -> dict[str, Any]:
    """`data` gets one answer, a `status` with fleet's error JSON; the connection closes;
    etcd is unchanged. The error object."""
    answers, closed = converse(connect, data)
    assert [a.status for a in answers] == [status], (data[:200], [a.head for a in answers])
    assert closed, f"the connection stayed open after {data[:200]!r}"
    etcd.unchanged()
    return answers[0].error()


def test_a_refused_request_closes_its_connection_and_its_body_never_runs(
    insecure: tuple[Connect, int], with_token: Connect, reference: EtcdReference
) -> None:
    """What a web page can send to an --insecure listener (a form's body is free text): the
    refusal (403) must not leave the body on the connection to be read as the next request,
    with a good Host and no Origin. The same for a 401 on a listener that wants a token."""
    connect, port = insecure
    here = f"127.0.0.1:{port}"
    body = smuggled(here)
    plain = ("Content-Type: text/plain",)
    cases = [
        http_request("POST", "/fleet/v1/units", "evil.example", body, plain),
        http_request("PUT", "/fleet/v1/units/x.service", f"evil.example:{port}", body, plain),
        http_request("GET", "/fleet/v1/units", "evil.example", body),
        http_request(
            "POST", "/fleet/v1/units", here, body, (*plain, "Origin: http://evil.example")
        ),
        http_request("PUT", "/fleet/v1/units/x.service", here, body, ("Origin: null",)),
    ]
    for data in cases:
        assert refused(connect, data, 403, reference)["code"] == 403
    # The smuggled requests themselves, sent as requests, run: the test would see them.
    answers, _ = converse(connect, body + http_request("GET", "/fleet/v1/units", here), wait=1)
    assert [a.status for a in answers] == [204, 201, 200]
    assert "evil.service" in answers[2].body.decode()
    reference.changed()
    # Without a token: 401, and what followed it is not read as a request either (here the
    # public script: a second answer would show it).
    asset = http_request("GET", "/assets/dashboard.js", "127.0.0.1")
    for method in ("GET", "PUT", "DELETE"):
        data = http_request(method, "/fleet/v1/units/web.service", "127.0.0.1", asset)
        refused(with_token, data, 401, reference)
    answers, _ = converse(with_token, asset, wait=1)
    assert [a.status for a in answers] == [200]


def test_an_encoded_slash_or_an_empty_segment_names_no_unit(
    unix: Connect, reference: EtcdReference
) -> None:
    """`web.service%2f` is not web.service: fleet decoded the path first, and a path with
    an empty segment (or a trailing slash) named nothing: 404."""
    targets = [
        "/fleet/v1/units/web.service%2f",
        "/fleet/v1/units/web.service%2F",
        "/fleet/v1/units/%2fweb.service",
        "/fleet/v1/units/web.service/",
        "/fleet/v1/units//web.service",
        "/fleet/v1//units/web.service",
        "/fleet//v1/units/web.service",
        "/v1-alpha/units/%2Fweb.service",
        "/fleet/v1/units/x%2fweb.service",
        "/fleet/v1/units/./web.service",
        "/fleet/v1/units/%2e%2e/units/web.service",
        "/fleet/v1/state/web.service%2f",
        "//x/fleet/v1/units/web.service",
        "//fleet/v1/units/web.service",
    ]
    stop = json.dumps({"desiredState": "inactive"}).encode()
    for target in targets:
        for method, body in (("GET", b""), ("DELETE", b""), ("PUT", stop)):
            headers = ("Content-Type: application/json", "Connection: close")
            data = http_request(method, target, "localhost", body, headers)
            assert refused(unix, data, 404, reference)["message"] == "not found", target
    # The plain name, and one with an encoded dot (a name, not a path), still work.
    answers, _ = converse(
        unix,
        http_request("GET", "/fleet/v1/units/web%2Eservice", "localhost")
        + http_request("GET", "/fleet/v1/units", "localhost"),
        wait=1,
    )
    assert [a.status for a in answers] == [200, 200]
    assert json.loads(answers[0].body)["name"] == "web.service"


PUT_HEAD = "PUT /fleet/v1/units/evil.service HTTP/1.1\r\nHost: localhost\r\n"
UNIT_BODY = json.dumps({"options": OPTIONS, "desiredState": "launched"}).encode()


def framing_cases() -> list[tuple[str, bytes, int]]:
    """(what, raw request, status): each must be refused whole and close its connection."""
    body = UNIT_BODY + smuggled("localhost")
    json_type = "Content-Type: application/json\r\n"

    def put(headers: str, payload: bytes = body) -> bytes:
        return (PUT_HEAD + json_type + headers + "\r\n").encode() + payload

    return [
        (
            "two different Content-Lengths",
            put(f"Content-Length: {len(UNIT_BODY)}\r\nContent-Length: {len(body)}\r\n"),
            400,
        ),
        (
            "two lengths in one Content-Length",
            put(f"Content-Length: {len(UNIT_BODY)}, {len(body)}\r\n"),
            400,
        ),
        (
            "Transfer-Encoding and Content-Length",
            put(f"Transfer-Encoding: chunked\r\nContent-Length: {len(UNIT_BODY)}\r\n"),
            400,
        ),
        (
            "a chunked body",
            put("Transfer-Encoding: chunked\r\n", b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"),
            411,
        ),
        ("an unknown transfer coding", put("Transfer-Encoding: gzip, chunked\r\n"), 501),
        ("space before the colon", put(f"Content-Length : {len(UNIT_BODY)}\r\n"), 400),
        ("a header line without a colon", put(f"X-Note\r\nContent-Length: {len(body)}\r\n"), 400),
        (
            "an obs-fold in Content-Length",
            put(f"Content-Length: {len(UNIT_BODY)}\r\n {len(body)}\r\n"),
            400,
        ),
        ("a fold before the first header", b"GET / HTTP/1.1\r\n X: 1\r\nHost: x\r\n\r\n", 400),
        ("a bare CR in a header", put(f"X-A: 1\rContent-Length: {len(UNIT_BODY)}\r\n"), 400),
        ("a negative Content-Length", put("Content-Length: -1\r\n"), 400),
        ("a Content-Length with a sign", put(f"Content-Length: +{len(UNIT_BODY)}\r\n"), 400),
        ("HTTP/0.9", b"GET /fleet/v1/units\r\n", 400),
        ("HTTP/0.9 with a body after it", b"GET /fleet/v1/units\r\n" + smuggled("localhost"), 400),
        ("HTTP/2.0 over HTTP/1", b"GET /fleet/v1/units HTTP/2.0\r\nHost: localhost\r\n\r\n", 505),
        ("HTTP/1.1 without a Host", b"GET /fleet/v1/units HTTP/1.1\r\n\r\n", 400),
        (
            "two Hosts",
            b"GET /fleet/v1/units HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
            400,
        ),
        ("a lower-case version", b"GET /fleet/v1/units http/1.1\r\nHost: x\r\n\r\n", 400),
        ("two spaces in the request line", b"GET  /fleet/v1/units HTTP/1.1\r\n\r\n", 400),
        ("bytes that are not HTTP", b"\x00\xff garbage\r\n\r\n", 400),
        (
            "a target that is no URL",
            b"GET http://[x/fleet/v1/units HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
        ("a target that is no path", b"GET fleet/v1/units HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("a header block over 16 KiB", put("X-Big: " + "a" * 20000 + "\r\n"), 431),
        ("a body over 1 MiB", put("Content-Length: 2097152\r\n", b"{"), 413),
        (
            "a request target over 8 KiB",
            f"GET /fleet/v1/units/{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            414,
        ),
    ]


def test_malformed_framing_is_refused_whole_and_closes(
    unix: Connect, reference: EtcdReference
) -> None:
    """RFC 9112's framing rules, where a lenient parser and a strict one would see
    different requests in the same bytes: one answer, the connection closed, nothing run."""
    for what, data, status in framing_cases():
        error = refused(unix, data, status, reference)
        assert error["message"], what
    # Lenient where the RFC allows it and no two readings are possible: bare LF line ends,
    # an obs-fold in another header, a repeated identical Content-Length (each request here
    # is framed by its own length: the extra bytes after it would be a third answer).
    length = f"Content-Length: {len(UNIT_BODY)}"
    lenient = (
        f"{PUT_HEAD}Content-Type: application/json\n{length}\n{length}\nX-Folded: a\r\n\tb\r\n\r\n"
    ).encode() + UNIT_BODY
    answers, _ = converse(
        unix, lenient + http_request("DELETE", "/fleet/v1/units/evil.service", "x"), wait=1
    )
    assert [a.status for a in answers] == [201, 204]
    reference.changed()


def test_bodies_that_crashed_a_handler_get_fleets_400(
    unix: Connect, reference: EtcdReference
) -> None:
    """JSON nested 1,000 levels, and a lone surrogate (valid JSON, no valid text), were a
    500; a unit over the README's 64 KiB was stored."""
    deep = b"[" * 1000 + b"]" * 1000
    surrogate = [{"section": "\ud800", "name": "ExecStart", "value": "/bin/true"}]
    big = [*OPTIONS, {"section": "Unit", "name": "Documentation", "value": "x" * 200 * 1024}]
    bodies = [
        (deep, "unable to decode body"),
        (b'{"options": ' + deep + b"}", "unable to decode body"),
        (json.dumps({"options": surrogate}).encode(), "unable to decode body"),
        (json.dumps({"name": "\udfff"}).encode(), "unable to decode body"),
        (json.dumps({"options": big}).encode(), "more than 64 KiB"),
    ]
    for body, message in bodies:
        data = http_request(
            "PUT", "/fleet/v1/units/big.service", "x", body, ("Content-Type: application/json",)
        )
        answers, _ = converse(unix, data, wait=1)
        assert [a.status for a in answers] == [400], body[:100]
        assert message in answers[0].error()["message"], answers[0].body
        reference.unchanged()
    # Just under the limit is a unit like any other.
    room = MAX_UNIT_FILE_BYTES - len(UNIT) - len("Documentation=\n") - 100
    fits = [*OPTIONS, {"section": "Unit", "name": "Documentation", "value": "x" * room}]
    data = http_request(
        "PUT",
        "/fleet/v1/units/big.service",
        "x",
        json.dumps({"options": fits}).encode(),
        ("Content-Type: application/json", "Connection: close"),
    )
    assert [a.status for a in converse(unix, data)[0]] == [201]
    reference.changed()


def test_unknown_methods_get_fleets_405_without_cors(
    unix: Connect, insecure: tuple[Connect, int], reference: EtcdReference
) -> None:
    """OPTIONS (a browser's CORS preflight) was http.server's 501 HTML page: fleet answered
    405 with its error JSON, and nothing here allows another origin."""
    preflight = (
        "Origin: http://evil.example",
        "Access-Control-Request-Method: DELETE",
        "Connection: close",
    )
    connect, port = insecure
    for method in ("OPTIONS", "TRACE", "FOO", "get", "PROPFIND"):
        for target in ("/fleet/v1/units", "/fleet/v1/units/web.service", "/", "/metrics"):
            for where, host in ((unix, "localhost"), (connect, f"127.0.0.1:{port}")):
                answers, closed = converse(
                    where, http_request(method, target, host, b"", preflight)
                )
                assert [a.status for a in answers] == [405] and closed, (method, target)
                assert answers[0].error()["code"] == 405
                assert "access-control" not in answers[0].head.lower()
                reference.unchanged()
    # With a body (unread), the connection closes: the body is no request.
    data = http_request("OPTIONS", "/fleet/v1/units", "localhost", smuggled("localhost"))
    refused(unix, data, 405, reference)
    data = http_request("CONNECT", "127.0.0.1:80", "127.0.0.1:80", smuggled("localhost"))
    refused(unix, data, 405, reference)
    data = http_request("OPTIONS", "*", "localhost", smuggled("localhost"))
    refused(unix, data, 405, reference)


def test_expect_100_continue_is_answered_only_for_a_body_that_will_be_read(
    unix: Connect, reference: EtcdReference
) -> None:
    """curl sends large bodies after `Expect: 100-continue`: the server says continue when
    it will read the body, and a refusal instead (the client then sends nothing)."""
    expect = ("Content-Type: application/json", "Expect: 100-continue", "Connection: close")
    head = http_request("PUT", "/fleet/v1/units/late.service", "x", UNIT_BODY, expect)
    head = head[: -len(UNIT_BODY)]
    sock = unix()
    sock.settimeout(5)
    try:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(UNIT_BODY)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    finally:
        sock.close()
    assert [a.status for a in answers_of(received)] == [201]
    reference.changed()
    refusal = http_request("OPTIONS", "/fleet/v1/units/late.service", "x", UNIT_BODY, expect)
    answers, closed = converse(unix, refusal[: -len(UNIT_BODY)])
    assert [a.status for a in answers] == [405] and closed
    reference.unchanged()
