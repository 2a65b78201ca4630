"""Names in the etcd key layout shared by the registry and its access roles (the layout
itself is described in the registry's docstring). Nothing outside fleetpy.registry
imports this."""

from __future__ import annotations

LAYOUT_KEY = "fleetpy-layout"  # P/fleetpy-layout marks P as a fleetpy prefix
LAYOUT_VALUE = '{"version":1}'
FORCE_RESCHEDULE = "force-reschedule"  # under P/engine/
ADOPT = "adopt"  # under P/engine/: a restore asks the engine to place units where they run


def join(prefix: str, *parts: str) -> str:
    """The key P/part/part... for a normalized prefix ('' is the whole key space)."""
    return "/".join((prefix, *parts))


def ancestors(prefix: str) -> list[str]:
    """'/a/b' -> ['/a', ''] (the root prefix last): where an enclosing fleetpy prefix
    would have its marker."""
    parts = prefix.split("/")[1:]
    return ["/".join(["", *parts[:i]]) for i in range(len(parts) - 1, -1, -1)]


def ancestor_markers(prefix: str) -> list[str]:
    """The layout keys of every prefix enclosing this one: '/a/b' -> ['/a/fleetpy-layout',
    '/fleetpy-layout']."""
    return [join(ancestor, LAYOUT_KEY) for ancestor in ancestors(prefix)]
