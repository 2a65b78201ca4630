"""Who may use the API over TCP: TLS client certificates and/or bearer tokens.

A unix socket is guarded by its file mode (root and the socket's group); a TCP listener
always asks for credentials unless the operator said --insecure. Token files hold one token
per line (blank lines and '#' comments skipped); read-only tokens may only GET.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from ..errors import ConfigError, FileError
from ..files import read_text_file

MAX_TOKEN_FILE_BYTES = 64 * 1024
MIN_TOKEN_LENGTH = 16


class Access(StrEnum):
    NONE = "none"
    READ = "read"
    WRITE = "write"


def read_tokens(path: str) -> tuple[str, ...]:
    try:
        text = read_text_file(path, limit=MAX_TOKEN_FILE_BYTES, what="token file")
    except FileError as exc:
        raise ConfigError(str(exc)) from None
    tokens = tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
    if not tokens:
        raise ConfigError(f"{path}: no token in the token file")
    short = [t for t in tokens if len(t) < MIN_TOKEN_LENGTH]
    if short:
        raise ConfigError(f"{path}: a token shorter than {MIN_TOKEN_LENGTH} characters")
    return tokens


@dataclass(frozen=True)
class Credentials:
    """What a listener accepts."""

    tokens: tuple[str, ...] = ()  # read and write
    read_only_tokens: tuple[str, ...] = ()
    client_certificates: bool = False  # a verified client certificate may read and write
    open: bool = False  # no credentials asked (unix socket, or TCP with --insecure)

    def access(self, authorization: str | None, verified_certificate: bool) -> Access:
        if self.open or (self.client_certificates and verified_certificate):
            return Access.WRITE
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return Access.NONE
        return self.token_access(token)

    def token_access(self, token: str) -> Access:
        """What a bearer token alone allows (WRITE if it is in both files)."""
        token = token.strip()
        # compare_digest against every token: the time taken says nothing about which
        write = any(hmac.compare_digest(token.encode(), t.encode()) for t in self.tokens)
        read = any(hmac.compare_digest(token.encode(), t.encode()) for t in self.read_only_tokens)
        return Access.WRITE if write else Access.READ if read else Access.NONE


__all__ = ["Access", "Credentials", "read_tokens"]
