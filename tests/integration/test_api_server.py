"""test_api_server.py's tests that need the session's etcd or a short-lived helper process
(README "Tests"); what the module covers as a whole: tests/system/test_api_server.py."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from pathlib import Path

import pytest

from fleetpy.api import ApiServer, build
from fleetpy.client import operations
from fleetpy.cluster.etcd import EtcdServer, EtcdTls
from fleetpy.config import ApiSettings
from fleetpy.live_view import LiveView
from fleetpy.registry import Registry, RegistryConfig

from support.api_fixtures import Api, UnixConnection, etcd_requests, request
from support.waiting import until

UNIT = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/sleep 1000\n"


OPTIONS = [
    {"section": "Unit", "name": "Description", "value": "Hello"},
    {"section": "Service", "name": "ExecStart", "value": "/bin/sleep 1000"},
]


def test_unix_socket_answers_from_the_view_without_etcd_requests(
    api: Api, registry: Registry, etcd: EtcdServer, tmp_path: Path
) -> None:
    sock = str(tmp_path / "api.sock")
    _, live = api(listen=sock)
    assert oct(os.stat(sock).st_mode & 0o777) == "0o660"
    conn = UnixConnection(sock)
    assert request(conn, "PUT", "/fleet/v1/units/a.service", {"options": OPTIONS}) == (201, None)
    # read-your-writes: the next read sees it, with its options from the view's texts
    status, body = request(conn, "GET", "/fleet/v1/units/a.service")
    assert status == 200 and body["options"] == OPTIONS and body["desiredState"] == "inactive"
    assert request(conn, "PUT", "/v1-alpha/units/a.service", {"desiredState": "loaded"})[0] == 204
    assert request(conn, "GET", "/v1-alpha/units/a.service")[1]["desiredState"] == "loaded"
    for name in ("b", "c"):
        operations.put_unit(registry, f"{name}.service", UNIT, None)
    until(lambda: len(live.current().units) == 3, what="the view to see units written elsewhere")
    before = etcd_requests(etcd)
    for _ in range(50):
        for path in ("/fleet/v1/units", "/fleet/v1/state", "/fleet/v1/machines"):
            assert request(conn, "GET", path)[0] == 200
    assert etcd_requests(etcd) == before
    assert request(conn, "DELETE", "/fleet/v1/units/a.service") == (204, None)
    assert request(conn, "GET", "/fleet/v1/units/a.service")[0] == 404
    assert live.resyncs == 1


def test_bad_input_gets_fleet_errors_and_the_server_survives(api: Api, tmp_path: Path) -> None:
    sock = str(tmp_path / "api.sock")
    api(listen=sock)
    conn = UnixConnection(sock)
    cases = [
        ("PUT", "/fleet/v1/units/a.service", b"{nope", 400),
        ("PUT", "/fleet/v1/units/a%20b.service", {"options": OPTIONS}, 400),
        (
            "PUT",
            "/fleet/v1/units/a.service",
            {"options": [{"section": "X-Fleet", "name": "MachineOf", "value": "a.service"}]},
            400,
        ),
        ("PUT", "/fleet/v1/units/a.service", {"desiredState": "launched"}, 409),
        ("GET", "/fleet/v1/units?nextPageToken=garbage", None, 400),
        ("GET", "/elsewhere", None, 404),
    ]
    for method, path, body, status in cases:
        got, answer = request(conn, method, path, body)
        assert got == status and answer["error"]["code"] == status, (path, answer)
    # An oversized body is refused from its Content-Length, unread.
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(sock)
    raw.sendall(
        b"PUT /fleet/v1/units/a.service HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n{"
    )
    answer = raw.makefile("rb").read()
    raw.close()
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"code":413' in answer
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(sock)
    raw.sendall(b"\x00\xff garbage\r\n\r\n")
    raw.recv(1000)
    raw.close()
    assert request(UnixConnection(sock), "GET", "/fleet/v1/units")[0] == 200


@pytest.fixture
def tls(tmp_path: Path) -> EtcdTls:
    return EtcdTls.generate(tmp_path / "tls", client_name="fleetctl")


def https(server: ApiServer, tls: EtcdTls, cert: bool) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    if cert:
        context.load_cert_chain(str(tls.client_cert_file), str(tls.client_key_file))
    return http.client.HTTPSConnection("127.0.0.1", server.address[1], context=context, timeout=10)


def test_tcp_requires_a_client_certificate(api: Api, tls: EtcdTls) -> None:
    server, _ = api(
        listen="127.0.0.1:0",
        cert_file=str(tls.cert_file),
        key_file=str(tls.key_file),
        client_ca_file=str(tls.ca_file),
    )
    assert request(https(server, tls, cert=True), "GET", "/fleet/v1/machines") == (
        200,
        {"machines": []},
    )
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        request(https(server, tls, cert=False), "GET", "/fleet/v1/machines")


def test_bearer_tokens_and_read_only_tokens(api: Api, tls: EtcdTls, tmp_path: Path) -> None:
    (tmp_path / "rw").write_text("# operators\nW" * 1 + "rw-token-0123456789abcdef\n")
    (tmp_path / "ro").write_text("ro-token-0123456789abcdef\n")
    server, _ = api(
        listen="127.0.0.1:0",
        cert_file=str(tls.cert_file),
        key_file=str(tls.key_file),
        token_file=str(tmp_path / "rw"),
        read_only_token_file=str(tmp_path / "ro"),
    )
    conn = https(server, tls, cert=False)
    assert request(conn, "GET", "/fleet/v1/units")[0] == 401
    wrong = {"Authorization": "Bearer nope-0123456789abcdef"}
    assert request(conn, "GET", "/fleet/v1/units", headers=wrong)[0] == 401
    read = {"Authorization": "Bearer ro-token-0123456789abcdef"}
    assert request(conn, "GET", "/fleet/v1/units", headers=read)[0] == 200
    got = request(conn, "PUT", "/fleet/v1/units/a.service", {"options": OPTIONS}, read)
    assert got[0] == 403
    write = {"Authorization": "Bearer Wrw-token-0123456789abcdef"}
    assert request(conn, "PUT", "/fleet/v1/units/a.service", {"options": OPTIONS}, write)[0] == 201
    # Only an --insecure listener checks Host: with credentials, the token decides.
    assert request(conn, "GET", "/fleet/v1/units", headers={**read, "Host": "x.example"})[0] == 200


def test_read_only_tokens_beside_a_client_ca_need_no_certificate(
    api: Api, tls: EtcdTls, tmp_path: Path
) -> None:
    """A browser has no client certificate: with a client CA and only read-only tokens,
    TLS must not demand one."""
    (tmp_path / "ro").write_text("ro-token-0123456789abcdef\n")
    server, _ = api(
        listen="127.0.0.1:0",
        cert_file=str(tls.cert_file),
        key_file=str(tls.key_file),
        client_ca_file=str(tls.ca_file),
        read_only_token_file=str(tmp_path / "ro"),
    )
    read = {"Authorization": "Bearer ro-token-0123456789abcdef"}
    assert request(https(server, tls, cert=False), "GET", "/fleet/v1/units", headers=read)[0] == 200
    assert request(https(server, tls, cert=False), "GET", "/fleet/v1/units")[0] == 401
    got = request(
        https(server, tls, cert=True), "PUT", "/fleet/v1/units/a.service", {"options": OPTIONS}
    )
    assert got == (201, None)


def test_metrics_route_describes_the_cluster_from_the_view(
    registry_config: RegistryConfig, registry: Registry, etcd: EtcdServer, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from fleetpy.entrypoints import api_metrics_route

    sock = str(tmp_path / "api.sock")
    api_registry = Registry(registry_config)
    views: list[LiveView] = []
    route = api_metrics_route(api_registry, lambda: views[0].current())
    server, live = build(api_registry, ApiSettings(listen=sock), [route])
    views.append(live)
    server.start()
    try:
        operations.put_unit(registry, "m.service", UNIT, None)
        until(lambda: "m.service" in live.current().units, what="the view to see the unit")
        before = etcd_requests(etcd)
        conn = UnixConnection(sock)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("fleetpy_units", (("desired", "inactive"),))] >= 1
        assert etcd_requests(etcd) == before  # a scrape reads the view, not etcd
    finally:
        server.close()
        live.close()
        api_registry.close()
