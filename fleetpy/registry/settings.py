"""How to reach etcd: RegistryConfig, the one record of the etcd settings, and its
defaults. Light on purpose (no gRPC): fleetpy.config and every CLI verb import it."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "/fleetpy"
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"


@dataclass(frozen=True)
class RegistryConfig:
    """How to reach etcd: the one record of the etcd settings (config.SETTINGS' etcd
    scope names their options, env vars and config keys; `timeout` is --request-timeout).
    Its defaults are those settings' defaults, stated here only."""

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    prefix: str = DEFAULT_PREFIX
    timeout: float = 5.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
