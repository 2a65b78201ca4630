"""One table of settings drives the CLI options, environment variables and YAML config.

Precedence, highest first: command-line option, environment variable, config file,
default. (mkosi's idea: a single table instead of three hand-kept lists.)
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, FileError
from .files import MAX_VALUES_BYTES, display_path, read_text_file
from .yamlload import load_yaml_mapping
from .registry import MACHINE_ID, DEFAULT_ENDPOINT, DEFAULT_PREFIX, RegistryConfig


_METADATA_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_METADATA_ITEMS = 64
MAX_METADATA_VALUE = 256


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
        if not _METADATA_KEY.fullmatch(key):
            raise ConfigError(f"invalid metadata key {key!r} (letters, digits and _.-, "
                              "at most 64)")
        if len(val) > MAX_METADATA_VALUE or not val.isprintable() or "," in val:
            raise ConfigError(f"invalid metadata value {val!r} for {key} (printable, no comma, "
                              f"at most {MAX_METADATA_VALUE} characters)")
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
    text = str(value)
    if not MACHINE_ID.fullmatch(text):
        raise ValueError("expected letters, digits and _.:- (at most 128), such as the "
                         "32 hex digits of /etc/machine-id")
    return text


def _ip_address(value: Any) -> str:
    text = str(value).strip()
    if text:
        ipaddress.ip_address(text)  # ValueError names the problem
    return text


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if str(value) not in allowed:
            raise ValueError(f"expected {' or '.join(allowed)}")
        return str(value)
    return parse


def _path(value: Any) -> str:
    text = str(value)
    if not text or "\x00" in text or not text.isprintable():
        raise ValueError("expected a file path")
    return text


@dataclass(frozen=True)
class Setting:
    name: str  # key in YAML config and in resolved dicts
    option: str  # command-line flag
    env: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    scope: str  # "etcd" (everyone), "agent", "engine"


SETTINGS: tuple[Setting, ...] = (
    Setting("endpoint", "--endpoint", "FLEETPY_ENDPOINT", DEFAULT_ENDPOINT, str,
            "etcd endpoint URLs, comma-separated", "etcd"),
    Setting("etcd_prefix", "--etcd-prefix", "FLEETPY_ETCD_PREFIX", DEFAULT_PREFIX, str,
            "key prefix of fleetpy's data in etcd", "etcd"),
    Setting("request_timeout", "--request-timeout", "FLEETPY_REQUEST_TIMEOUT", 5.0,
            _bounded_float(0, 3600), "seconds to wait for etcd before giving up", "etcd"),
    Setting("ca_file", "--ca-file", "FLEETPY_CA_FILE", None, _path,
            "CA certificate to verify etcd's TLS certificate", "etcd"),
    Setting("cert_file", "--cert-file", "FLEETPY_CERT_FILE", None, _path,
            "client TLS certificate for etcd", "etcd"),
    Setting("key_file", "--key-file", "FLEETPY_KEY_FILE", None, _path,
            "client TLS key for etcd", "etcd"),
    Setting("username", "--username", "FLEETPY_USERNAME", None, str,
            "etcd user name", "etcd"),
    Setting("password", "--password", "FLEETPY_PASSWORD", None, str,
            "etcd password", "etcd"),
    Setting("machine_id", "--machine-id", "FLEETPY_MACHINE_ID", None, _machine_id,
            "machine id (default: /etc/machine-id)", "agent"),
    Setting("public_ip", "--public-ip", "FLEETPY_PUBLIC_IP", "", _ip_address,
            "IP address other machines reach this one at", "agent"),
    Setting("metadata", "--metadata", "FLEETPY_METADATA", {}, _parse_metadata,
            "machine metadata, key=value,key2=value2", "agent"),
    Setting("ttl", "--ttl", "FLEETPY_TTL", 10, _bounded_int(2, 3600),
            "seconds before a silent machine is considered gone", "agent"),
    Setting("unit_dir", "--unit-dir", "FLEETPY_UNIT_DIR", "/run/fleetpy/units", _path,
            "where the agent writes unit files", "agent"),
    Setting("unit_manager", "--unit-manager", "FLEETPY_UNIT_MANAGER", "systemd",
            _choice("systemd", "simulated"), "systemd (D-Bus) or simulated (in memory)", "agent"),
    Setting("lease_ttl", "--lease-ttl", "FLEETPY_ENGINE_LEASE_TTL", 10, _bounded_int(2, 3600),
            "seconds the engine leader's lease lasts", "engine"),
    Setting("reconcile_interval", "--reconcile-interval", "FLEETPY_RECONCILE_INTERVAL", 30.0,
            _bounded_float(0, 86400), "seconds between full reconcile passes", "engine"),
    Setting("machine_grace", "--machine-grace", "FLEETPY_MACHINE_GRACE", None,
            _bounded_float(0, 86400), "seconds a machine missing after the engine was blind "
            "(new leader, etcd outage) keeps its units (default: longest agent TTL + 2)",
            "engine"),
    Setting("mass_loss_fraction", "--mass-loss-fraction", "FLEETPY_MASS_LOSS_FRACTION", 0.5,
            _fraction, "pause rescheduling when more than this share of machines is missing "
            "at once (all of them always pauses)", "engine"),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


def add_arguments(parser: "argparse.ArgumentParser", scopes: tuple[str, ...]) -> None:
    """The same settings as command-line options of a plain argparse parser (daemons
    that must not pay for typer/rich at start-up)."""
    for setting in SETTINGS:
        if setting.scope in scopes:
            parser.add_argument(setting.option, dest=setting.name, default=None,
                                help=f"{setting.help} (env {setting.env})")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The agent's YAML settings: a regular file of at most 1 MiB, bounded YAML."""
    try:
        text = read_text_file(path, limit=MAX_VALUES_BYTES, what="config file")
    except FileError as exc:
        raise ConfigError(str(exc)) from None
    data = load_yaml_mapping(text, display_path(path), error=ConfigError)
    unknown = sorted(set(data) - set(SETTINGS_BY_NAME))
    if unknown:
        raise ConfigError(f"{display_path(path)}: unknown setting {unknown[0]!r}")
    return data


def resolve(scopes: tuple[str, ...], cli: Mapping[str, Any], file_values: Mapping[str, Any] | None = None,
            environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resolve every setting of the given scopes; raises ConfigError on a bad value."""
    environ = os.environ if environ is None else environ
    file_values = file_values or {}
    resolved: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.scope not in scopes:
            continue
        if cli.get(setting.name) is not None:
            raw, origin = cli[setting.name], setting.option
        elif environ.get(setting.env):
            raw, origin = environ[setting.env], setting.env
        elif setting.name in file_values and file_values[setting.name] is not None:
            raw, origin = file_values[setting.name], f"config {setting.name}"
        else:
            resolved[setting.name] = setting.default
            continue
        try:
            resolved[setting.name] = setting.parse(raw)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid {origin} value {raw!r}: {exc}") from None
    return resolved


def registry_config(values: Mapping[str, Any]) -> RegistryConfig:
    endpoints = tuple(e.strip() for e in str(values["endpoint"]).split(",") if e.strip())
    if not endpoints:
        raise ConfigError("no etcd endpoint given")
    return RegistryConfig(
        endpoints=endpoints, prefix=values["etcd_prefix"], timeout=values["request_timeout"],
        ca_file=values.get("ca_file"), cert_file=values.get("cert_file"),
        key_file=values.get("key_file"), username=values.get("username"),
        password=values.get("password"))


def read_machine_id(path: str = "/etc/machine-id") -> str:
    try:
        machine_id = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read machine id from {path}: {exc.strerror}") from None
    if not machine_id:
        raise ConfigError(f"{path} is empty; pass --machine-id")
    return machine_id
