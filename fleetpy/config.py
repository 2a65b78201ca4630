"""Settings: one table drives the CLI options, environment variables and YAML config,
and what comes out is a frozen, typed record (mkosi's way).

Precedence, highest first: command-line option, environment variable, config file,
default. Defaults live in the records below, nowhere else: each component takes its
record (the etcd connection's is the registry's RegistryConfig, which must not depend on
this parsing); fields a record has beyond the table are what a daemon adds at start.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import ConfigError, FileError
from .files import MAX_VALUES_BYTES, display_path, read_text_file
from .metadata import MAX_ITEMS as MAX_METADATA_ITEMS
from .metadata import key_problem, value_problem
from .registry import RegistryConfig


class Scope(StrEnum):
    """Who reads a setting: everyone (etcd), the agent, the engine."""

    ETCD = "etcd"
    AGENT = "agent"
    ENGINE = "engine"
    SSH = "ssh"  # the CLI's status, journal and ssh verbs
    SIGN = "sign"  # the CLI's signing keys (submit, load, start, apply; keys)
    API = "api"  # `fleetpy api`: where it listens and who may use it
    METRICS = "metrics"  # the daemons' Prometheus endpoint (engine and agent)


class UnitManagerKind(StrEnum):
    SYSTEMD = "systemd"  # the real one: systemd over D-Bus
    SIMULATED = "simulated"  # in memory: scale tests and benchmarks


class OnRevoke(StrEnum):
    """What an agent does with a unit running with exactly the content a key signed, when
    that key stops counting (revoked, expired, removed: fleetpy.trust)."""

    KEEP = "keep"  # it runs on as it runs; it is not started again, nor changed
    STOP = "stop"  # stopped and removed, as any refused unit


@dataclass(frozen=True)
class AgentSettings:
    machine_id: str | None = None  # None: read /etc/machine-id
    public_ip: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    ttl: int = 10
    unit_dir: str = "/run/fleetpy/units"
    unit_manager: UnitManagerKind = UnitManagerKind.SYSTEMD
    trusted_keys: str | None = None  # a directory of *.pub; None: units are not verified
    on_revoke: OnRevoke = OnRevoke.KEEP
    signatures_required: int = 1  # distinct trusted keys that must have signed a unit


@dataclass(frozen=True)
class EngineSettings:
    lease_ttl: int = 10
    reconcile_interval: float = 30.0
    machine_grace: float | None = None  # None: the longest agent TTL + 2 s
    mass_loss_fraction: float = 0.5
    compaction_interval: float = 300.0  # kube-apiserver's --etcd-compaction-interval; 0: off


@dataclass(frozen=True)
class SshSettings:
    """How the CLI reaches a unit's machine, as fleetctl did (over the system ssh)."""

    username: str = "root"
    port: int = 22
    identity: str | None = None  # a private key file (default: ssh's own choice)
    tunnel: str | None = None  # HOST[:PORT]: every connection jumps through it
    strict_host_key_checking: bool = True
    known_hosts_file: str = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class SignSettings:
    """Where the CLI keeps its signing keys, and the key it signs with by default."""

    keys_dir: str = "~/.config/fleetpy/keys"
    sign_key: str | None = None  # a key name in keys_dir, or a path; None: do not sign


@dataclass(frozen=True)
class ApiSettings:
    """`fleetpy api`: a unix socket unless told otherwise; TCP with credentials."""

    listen: str = "/run/fleetpy/api.sock"  # a socket path, unix:///path or HOST:PORT
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    token_file: str | None = None
    read_only_token_file: str | None = None
    # TCP without TLS or credentials: `fleetpy api --insecure`, a flag of that command
    # only (no environment variable or config key: it must be asked for each time).
    insecure: bool = False


@dataclass(frozen=True)
class ListenAddress:
    host: str  # an IP address (IPv6 without brackets) or a host name
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MetricsSettings:
    listen: ListenAddress | None = None  # None: no metrics endpoint


@dataclass(frozen=True)
class Settings:
    etcd: RegistryConfig = field(default_factory=RegistryConfig)
    agent: AgentSettings = field(default_factory=AgentSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    ssh: SshSettings = field(default_factory=SshSettings)
    sign: SignSettings = field(default_factory=SignSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


def _parse_metadata(value: Any) -> dict[str, str]:
    """`key=value,key2=value2` (CLI/env) or a mapping (YAML)."""
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        items = []
        for item in str(value).replace(" ", ",").split(","):
            if not item:
                continue
            key, sep, val = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"invalid metadata item {item!r}: expected key=value")
            items.append((key, val))
    if len(items) > MAX_METADATA_ITEMS:
        raise ConfigError(f"too much metadata: {len(items)} items (at most {MAX_METADATA_ITEMS})")
    for key, val in items:
        problem = key_problem(key) or value_problem(key, val)
        if problem:
            raise ConfigError(problem)
    return dict(items)


def _bounded_float(low: float, high: float) -> Callable[[Any], float]:
    """A finite number in (low, high]: nan, inf and 1e400 are refused, not blamed on etcd."""

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        number = float(value)
        if not math.isfinite(number) or not low < number <= high:
            raise ValueError(f"expected a number of seconds above {low:g} and at most {high:g}")
        return number

    return parse


def _bounded_int(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        text = str(value).strip()
        if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,9}", text):
            raise ValueError(f"expected a whole number from {low} to {high}")
        number = int(text)
        if not low <= number <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return number

    return parse


def _fraction(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or not 0 < number < 1:
        raise ValueError("expected a fraction between 0 and 1, such as 0.5")
    return number


def _machine_id(value: Any) -> str:
    from .model.codecs import MACHINE_ID  # the records' grammar: loaded when a setting has one

    text = str(value)
    if not MACHINE_ID.fullmatch(text):
        raise ValueError(
            "expected letters, digits and _.:- (at most 128), such as the "
            "32 hex digits of /etc/machine-id"
        )
    return text


def _ip_address(value: Any) -> str:
    text = str(value).strip()
    if text:
        ipaddress.ip_address(text)  # ValueError names the problem
    return text


def _unit_manager(value: Any) -> UnitManagerKind:
    try:
        return UnitManagerKind(str(value))
    except ValueError:
        raise ValueError(f"expected {' or '.join(UnitManagerKind)}") from None


def _on_revoke(value: Any) -> OnRevoke:
    try:
        return OnRevoke(str(value))
    except ValueError:
        raise ValueError(f"expected {' or '.join(OnRevoke)}") from None


def _path(value: Any) -> str:
    text = str(value)
    if not text or "\x00" in text or not text.isprintable():
        raise ValueError("expected a file path")
    return text


_SSH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_TUNNEL = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*@)?[A-Za-z0-9.:\[\]-]+")


def _ssh_user(value: Any) -> str:
    text = str(value)
    if not _SSH_NAME.fullmatch(text):
        raise ValueError("expected a user name of letters, digits and _.-")
    return text


def _tunnel(value: Any) -> str:
    text = str(value)
    if not _TUNNEL.fullmatch(text) or text.startswith("-"):
        raise ValueError("expected [USER@]HOST[:PORT]")
    return text


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def is_boolean_word(text: str) -> bool:
    """A word a boolean setting takes (true, false, yes, no, on, off, 1, 0)."""
    return text.strip().lower() in _TRUE + _FALSE


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")


def _listen_address(value: Any) -> ListenAddress:
    """HOST:PORT, [IPv6]:PORT: an explicit host (0.0.0.0 for every address), port 1-65535."""
    text = str(value).strip()
    expected = "expected HOST:PORT, such as 127.0.0.1:9464, [::1]:9464 or 0.0.0.0:9464"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(expected)
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError(expected)
        except ValueError:
            raise ValueError(expected) from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(expected)
        if not _HOST_NAME.fullmatch(host) or len(host) > 253:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(expected) from None
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected a port from 1 to 65535 after the host ({expected})")
    return ListenAddress(host, int(port))


def _endpoints(value: Any) -> tuple[str, ...]:
    endpoints = tuple(e.strip() for e in str(value).split(",") if e.strip())
    if not endpoints:
        raise ValueError("no etcd endpoint given")
    return endpoints


def _text(value: Any) -> str:
    return str(value)


@dataclass(frozen=True)
class Setting:
    name: str  # key in the YAML config, dest of the command-line option
    option: str  # command-line flag
    env: str
    parse: Callable[[Any], Any]
    help: str
    scope: Scope
    field: str  # the field of the scope's settings record


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "endpoint",
        "--endpoint",
        "FLEETPY_ENDPOINT",
        _endpoints,
        "etcd endpoint URLs, comma-separated",
        Scope.ETCD,
        "endpoints",
    ),
    Setting(
        "etcd_prefix",
        "--etcd-prefix",
        "FLEETPY_ETCD_PREFIX",
        _text,
        "key prefix of fleetpy's data in etcd",
        Scope.ETCD,
        "prefix",
    ),
    Setting(
        "request_timeout",
        "--request-timeout",
        "FLEETPY_REQUEST_TIMEOUT",
        _bounded_float(0, 3600),
        "seconds to wait for etcd before giving up",
        Scope.ETCD,
        "timeout",
    ),
    Setting(
        "ca_file",
        "--ca-file",
        "FLEETPY_CA_FILE",
        _path,
        "CA certificate to verify etcd's TLS certificate",
        Scope.ETCD,
        "ca_file",
    ),
    Setting(
        "cert_file",
        "--cert-file",
        "FLEETPY_CERT_FILE",
        _path,
        "client TLS certificate for etcd",
        Scope.ETCD,
        "cert_file",
    ),
    Setting(
        "key_file",
        "--key-file",
        "FLEETPY_KEY_FILE",
        _path,
        "client TLS key for etcd",
        Scope.ETCD,
        "key_file",
    ),
    Setting(
        "username",
        "--username",
        "FLEETPY_USERNAME",
        _text,
        "etcd user name",
        Scope.ETCD,
        "username",
    ),
    Setting(
        "password", "--password", "FLEETPY_PASSWORD", _text, "etcd password", Scope.ETCD, "password"
    ),
    Setting(
        "machine_id",
        "--machine-id",
        "FLEETPY_MACHINE_ID",
        _machine_id,
        "machine id (default: /etc/machine-id)",
        Scope.AGENT,
        "machine_id",
    ),
    Setting(
        "public_ip",
        "--public-ip",
        "FLEETPY_PUBLIC_IP",
        _ip_address,
        "IP address other machines reach this one at",
        Scope.AGENT,
        "public_ip",
    ),
    Setting(
        "metadata",
        "--metadata",
        "FLEETPY_METADATA",
        _parse_metadata,
        "machine metadata, key=value,key2=value2",
        Scope.AGENT,
        "metadata",
    ),
    Setting(
        "ttl",
        "--ttl",
        "FLEETPY_TTL",
        _bounded_int(2, 3600),
        "seconds before a silent machine is considered gone",
        Scope.AGENT,
        "ttl",
    ),
    Setting(
        "unit_dir",
        "--unit-dir",
        "FLEETPY_UNIT_DIR",
        _path,
        "where the agent writes unit files",
        Scope.AGENT,
        "unit_dir",
    ),
    Setting(
        "unit_manager",
        "--unit-manager",
        "FLEETPY_UNIT_MANAGER",
        _unit_manager,
        "systemd (D-Bus) or simulated (in memory)",
        Scope.AGENT,
        "unit_manager",
    ),
    Setting(
        "trusted_keys",
        "--trusted-keys",
        "FLEETPY_TRUSTED_KEYS",
        _path,
        "directory of public keys (*.pub): run only units signed by one of them "
        "(default: units are not verified)",
        Scope.AGENT,
        "trusted_keys",
    ),
    Setting(
        "on_revoke",
        "--on-revoke",
        "FLEETPY_ON_REVOKE",
        _on_revoke,
        "keep or stop a unit running here whose key was since revoked, expired or "
        "removed (default: keep)",
        Scope.AGENT,
        "on_revoke",
    ),
    Setting(
        "signatures_required",
        "--signatures-required",
        "FLEETPY_SIGNATURES_REQUIRED",
        _bounded_int(1, 8),
        "how many distinct trusted keys must have signed a unit (with --trusted-keys)",
        Scope.AGENT,
        "signatures_required",
    ),
    Setting(
        "lease_ttl",
        "--lease-ttl",
        "FLEETPY_ENGINE_LEASE_TTL",
        _bounded_int(2, 3600),
        "seconds the engine leader's lease lasts",
        Scope.ENGINE,
        "lease_ttl",
    ),
    Setting(
        "reconcile_interval",
        "--reconcile-interval",
        "FLEETPY_RECONCILE_INTERVAL",
        _bounded_float(0, 86400),
        "seconds between full reconcile passes",
        Scope.ENGINE,
        "reconcile_interval",
    ),
    Setting(
        "machine_grace",
        "--machine-grace",
        "FLEETPY_MACHINE_GRACE",
        _bounded_float(0, 86400),
        "seconds a machine missing after the engine was blind "
        "(new leader, etcd outage) keeps its units (default: longest agent TTL + 2)",
        Scope.ENGINE,
        "machine_grace",
    ),
    Setting(
        "mass_loss_fraction",
        "--mass-loss-fraction",
        "FLEETPY_MASS_LOSS_FRACTION",
        _fraction,
        "pause rescheduling when more than this share of machines is missing "
        "at once (all of them always pauses)",
        Scope.ENGINE,
        "mass_loss_fraction",
    ),
    Setting(
        "compaction_interval",
        "--compaction-interval",
        "FLEETPY_COMPACTION_INTERVAL",
        _bounded_float(0, 86400),
        "seconds of etcd history the leader keeps: every interval it compacts what is "
        "older (0: never; then etcd's own --auto-compaction-* must)",
        Scope.ENGINE,
        "compaction_interval",
    ),
    Setting(
        "ssh_username",
        "--ssh-username",
        "FLEETPY_SSH_USERNAME",
        _ssh_user,
        "user on the machines for status, journal and ssh",
        Scope.SSH,
        "username",
    ),
    Setting(
        "ssh_port",
        "--ssh-port",
        "FLEETPY_SSH_PORT",
        _bounded_int(1, 65535),
        "sshd's port on the machines",
        Scope.SSH,
        "port",
    ),
    Setting(
        "ssh_identity",
        "--ssh-identity",
        "FLEETPY_SSH_IDENTITY",
        _path,
        "private key for ssh (default: ssh's own)",
        Scope.SSH,
        "identity",
    ),
    Setting(
        "tunnel",
        "--tunnel",
        "FLEETPY_TUNNEL",
        _tunnel,
        "reach the machines through this ssh jump host, [USER@]HOST[:PORT]",
        Scope.SSH,
        "tunnel",
    ),
    Setting(
        "strict_host_key_checking",
        "--strict-host-key-checking",
        "FLEETPY_STRICT_HOST_KEY_CHECKING",
        _boolean,
        "refuse machines whose host key is not in the known-hosts file (alone: true; "
        "=false turns it off)",
        Scope.SSH,
        "strict_host_key_checking",
    ),
    Setting(
        "known_hosts_file",
        "--known-hosts-file",
        "FLEETPY_KNOWN_HOSTS_FILE",
        _path,
        "the machines' host keys",
        Scope.SSH,
        "known_hosts_file",
    ),
    Setting(
        "keys_dir",
        "--keys-dir",
        "FLEETPY_KEYS_DIR",
        _path,
        "directory of the signing keys (keys generate/list, --sign NAME)",
        Scope.SIGN,
        "keys_dir",
    ),
    Setting(
        "sign_key",
        "--sign-key",
        "FLEETPY_SIGN_KEY",
        _path,
        "sign the units submit, load, start and apply write with this key "
        "(a name in the keys directory, or a path)",
        Scope.SIGN,
        "sign_key",
    ),
    Setting(
        "listen",
        "--listen",
        "FLEETPY_API_LISTEN",
        _text,
        "where the API listens: a unix socket path, unix:///path, or HOST:PORT (TCP, which "
        "needs TLS and credentials, or --insecure)",
        Scope.API,
        "listen",
    ),
    Setting(
        "api_cert_file",
        "--api-cert-file",
        "FLEETPY_API_CERT_FILE",
        _path,
        "the API's TLS certificate (TCP)",
        Scope.API,
        "cert_file",
    ),
    Setting(
        "api_key_file",
        "--api-key-file",
        "FLEETPY_API_KEY_FILE",
        _path,
        "the API's TLS private key (TCP)",
        Scope.API,
        "key_file",
    ),
    Setting(
        "api_client_ca_file",
        "--api-client-ca-file",
        "FLEETPY_API_CLIENT_CA_FILE",
        _path,
        "accept API clients with a TLS certificate signed by this CA",
        Scope.API,
        "client_ca_file",
    ),
    Setting(
        "token_file",
        "--token-file",
        "FLEETPY_API_TOKEN_FILE",
        _path,
        "bearer tokens (one a line) that may read and write through the API",
        Scope.API,
        "token_file",
    ),
    Setting(
        "read_only_token_file",
        "--read-only-token-file",
        "FLEETPY_API_READ_ONLY_TOKEN_FILE",
        _path,
        "bearer tokens (one a line) that may only read (a dashboard's)",
        Scope.API,
        "read_only_token_file",
    ),
    Setting(
        "metrics_listen",
        "--metrics-listen",
        "FLEETPY_METRICS_LISTEN",
        _listen_address,
        "serve Prometheus metrics at http://HOST:PORT/metrics (default: off)",
        Scope.METRICS,
        "listen",
    ),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
# The options of boolean settings: on the command line they are switches, as fleetctl's
# (a bare `--strict-host-key-checking` is true, `--strict-host-key-checking=false` not).
SWITCHES = frozenset(s.option for s in SETTINGS if s.parse is _boolean)
_RECORDS: dict[Scope, type[Any]] = {
    Scope.ETCD: RegistryConfig,
    Scope.AGENT: AgentSettings,
    Scope.ENGINE: EngineSettings,
    Scope.SSH: SshSettings,
    Scope.SIGN: SignSettings,
    Scope.API: ApiSettings,
    Scope.METRICS: MetricsSettings,
}


def default(setting: Setting) -> Any:
    """A setting's default, from its record's dataclass (the one place defaults live)."""
    for record_field in fields(_RECORDS[setting.scope]):
        if record_field.name == setting.field:
            return getattr(_RECORDS[setting.scope](), record_field.name)
    raise KeyError(setting.field)


def add_arguments(parser: argparse.ArgumentParser, scopes: tuple[Scope, ...]) -> None:
    """The same settings as command-line options of a plain argparse parser (daemons
    that must not pay for typer/rich at start-up)."""
    for setting in SETTINGS:
        if setting.scope in scopes:
            parser.add_argument(
                setting.option,
                dest=setting.name,
                default=None,
                help=f"{setting.help} (env {setting.env})",
            )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The agent's YAML settings: a regular file of at most 1 MiB, bounded YAML."""
    from .yamlload import load_yaml_mapping  # PyYAML: only for a config file

    try:
        text = read_text_file(path, limit=MAX_VALUES_BYTES, what="config file")
    except FileError as exc:
        raise ConfigError(str(exc)) from None
    data = load_yaml_mapping(text, display_path(path), error=ConfigError)
    unknown = sorted(set(data) - set(SETTINGS_BY_NAME))
    if unknown:
        raise ConfigError(f"{display_path(path)}: unknown setting {unknown[0]!r}")
    return data


def resolve(
    cli: Mapping[str, Any],
    file_values: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    scopes: tuple[Scope, ...] = tuple(Scope),
) -> Settings:
    """The typed settings: every setting of `scopes` from the command line, environment,
    config file or default (other scopes keep their defaults). A bad value raises
    ConfigError naming where it came from."""
    environ = os.environ if environ is None else environ
    file_values = file_values or {}
    chosen: dict[Scope, dict[str, Any]] = {scope: {} for scope in Scope}
    for setting in SETTINGS:
        if setting.scope not in scopes:
            continue
        if cli.get(setting.name) is not None:
            raw, origin = cli[setting.name], setting.option
        elif environ.get(setting.env):
            raw, origin = environ[setting.env], setting.env
        elif file_values.get(setting.name) is not None:
            raw, origin = file_values[setting.name], f"config {setting.name}"
        else:
            continue
        try:
            chosen[setting.scope][setting.field] = setting.parse(raw)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid {origin} value {raw!r}: {exc}") from None
    return Settings(
        etcd=replace(RegistryConfig(), **chosen[Scope.ETCD]),
        agent=replace(AgentSettings(), **chosen[Scope.AGENT]),
        engine=replace(EngineSettings(), **chosen[Scope.ENGINE]),
        ssh=replace(SshSettings(), **chosen[Scope.SSH]),
        sign=replace(SignSettings(), **chosen[Scope.SIGN]),
        api=replace(ApiSettings(), **chosen[Scope.API]),
        metrics=replace(MetricsSettings(), **chosen[Scope.METRICS]),
    )


def read_machine_id(path: str = "/etc/machine-id") -> str:
    try:
        machine_id = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read machine id from {path}: {exc.strerror}") from None
    if not machine_id:
        raise ConfigError(f"{path} is empty; pass --machine-id")
    return machine_id
