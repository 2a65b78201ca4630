"""The backup file of a cluster's desired state (`fleetpy backup` / `fleetpy restore`).

What is kept is what people wrote: unit records (name, desired state, content hash, global
flag, owner, signature), the unit files' contents, global units' entries, operators'
machine metadata and deployment records, each as the registry stores it, under its key
relative to the prefix. What the cluster rebuilds by itself is left out: the schedule and
the engine's reasons (the engine places again), machine records and unit states (agents
register and report again), leases.

Format, version 1 (JSON, one object):

    {"fleetpy_backup": 1, "fleetpy": "<version that wrote it>", "prefix": "/fleetpy",
     "revision": <etcd revision it was read at>, "keys": {KEY: VALUE, ...}}

KEY is the registry's key relative to the prefix (kind/name), VALUE its stored text.

A reader refuses a version newer than its own; a later version adds fields, never changes
what these mean.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import __version__
from .errors import FleetpyError
from .registry import DESIRED_KINDS
from .registry.roles import OperatorRegistry

FORMAT_VERSION = 1


class BackupError(FleetpyError):
    """A backup file that cannot be restored (unreadable, another format, refused)."""


@dataclass(frozen=True)
class Backup:
    prefix: str
    revision: int
    keys: Mapping[str, str]  # relative key -> value, as stored
    written_by: str = ""

    def count(self, family: str) -> int:
        return sum(1 for key in self.keys if key.startswith(family + "/"))


def encode(backup: Backup) -> str:
    return (
        json.dumps(
            {
                "fleetpy_backup": FORMAT_VERSION,
                "fleetpy": backup.written_by,
                "prefix": backup.prefix,
                "revision": backup.revision,
                "keys": dict(sorted(backup.keys.items())),
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )


def decode(text: str, source: str) -> Backup:
    """The backup in TEXT (read from SOURCE, for messages); BackupError if it is not one
    this version can restore."""
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BackupError(f"{source}: not a fleetpy backup (not JSON: {exc})") from None
    if not isinstance(data, dict) or "fleetpy_backup" not in data:
        raise BackupError(f"{source}: not a fleetpy backup (no fleetpy_backup field)")
    version = data["fleetpy_backup"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BackupError(f"{source}: unknown backup format {version!r}")
    if version > FORMAT_VERSION:
        raise BackupError(
            f"{source}: backup format {version} is newer than this fleetpy reads "
            f"({FORMAT_VERSION}); restore it with the fleetpy {data.get('fleetpy') or 'newer'} "
            "that wrote it"
        )
    keys = data.get("keys")
    if not isinstance(keys, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in keys.items()
    ):
        raise BackupError(f"{source}: field 'keys' is not a mapping of strings")
    for key in keys:
        family, _, rest = key.partition("/")
        if family not in DESIRED_KINDS or not rest or ".." in key.split("/") or key.startswith("/"):
            raise BackupError(f"{source}: key {key!r} is not one a backup holds")
    prefix = data.get("prefix", "")
    revision = data.get("revision", 0)
    if not isinstance(prefix, str) or not isinstance(revision, int):
        raise BackupError(f"{source}: fields 'prefix' or 'revision' are malformed")
    return Backup(prefix, revision, keys, str(data.get("fleetpy", "")))


def take(registry: OperatorRegistry) -> Backup:
    """The cluster's desired state now, read at one revision."""
    revision, keys = registry.read_desired()
    return Backup(registry.prefix, revision, keys, __version__)


def restore(registry: OperatorRegistry, backup: Backup) -> int:
    """Write BACKUP into the registry's prefix (see Registry.restore_desired); the number
    of keys written. The engine places the units again; agents keep what they run."""
    return registry.restore_desired(backup.keys)
