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
import socket
import ssl
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError
from ..log import log_event
from .auth import Access, Credentials, read_tokens
from .messages import ApiRequest, ApiResponse, error_response

DEFAULT_SOCKET = "/run/fleetpy/api.sock"
# The largest request body read: a unit's options are a few KiB; more is refused unread.
MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_TARGET = 8192  # a request line longer than this is refused (414)
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
class ServerOptions:
    listen: str = DEFAULT_SOCKET  # a socket path, unix:///path, or HOST:PORT
    cert_file: str | None = None  # the server's TLS certificate (TCP)
    key_file: str | None = None
    client_ca_file: str | None = None  # require client certificates signed by this CA
    token_file: str | None = None  # bearer tokens that may read and write
    read_only_token_file: str | None = None  # bearer tokens that may only read
    insecure: bool = False  # TCP without TLS or credentials
    socket_mode: int = 0o660


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


def _tls_context(options: ServerOptions) -> ssl.SSLContext | None:
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


def _credentials(options: ServerOptions, tcp: bool) -> Credentials:
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

    def __init__(self, options: ServerOptions, routes: Sequence[Route] = ()) -> None:
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
                sock = _unix_socket(listener.unix_path, options.socket_mode)
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
    """An accepted connection: bounded idle time, and on TCP no Nagle delay. A response
    is two writes (headers, then body); with Nagle the body waited for the client's
    delayed ACK, 40 ms per request on a kept-alive connection (bench/bench_api.py)."""
    connection.settimeout(IDLE_SECONDS)
    if connection.family in (socket.AF_INET, socket.AF_INET6):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        super().__init__(("", 0), _RequestHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = api.socket
        self.server_name = "fleetpy"
        self.server_port = 0

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
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return  # the client went away: nothing to say
        log_event("api_connection_error", peer=client_address, error=repr(error)[:300])


class _RequestHandler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"  # keep-alive: pollers reuse their connection
    server_version = "fleetpy"
    sys_version = ""

    def address_string(self) -> str:
        return str(self.client_address[0]) if self.client_address else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        # http.server's own complaints (bad request lines): one key=value line.
        log_event("api_http", peer=self.address_string(), detail=format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _dispatch logs what is worth a line (errors and writes), not every poll

    def do_GET(self) -> None:
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_POST = do_HEAD = do_GET

    def _send(self, response: ApiResponse, close: bool = False) -> None:
        if response.stream is not None:
            self._send_stream(response, response.stream)
            return
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        if response.status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="fleetpy"')
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _send_stream(self, response: ApiResponse, stream: Iterator[bytes]) -> None:
        api = self.server.api
        connection = self.connection
        streaming = self.command != "HEAD"
        if streaming and not api._stream_opened(connection):
            _close_iterator(stream)
            log_event("api_stream_refused", peer=self.address_string(), streams=MAX_STREAMS)
            self._send(error_response(503, "too many streams open"), close=True)
            return
        if not streaming:
            _close_iterator(stream)
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Cache-Control", "no-store")
            for name, value in response.headers:
                self.send_header(name, value)
            # No length and no chunking: the stream is the rest of the connection.
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            if streaming:
                for chunk in stream:
                    self.wfile.write(chunk)
        except OSError:
            pass  # the client went away, or close() shut the connection: the stream ends
        finally:
            if streaming:
                _close_iterator(stream)
                api._stream_closed(connection)

    def _verified_certificate(self) -> bool:
        connection = self.connection
        return isinstance(connection, ssl.SSLSocket) and bool(connection.getpeercert())

    def _dispatch(self) -> None:
        began = time.monotonic()
        api = self.server.api
        response, close = self._respond(api)
        try:
            self._send(response, close)
        finally:
            if response.status >= 400 or self.command not in ("GET", "HEAD"):
                log_event(
                    "api_request",
                    method=self.command,
                    path=urlsplit(self.path).path[:200],
                    status=response.status,
                    ms=round((time.monotonic() - began) * 1000, 1),
                )

    def _cookie_name(self) -> str:
        return TLS_TOKEN_COOKIE if self.server.api.tls is not None else TOKEN_COOKIE

    def _browser_token(self, query: dict[str, list[str]]) -> tuple[str | None, bool]:
        """(the token a browser sent in the URL or its cookie, whether from the URL)."""
        if query.get(TOKEN_PARAMETER):
            return query[TOKEN_PARAMETER][0], True
        return _cookie(self.headers.get_all("Cookie") or [], self._cookie_name()), False

    def _token_cookie(self, token: str) -> tuple[str, str]:
        cookie = f"{self._cookie_name()}={token}; Path=/; HttpOnly; SameSite=Strict"
        return "Set-Cookie", cookie + ("; Secure" if self.server.api.tls is not None else "")

    def _rebinding_refused(self, api: ApiServer) -> str | None:
        """Why a request to an --insecure TCP listener looks like DNS rebinding or a
        cross-site write, if it does."""
        host_header = self.headers.get("Host")
        if host_header is None:
            return "a request without a Host header"
        host, port = _split_host(host_header.strip())
        if not (host == "localhost" or host == api.listen_host or _is_ip(host)):
            return (
                f"Host {host_header.strip()[:100]!r}: this --insecure listener answers only "
                "to an IP address, localhost or its --listen host"
            )
        if self.command in ("GET", "HEAD"):
            return None
        origin = self.headers.get("Origin")
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

    def _respond(self, api: ApiServer) -> tuple[ApiResponse, bool]:
        if len(self.path) > MAX_HEADER_TARGET:
            return error_response(414, "request target too long"), True
        if api.tcp and api.credentials.open:
            refused = self._rebinding_refused(api)
            if refused is not None:
                return error_response(403, refused), False
        access = api.credentials.access(
            self.headers.get("Authorization"), self._verified_certificate()
        )
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        found = api.route(path)
        if found is None:
            return error_response(404, "not found"), False
        route, rest = found
        set_cookie: tuple[str, str] | None = None
        if access is Access.NONE and route.browser and self.command in ("GET", "HEAD"):
            token, from_url = self._browser_token(query)
            # Cookie-safe characters only: a token that could break the header is no token.
            if token is not None and token.isascii() and token.isprintable() and ";" not in token:
                granted = api.credentials.token_access(token)
                if granted is Access.WRITE:
                    # Not kept in a URL, a history and a cookie jar: it could write.
                    return error_response(
                        401,
                        "a read-write token is not taken from the URL or a cookie: use a "
                        "read-only token (--read-only-token-file) for the dashboard",
                    ), False
                if granted is Access.READ:
                    access = Access.READ
                    if from_url:
                        set_cookie = self._token_cookie(token)
        if access is Access.NONE and not route.public:
            return error_response(401, "credentials required"), False
        if self.headers.get("Transfer-Encoding"):
            return error_response(411, "a request body needs a Content-Length"), True
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return error_response(400, "invalid Content-Length"), True
        if length < 0:
            return error_response(400, "invalid Content-Length"), True
        if length > MAX_BODY_BYTES:
            # Not read: the connection closes instead of draining an attacker's body.
            return error_response(
                413, f"request body of {length} bytes; at most {MAX_BODY_BYTES}"
            ), True
        body = self.rfile.read(length) if length else b""
        request = ApiRequest(
            method=self.command,
            path=rest,
            query={k: tuple(v) for k, v in query.items()},
            body=body,
            content_type=self.headers.get("Content-Type", ""),
            read_only=access is Access.READ,
        )
        try:
            response = route.handler(request)
            if set_cookie is not None:
                response = replace(response, headers=(*response.headers, set_cookie))
            return response, False
        except Exception as exc:  # one bad request must never take the server down
            log_event("api_handler_failed", path=path[:200], error=repr(exc)[:300])
            return error_response(500, "internal error"), False


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
    "DEFAULT_SOCKET",
    "MAX_BODY_BYTES",
    "ApiServer",
    "Listener",
    "Route",
    "ServerOptions",
    "parse_listen",
]
