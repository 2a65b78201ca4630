"""`fleetpy api`: one HTTP server for fleet's API v1 (and, later, metrics and a dashboard),
answering from one watch-fed view of the cluster however many clients poll it.

Where it listens: a unix socket by default (fleet's way: who may use it is who may open the
socket, mode 0660), a socket handed over by systemd (LISTEN_FDS/LISTEN_PID), or TCP when
asked; TCP always with credentials (TLS client certificates, bearer tokens) unless the
operator said --insecure, which it then says in its log at start.

Routes are a small table of path prefixes; other handlers (/metrics, the dashboard at /)
are added to it without touching the request handling. The server is made (options checked,
socket bound) before anything asks etcd, and its routes are mounted once the view is read,
so a bad --listen or a missing credential file is one error line even while etcd is away.

HTTP itself is h11's: it reads each request and frames each answer, by RFC 9112 (one
Content-Length, never beside Transfer-Encoding, no HTTP/0.9, no header line it cannot
read: each refused whole, 400 and close). The sockets, TLS and threads stay this module's
(socketserver: a thread per connection). Every refusal given before a request's body was
read closes the connection, so that body is never read as the next request; so do other
methods than the API's (405, fleet's JSON, no CORS headers) and paths with an empty, `.`
or `..` segment once decoded (404: `units/web.service%2f` is not web.service).

A handler may answer with a stream (server-sent events): its pieces are written as they
come, on a connection that then closes; the idle timeout bounds each write, not the
stream, and close() ends every stream at once.

Browsers: an EventSource cannot send an Authorization header, so routes marked `browser`
also take a read-only token (--read-only-token-file) as `?token=` or as a cookie, which the
response to a `?token=` request sets (HttpOnly, SameSite=Strict; under TLS named
`__Host-fleetpy_token`, Secure, Path=/, no Domain; `fleetpy_token` without TLS), on GET and
HEAD only. A read-write token given that way is refused (401): it would sit in a URL, a
history and a cookie jar.

DNS rebinding: a web page can point its own name at 127.0.0.1 and so reach an --insecure
listener that `ssh -L` forwards to. Such a listener (TCP, no credentials) answers only
requests whose Host is an IP address, `localhost` or the --listen host, and refuses writes
whose Origin is another host:port than Host (403).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import socketserver
import ssl
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from ..config import ApiSettings
from ..errors import ConfigError
from ..log import log_event
from .auth import Access, Credentials, read_tokens
from .messages import ApiRequest, ApiResponse, error_response

SOCKET_MODE = 0o660  # the unix socket: its owner and group (see _bind_unix)
# The largest request body read: a unit's options are a few KiB; more is refused unread.
MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_TARGET = 8192  # a request line longer than this is refused (414)
MAX_HEAD_BYTES = 16 * 1024  # request line and header fields; more is refused (431)
READ_BYTES = 64 * 1024
# A closing connection drops what the client still sends for at most this long.
LINGER_SECONDS = 1.0
# What the API answers; any other method gets 405 (fleet's answer), never a page.
METHODS = ("GET", "HEAD", "PUT", "DELETE", "PATCH", "POST")
SERVER = "fleetpy"
# RFC 9112's request-line: a method token, a target of visible characters, HTTP/x.y.
_REQUEST_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]")
# A client that sends nothing for this long is disconnected (frees its thread).
IDLE_SECONDS = 30.0
# Streams (dashboards' server-sent events) open at once; more get 503. Each holds a thread.
MAX_STREAMS = 1000
TOKEN_PARAMETER = "token"
TOKEN_COOKIE = "fleetpy_token"
# Under TLS: a __Host- cookie is Secure, Path=/ and host-only, so a neighbour can't set it.
TLS_TOKEN_COOKIE = "__Host-fleetpy_token"
SD_LISTEN_FDS_START = 3

Handler = Callable[[ApiRequest], ApiResponse]


@dataclass(frozen=True)
class Route:
    prefix: str  # "/fleet/v1"; "" matches everything (a dashboard at /)
    handler: Handler
    # Paths under this prefix that anyone may read, even on a TCP listener with
    # credentials (the dashboard's script and style sheet, which hold no cluster data).
    public: bool = False
    # GET/HEAD may carry the token as ?token= or a cookie (read-only): see the docstring.
    browser: bool = False


@dataclass(frozen=True)
class Listener:
    """Where a server listens, parsed."""

    unix_path: str | None = None
    host: str = ""
    port: int = 0

    @property
    def is_tcp(self) -> bool:
        return self.unix_path is None


def parse_listen(spec: str) -> Listener:
    """`/path`, `unix:///path` or `HOST:PORT` (`[::1]:PORT` for IPv6)."""
    if spec.startswith("unix://"):
        spec = spec[len("unix://") :]
        if not spec.startswith("/"):
            raise ConfigError(f"--listen unix://{spec}: the socket path must be absolute")
    if spec.startswith("/"):
        return Listener(unix_path=spec)
    host, sep, port = spec.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen {spec!r}: expected HOST:PORT, a socket path or unix:///path")
    return Listener(host=host, port=int(port))


def _activated_socket() -> socket.socket | None:
    """The first socket systemd passed (LISTEN_FDS/LISTEN_PID), if it passed one to us."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our children
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    sock.setblocking(True)
    return sock


def _unix_socket(path: str, mode: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _bind_unix(sock, path, mode)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_unix(sock: socket.socket, path: str, mode: int) -> None:
    target = Path(path)
    # The socket's own folder (/run/fleetpy) is made; missing folders above it are an
    # error, so a mistyped path fails without leaving directories behind.
    target.parent.mkdir(exist_ok=True, mode=0o755)
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if not stat.S_ISSOCK(existing.st_mode):
            raise ConfigError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # a stale socket of a server that is gone
        else:
            raise ConfigError(f"another server listens on {path}")
        finally:
            probe.close()
    # Bind under a umask that gives nobody else access, then open it to the group.
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(128)


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


def _tls_context(options: ApiSettings) -> ssl.SSLContext | None:
    if options.cert_file is None and options.key_file is None:
        if options.client_ca_file is not None:
            raise ConfigError("--api-client-ca-file needs --api-cert-file and --api-key-file")
        return None
    if options.cert_file is None or options.key_file is None:
        raise ConfigError("--api-cert-file and --api-key-file go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(options.cert_file, options.key_file)
        if options.client_ca_file is not None:
            context.load_verify_locations(options.client_ca_file)
            # Tokens too: a client without a certificate (a browser with a read-only
            # token) may still present one.
            tokens = options.token_file or options.read_only_token_file
            context.verify_mode = ssl.CERT_OPTIONAL if tokens else ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the API's TLS files: {exc}") from None
    return context


def _credentials(options: ApiSettings, tcp: bool) -> Credentials:
    tokens = read_tokens(options.token_file) if options.token_file else ()
    read_only = read_tokens(options.read_only_token_file) if options.read_only_token_file else ()
    if not tcp:
        return Credentials(open=True)  # the socket's file mode decides
    certificates = options.client_ca_file is not None
    if not (certificates or tokens or read_only):
        if not options.insecure:
            raise ConfigError(
                "a TCP listener needs credentials: --api-client-ca-file (TLS client "
                "certificates) or --token-file (bearer tokens), or --insecure"
            )
        return Credentials(open=True)
    return Credentials(tokens, read_only, certificates)


class ApiServer:
    """The listening server; serve() blocks until close()."""

    def __init__(self, options: ApiSettings, routes: Sequence[Route] = ()) -> None:
        self.options = options
        self.routes: list[Route] = []
        self.mount(routes)
        self._closers: list[Callable[[], None]] = []
        self._streams: set[socket.socket] = set()
        self._streams_lock = threading.Lock()
        activated = _activated_socket()
        if activated is not None:
            sock = activated
            tcp = sock.family != socket.AF_UNIX
            where = "socket-activated " + str(sock.getsockname())
            listen_host = str(sock.getsockname()[0]) if tcp else ""
        else:
            listener = parse_listen(options.listen)
            tcp = listener.is_tcp
            listen_host = listener.host
            if listener.unix_path is not None:
                sock = _unix_socket(listener.unix_path, SOCKET_MODE)
                where = f"unix://{listener.unix_path}"
            else:
                sock = None  # bound below, after the credentials are known to be good
                where = f"{listener.host}:{listener.port}"
        try:
            self.tls = _tls_context(options) if tcp else None
            if tcp and self.tls is None and not options.insecure:
                raise ConfigError(
                    "a TCP listener needs TLS: --api-cert-file and --api-key-file, or --insecure"
                )
            self.credentials = _credentials(options, tcp)
            if sock is None:
                sock = _tcp_socket(listener.host, listener.port)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        self.socket = sock
        self.unix_path = None if tcp or activated is not None else listener.unix_path
        self.where = where
        self.tcp = tcp
        self.listen_host = listen_host.lower()  # a Host an --insecure listener answers to
        self._http = _HttpServer(self)
        self._serving = False  # http.server's shutdown() would wait forever for a serve() never run

    @property
    def address(self) -> Any:
        return self.socket.getsockname()

    def mount(self, routes: Sequence[Route]) -> None:
        """Add routes (before serve(): made once the cluster's view is read)."""
        self.routes = sorted([*self.routes, *routes], key=lambda r: len(r.prefix), reverse=True)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback` in close() (a route's feed ends its streams)."""
        self._closers.append(callback)

    def _stream_opened(self, connection: socket.socket) -> bool:
        with self._streams_lock:
            if len(self._streams) >= MAX_STREAMS:
                return False
            self._streams.add(connection)
            return True

    def _stream_closed(self, connection: socket.socket) -> None:
        with self._streams_lock:
            self._streams.discard(connection)

    def serve(self) -> None:
        if self.tcp and self.credentials.open:
            log_event(
                "api_insecure",
                listen=self.where,
                detail="TCP without TLS or credentials: anyone who reaches it controls the cluster",
            )
        log_event(
            "api_listening",
            listen=self.where,
            tls=self.tls is not None,
            client_certificates=self.credentials.client_certificates,
            tokens=len(self.credentials.tokens),
            read_only_tokens=len(self.credentials.read_only_tokens),
        )
        self._serving = True
        self._http.serve_forever(poll_interval=0.5)

    def start(self) -> ApiServer:
        """serve() in a thread (tests, and daemons with more to do)."""
        # Set here, not only in serve(): a close() right after start() must still stop a
        # serve_forever() the thread is about to enter (shutdown() waits for it to begin).
        self._serving = True
        threading.Thread(target=self.serve, name="api-server", daemon=True).start()
        return self

    def close(self) -> None:
        if self._serving:
            self._http.shutdown()
        self._http.server_close()
        for callback in self._closers:
            callback()
        with self._streams_lock:
            streams = list(self._streams)
        for connection in streams:  # the clients see the end now, not at the next write
            try:
                # socket.socket's shutdown, not SSLSocket's: that one drops its TLS state
                # first, so a handler's sendall in that moment would write plaintext.
                socket.socket.shutdown(connection, socket.SHUT_RDWR)
            except OSError:
                pass
        if self.unix_path is not None:
            try:
                os.unlink(self.unix_path)
            except FileNotFoundError:
                pass

    def route(self, path: str) -> tuple[Route, str] | None:
        for route in self.routes:
            if route.prefix == "" or path == route.prefix or path.startswith(route.prefix + "/"):
                return route, path[len(route.prefix) :]
        return None


def prepare_connection(connection: socket.socket) -> None:
    """An accepted connection: bounded idle time, and on TCP no Nagle delay. With Nagle a
    write after one not yet acknowledged (a response's body after its headers, when they
    were two writes; a stream's next piece) waited for the client's delayed ACK: 40 ms
    per request on a kept-alive connection (bench/bench_api.py)."""
    connection.settimeout(IDLE_SECONDS)
    if connection.family in (socket.AF_INET, socket.AF_INET6):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HttpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Accepts connections (also on a unix or an activated socket) and serves each in a
    thread of its own; close() stops it via shutdown()."""

    daemon_threads = True

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        super().__init__(("", 0), _Connection, bind_and_activate=False)
        self.socket.close()
        self.socket = api.socket

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the connection's own thread, so a slow or
        # silent client cannot stall accepting the others.
        prepare_connection(request)
        if self.api.tls is not None:
            try:
                request = self.api.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log_event("api_tls_refused", peer=client_address, error=exc)
                request.close()
                return
        try:
            super().finish_request(request, client_address)
        finally:
            close_gently(request)

    def shutdown_request(self, request: Any) -> None:
        pass  # finish_request closed it (the TLS socket, not the plain one it wraps)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return  # the client went away, or said nothing for IDLE_SECONDS
        log_event("api_connection_error", peer=client_address, error=repr(error)[:300])


def close_gently(connection: socket.socket) -> None:
    """Close after a last answer: our side first, then whatever the client still sends
    (a refused request's body) is read and dropped for a moment. A close() with unread
    bytes makes the kernel send a reset, which can destroy the answer before the client
    read it, so the client would never learn why."""
    try:
        # socket.socket's own calls: an SSLSocket's would drop or expect its TLS state.
        socket.socket.shutdown(connection, socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        dropped = 0
        while dropped < MAX_BODY_BYTES and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            chunk = socket.socket.recv(connection, READ_BYTES)
            if not chunk:
                break
            dropped += len(chunk)
    except OSError:
        pass
    finally:
        connection.close()


@dataclass(frozen=True)
class _Head:
    """A request's line and header fields, as h11 parsed them."""

    method: str
    target: str
    version: str
    fields: tuple[tuple[str, str], ...]  # (lower-case name, value)

    @staticmethod
    def of(event: h11.Request) -> _Head:
        return _Head(
            event.method.decode("ascii"),
            event.target.decode("latin-1"),
            event.http_version.decode("ascii"),
            tuple(
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers
            ),
        )

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key == name), None)

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]

    @property
    def size(self) -> int:
        """Bytes of the request line and fields, about as sent."""
        line = len(self.method) + len(self.target) + 11
        return line + sum(len(key) + len(value) + 4 for key, value in self.fields)


class _Connection(socketserver.BaseRequestHandler):
    """One client connection: h11 reads each request and frames each answer (RFC 9112:
    one Content-Length, never both it and Transfer-Encoding, no HTTP/0.9, no header lines
    it cannot read), one request at a time. An answer given before a request's body was
    read ends the connection, so that body is never read as the next request."""

    server: _HttpServer
    request: socket.socket

    def setup(self) -> None:
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.method = ""

    def address_string(self) -> str:
        return str(self.client_address[0]) if self.client_address else "unix"

    def handle(self) -> None:
        while True:
            try:
                event = self._next_event()
                if not isinstance(event, h11.Request):
                    return  # the client closed the connection
                keep = self._exchange(_Head.of(event))
            except h11.RemoteProtocolError as exc:
                self._malformed(exc)
                return
            if not keep or self.h11.our_state is not h11.DONE:
                return
            if self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    def _next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.h11.their_state is h11.IDLE:
                _check_request_line(self.h11.trailing_data[0])
            # b"" (the client closed) becomes h11's ConnectionClosed, or its error
            # when that happens inside a request.
            self.h11.receive_data(self.request.recv(READ_BYTES))

    def _read_body(self) -> bytes:
        if self.h11.they_are_waiting_for_100_continue:
            self.request.sendall(
                self.h11.send(
                    h11.InformationalResponse(status_code=100, headers=[], reason="Continue")
                )
            )
        parts = []
        while True:
            event = self._next_event()
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            else:  # EndOfMessage (a client that closes early is h11's error)
                return b"".join(parts)

    def _malformed(self, exc: h11.RemoteProtocolError) -> None:
        """A request h11 could not read: fleet's error JSON, then the connection closes."""
        log_event("api_http", peer=self.address_string(), detail=str(exc)[:200])
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            self._send(error_response(status, f"malformed request: {exc}"), close=True)

    def _exchange(self, head: _Head) -> bool:
        """Answer one request; whether the connection may carry another."""
        began = time.monotonic()
        self.method = head.method
        response, close = self._respond(head)
        try:
            if response.stream is not None:
                self._send_stream(response, response.stream)
                return False
            self._send(response, close)
            return not close
        finally:
            if response.status >= 400 or head.method not in ("GET", "HEAD"):
                log_event(
                    "api_request",
                    method=head.method[:20],
                    path=(_split_target(head.target) or ("",))[0][:200],
                    status=response.status,
                    ms=round((time.monotonic() - began) * 1000, 1),
                )

    def _send(self, response: ApiResponse, close: bool = False) -> None:
        status = response.status
        headers = [("Server", SERVER), ("Date", formatdate(usegmt=True))]
        if status not in (204, 304):  # they have no body, and say no length (RFC 9110)
            if response.content_type:
                headers.append(("Content-Type", response.content_type))
            headers.append(("Content-Length", str(len(response.body))))
        headers += response.headers
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="fleetpy"'))
        if close:
            headers.append(("Connection", "close"))
        data = self.h11.send(
            h11.Response(status_code=status, headers=headers, reason=_reason(status))
        )
        if response.body and self.method != "HEAD" and status not in (204, 304):
            data += self.h11.send(h11.Data(data=response.body))
        data += self.h11.send(h11.EndOfMessage())
        self.request.sendall(data)

    def _send_stream(self, response: ApiResponse, stream: Iterator[bytes]) -> None:
        api = self.server.api
        connection = self.request
        streaming = self.method != "HEAD"
        if streaming and not api._stream_opened(connection):
            _close_iterator(stream)
            log_event("api_stream_refused", peer=self.address_string(), streams=MAX_STREAMS)
            self._send(error_response(503, "too many streams open"), close=True)
            return
        if not streaming:
            _close_iterator(stream)
        # No length and no chunking: the stream is the rest of the connection (which h11
        # would frame as chunks), so the head is written here and the connection ends.
        headers = [
            ("Server", SERVER),
            ("Date", formatdate(usegmt=True)),
            ("Content-Type", response.content_type),
            ("Cache-Control", "no-store"),
            *response.headers,
            ("Connection", "close"),
        ]
        lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        try:
            connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if streaming:
                for chunk in stream:
                    connection.sendall(chunk)
        except OSError:
            pass  # the client went away, or close() shut the connection: the stream ends
        finally:
            if streaming:
                _close_iterator(stream)
                api._stream_closed(connection)

    def _verified_certificate(self) -> bool:
        connection = self.request
        return isinstance(connection, ssl.SSLSocket) and bool(connection.getpeercert())

    def _cookie_name(self) -> str:
        return TLS_TOKEN_COOKIE if self.server.api.tls is not None else TOKEN_COOKIE

    def _browser_token(self, head: _Head, query: dict[str, list[str]]) -> tuple[str | None, bool]:
        """(the token a browser sent in the URL or its cookie, whether from the URL)."""
        if query.get(TOKEN_PARAMETER):
            return query[TOKEN_PARAMETER][0], True
        return _cookie(head.get_all("cookie"), self._cookie_name()), False

    def _token_cookie(self, token: str) -> tuple[str, str]:
        cookie = f"{self._cookie_name()}={token}; Path=/; HttpOnly; SameSite=Strict"
        return "Set-Cookie", cookie + ("; Secure" if self.server.api.tls is not None else "")

    def _rebinding_refused(self, head: _Head, api: ApiServer) -> str | None:
        """Why a request to an --insecure TCP listener looks like DNS rebinding or a
        cross-site write, if it does."""
        host_header = head.get("host")
        if host_header is None:
            return "a request without a Host header"
        host, port = _split_host(host_header.strip())
        if not (host == "localhost" or host == api.listen_host or _is_ip(host)):
            return (
                f"Host {host_header.strip()[:100]!r}: this --insecure listener answers only "
                "to an IP address, localhost or its --listen host"
            )
        if head.method in ("GET", "HEAD"):
            return None
        origin = head.get("origin")
        if origin is None:
            return None
        default = 443 if api.tls is not None else 80
        try:
            split = urlsplit(origin.strip())
            origin_port = split.port
        except ValueError:
            split, origin_port = urlsplit(""), None
        origin_host = (split.hostname or "").lower()
        if origin_port is None:
            origin_port = {"http": 80, "https": 443}.get(split.scheme.lower())
        if (origin_host, origin_port) != (host, port if port is not None else default):
            return f"a write from another origin ({origin.strip()[:100]!r})"
        return None

    def _respond(self, head: _Head) -> tuple[ApiResponse, bool]:
        """The answer, and whether the connection must close after it: every refusal
        given before the body is read closes it."""
        api = self.server.api
        if head.version not in ("1.0", "1.1"):
            return error_response(505, f"HTTP/{head.version} is not supported"), True
        if head.size > MAX_HEAD_BYTES:
            return error_response(431, f"request head over {MAX_HEAD_BYTES} bytes"), True
        if len(head.target) > MAX_HEADER_TARGET:
            return error_response(414, "request target too long"), True
        if head.method not in METHODS:
            # fleet's answer to any other method (OPTIONS included), and no CORS headers:
            # no other origin may use this API.
            return error_response(405, f"method {head.method[:20]} not allowed"), True
        if api.tcp and api.credentials.open:
            refused = self._rebinding_refused(head, api)
            if refused is not None:
                return error_response(403, refused), True
        access = api.credentials.access(head.get("authorization"), self._verified_certificate())
        target = _split_target(head.target)
        if target is None:
            return error_response(400, "invalid request target"), True
        path = unquote(target[0])
        query = parse_qs(target[1], keep_blank_values=True)
        found = api.route(path) if _names_something(path) else None
        if found is None:
            return error_response(404, "not found"), True
        route, rest = found
        set_cookie: tuple[str, str] | None = None
        if access is Access.NONE and route.browser and head.method in ("GET", "HEAD"):
            token, from_url = self._browser_token(head, query)
            # Cookie-safe characters only: a token that could break the header is no token.
            if token is not None and token.isascii() and token.isprintable() and ";" not in token:
                granted = api.credentials.token_access(token)
                if granted is Access.WRITE:
                    # Not kept in a URL, a history and a cookie jar: it could write.
                    return error_response(
                        401,
                        "a read-write token is not taken from the URL or a cookie: use a "
                        "read-only token (--read-only-token-file) for the dashboard",
                    ), True
                if granted is Access.READ:
                    access = Access.READ
                    if from_url:
                        set_cookie = self._token_cookie(token)
        if access is Access.NONE and not route.public:
            return error_response(401, "credentials required"), True
        length = head.get("content-length")  # h11 made sure there is one value at most
        if head.get("transfer-encoding") is not None:
            if length is not None:  # RFC 9112 6.1: two framings, never guess which one
                return error_response(400, "both Transfer-Encoding and Content-Length"), True
            return error_response(411, "a request body needs a Content-Length"), True
        if length is not None and int(length) > MAX_BODY_BYTES:
            # Not read: the connection closes instead of reading an attacker's body.
            return error_response(
                413, f"request body of {int(length)} bytes; at most {MAX_BODY_BYTES}"
            ), True
        request = ApiRequest(
            method=head.method,
            path=rest,
            query={k: tuple(v) for k, v in query.items()},
            body=self._read_body(),
            content_type=head.get("content-type") or "",
            read_only=access is Access.READ,
            last_event_id=(head.get("last-event-id") or "")[:100],
        )
        try:
            response = route.handler(request)
            if set_cookie is not None:
                response = replace(response, headers=(*response.headers, set_cookie))
            return response, False
        except Exception as exc:  # one bad request must never take the server down
            log_event("api_handler_failed", path=path[:200], error=repr(exc)[:300])
            return error_response(500, "internal error"), False


def _check_request_line(received: bytes) -> None:
    """Refuse a first line that is no HTTP/1 request line as soon as it is complete: h11
    would wait for the header block's end, and an HTTP/0.9 request (`GET /path`, no
    version, no headers) would wait for the idle timeout."""
    line, newline, _ = received.lstrip(b"\r\n").partition(b"\n")
    if newline and not _REQUEST_LINE.fullmatch(line.removesuffix(b"\r")):
        raise h11.RemoteProtocolError("not an HTTP/1 request line", error_status_hint=400)


def _split_target(target: str) -> tuple[str, str] | None:
    """(path, query) of a request target still encoded: `/path?query`, or the absolute
    form `http://host/path?query`; None for any other. Not urlsplit on `/path`: it reads
    `//host/fleet/v1/...` as a host and the path after it."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    try:
        split = urlsplit(target)
    except ValueError:  # http://[not-an-address/
        return None
    if split.scheme.lower() not in ("http", "https") or not split.netloc:
        return None
    return split.path or "/", split.query


def _names_something(path: str) -> bool:
    """A decoded path as fleet's router took it: every segment a name, so no empty, `.`
    or `..` segment and no trailing slash. Checked after decoding: `web.service%2f` is
    `web.service/`, not web.service."""
    if path == "/":
        return True
    return path.startswith("/") and all(s not in ("", ".", "..") for s in path[1:].split("/"))


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _cookie(headers: Sequence[str], name: str) -> str | None:
    """The first cookie called `name`. By hand, not SimpleCookie: that drops every cookie
    of a header when one of them (another site's, on localhost) does not parse."""
    for header in headers:
        for part in header.split(";"):
            key, sep, value = part.partition("=")
            if sep and key.strip() == name:
                return value.strip() or None
    return None


def _split_host(value: str) -> tuple[str, int | None]:
    """A Host header's (host, port): `name`, `name:port`, `[v6]`, `[v6]:port`."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = value.partition(":")
    return host.lower(), int(port) if port.isdigit() and len(port) <= 5 else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _close_iterator(stream: Iterator[bytes]) -> None:
    close = getattr(stream, "close", None)  # a generator's finally runs now
    if callable(close):
        close()


__all__ = [
    "MAX_BODY_BYTES",
    "ApiServer",
    "Listener",
    "Route",
    "parse_listen",
]
