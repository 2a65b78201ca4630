"""Where etcd is: endpoint URLs checked before anything connects, and the prefix."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from ..errors import RegistryError

_PREFIX = re.compile(r"(/[A-Za-z0-9_.:@+-]+)*")

# A DNS name or an IP address (urlparse drops an IPv6 address's brackets).
_ENDPOINT_HOST = re.compile(
    r"[A-Za-z0-9_.-]{1,253}|(?=.*:)[0-9A-Fa-f:.]{2,45}(%[A-Za-z0-9_.-]{1,64})?"
)
# An etcd cluster has a handful of members; thousands of endpoints would only make
# every failure message thousands of lines long (each is listed with its error).
MAX_ENDPOINTS = 32


def parse_endpoint(url: str) -> tuple[str, int, bool]:
    text = url.strip()
    shown = repr(url if len(url) <= 100 else url[:100] + "...")
    if "://" not in text:
        text = "http://" + text
    try:
        parsed = urlparse(text)
    except ValueError as exc:
        raise RegistryError(f"invalid etcd endpoint {shown}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise RegistryError(f"invalid etcd endpoint {shown}: expected http(s)://HOST:PORT")
    # Parts gRPC would silently ignore: a password there would be neither used nor
    # safe (messages name the endpoint), and a path suggests a different server.
    if parsed.username is not None or parsed.password is not None:
        raise RegistryError(
            "invalid etcd endpoint: a user or password in the URL is not used; "
            "give --username and --password"
        )
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise RegistryError(
            f"invalid etcd endpoint {shown}: expected http(s)://HOST:PORT, without a path"
        )
    if not _ENDPOINT_HOST.fullmatch(parsed.hostname):
        raise RegistryError(f"invalid etcd endpoint {shown}: bad host name")
    try:
        port = parsed.port
    except ValueError:
        port = 0
    if port == 0:  # urlparse says None when there is none, 0 for ":0"
        raise RegistryError(f"invalid etcd endpoint {shown}: bad port (1 to 65535)")
    return parsed.hostname, port or 2379, parsed.scheme == "https"


def normalize_prefix(prefix: str) -> str:
    """'/fleetpy/' -> '/fleetpy'; '/' -> '' (the whole key space). Components are plain
    names: no empty, '.' or '..' parts, no spaces or control characters."""
    text = prefix.rstrip("/") if prefix != "/" else ""
    if not text.startswith("/") and text:
        text = "/" + text
    if (
        len(text) > 256
        or not _PREFIX.fullmatch(text)
        or any(part in (".", "..") for part in text.split("/"))
    ):
        raise RegistryError(
            f"invalid etcd prefix {prefix!r}: expected /NAME[/NAME...] with "
            "letters, digits and _.:@+-"
        )
    return text
