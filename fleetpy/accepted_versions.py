"""The highest signed version of each unit name this host accepted: no rollback.

An agent with trusted keys records, before a unit's file reaches systemd, the version its
signatures bind (fleetpy.unitfile.signing); from then on it refuses older versions of
that name (`rollback`). The record is kept on the host, not in etcd (whoever can write
etcd is who it protects against), in one small JSON file written atomically, read at the
agent's start:

    {"format": 1, "versions": {"web.service": 1796627424000, ...}}

It survives agent restarts, host reboots and the unit's destroy (a destroyed unit's old
version replayed under the same name is still older). What bounds it: one entry per unit
name that trusted keys signed and this host accepted (never pruned: forgetting a name
would let its older versions back); deleting the file forgets them all.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from .errors import ConfigError, FileError
from .files import display_path, read_text_file, write_file_atomically

FORMAT = 1
MAX_FILE_BYTES = 64 * 1024 * 1024  # ~1 million names; far beyond one host's units


class AcceptedVersions:
    """The versions accepted on this host, kept in `path` (None: in memory only, as for
    a simulated machine in tests: then they last as long as the agent)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {} if self.path is None else _read(self.path)

    def get(self) -> Mapping[str, int]:
        """A read-only view, for the agent's plan (replaced, never mutated, by record)."""
        return MappingProxyType(self._versions)

    def record(self, versions: Mapping[str, int]) -> None:
        """Keep each version that is higher than the one recorded; written (atomically,
        fsynced) before this returns, only when one rose. Raises FileError when it
        cannot be written: then nothing was recorded, and the caller must not act."""
        with self._lock:
            rose = {n: v for n, v in versions.items() if v > self._versions.get(n, -1)}
            if not rose:
                return
            updated = {**self._versions, **rose}
            if self.path is not None:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                text = json.dumps({"format": FORMAT, "versions": updated}, sort_keys=True)
                write_file_atomically(self.path, text + "\n")
            self._versions = updated


def _read(path: Path) -> dict[str, int]:
    """The recorded versions; a missing file is none. A file that is not ours stops the
    agent with one line: running on without it would forget what it protects."""
    try:
        text = read_text_file(path, limit=MAX_FILE_BYTES, what="accepted versions file")
    except FileError as exc:
        if not os.path.lexists(path):
            return {}
        raise ConfigError(str(exc)) from None
    problem = f"{display_path(path)} is not an accepted versions file"
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError(f"{problem} (not JSON); remove it to forget them") from None
    versions = data.get("versions") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(versions, dict):
        raise ConfigError(f"{problem} (format {FORMAT} expected); remove it to forget them")
    if not all(
        isinstance(name, str) and type(version) is int and version >= 0
        for name, version in versions.items()
    ):
        raise ConfigError(f"{problem} (a version that is not a number); remove it to forget them")
    return dict(versions)


__all__ = ["AcceptedVersions"]
