"""Machine metadata: which keys and values are valid, and how an operator's overlay
(fleet's `PATCH /machines`) combines with what an agent says about its machine.

An agent registers its own metadata (its --metadata) in its lease-bound machine record;
operators' changes live apart from it, in an overlay per machine id that outlives the
agent's lease, so they survive agent restarts and re-registration (as fleet's did). The
machine's metadata, as scheduling, list-machines and the API see it, is the agent's own
with the overlay on top. An overlay maps a key to the operator's value, or to None when
the operator removed the key: it is then absent whatever the agent says (fleet's rule,
where a removed key was stored as ""). A removal is undone only by setting a value again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import MetadataError

MAX_ITEMS = 64  # per machine: the agent's own, and separately the operator's overlay
MAX_VALUE = 256
# Set and removed keys of one overlay: removals stay (they hide the agent's own keys).
MAX_OVERLAY_ENTRIES = 1024
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# key -> the operator's value; None: removed (hides the agent's value of that key)
Overlay = Mapping[str, str | None]


def key_problem(key: str) -> str | None:
    """Why `key` is not a metadata key, or None."""
    if not _KEY.fullmatch(key):
        return f"invalid metadata key {_shown(key)} (letters, digits and _.-, at most 64)"
    return None


def value_problem(key: str, value: str) -> str | None:
    """Why `value` is not a metadata value (for `key`), or None. No comma: MachineMetadata=
    and --metadata separate items with it."""
    if len(value) > MAX_VALUE or not value.isprintable() or "," in value:
        return (
            f"invalid metadata value {_shown(value)} for {key} (printable, no comma, "
            f"at most {MAX_VALUE} characters)"
        )
    return None


def _shown(text: str) -> str:
    """A rejected key or value in a message: quoted, and cut short (an API client's may be
    megabytes long)."""
    quoted = repr(text)
    return quoted if len(quoted) <= 80 else quoted[:77] + "..."


def effective(own: Mapping[str, str], overlay: Overlay) -> dict[str, str]:
    """The machine's metadata: the agent's own with the operator's overlay on top."""
    merged = dict(own)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class MetadataChange:
    """One operator change of one machine's metadata."""

    machine: str
    key: str
    value: str | None  # None: remove the key


def apply_changes(overlay: Overlay, changes: Iterable[MetadataChange]) -> dict[str, str | None]:
    """`overlay` with `changes` (all for its machine) applied in order; MetadataError if the
    overlay would set more than MAX_ITEMS keys, or hold more than MAX_OVERLAY_ENTRIES with
    its removals (which are kept: they hide the agent's own keys, now and later)."""
    updated = dict(overlay)
    machine = ""
    for change in changes:
        machine = change.machine
        updated[change.key] = change.value
    values = sum(value is not None for value in updated.values())
    if values > MAX_ITEMS:
        raise MetadataError(
            f"too much operator metadata for machine {machine}: {values} keys set "
            f"(at most {MAX_ITEMS})"
        )
    if len(updated) > MAX_OVERLAY_ENTRIES:
        raise MetadataError(
            f"too much operator metadata for machine {machine}: {len(updated)} keys set or "
            f"removed (at most {MAX_OVERLAY_ENTRIES})"
        )
    return updated


__all__ = [
    "MAX_ITEMS",
    "MAX_OVERLAY_ENTRIES",
    "MAX_VALUE",
    "MetadataChange",
    "Overlay",
    "apply_changes",
    "effective",
    "key_problem",
    "value_problem",
]
