"""etcd roles for fleetpy's clients: each kind of client may touch only the keys it
needs, and nothing outside the prefix P (least privilege).

| role                      | reads                                   | writes                |
|---------------------------|-----------------------------------------|-----------------------|
| fleetpy-operator (CLI)    | all of P                                | P/unit/, P/global/,   |
|                           |                                         | P/content/, P/deploy/,|
|                           |                                         | P/watcher/,           |
|                           |                                         | P/signature/,         |
|                           |                                         | P/metadata/,          |
|                           |                                         | P/failure/ (deletes), |
|                           |                                         | P/cordon/, P/trust/,  |
|                           |                                         | P/engine/force-resch. |
|                           |                                         | P/engine/adopt        |
|                           |                                         | P/fleetpy-layout      |
| fleetpy-engine            | all of P                                | P/schedule/,          |
|                           |                                         | P/reason/, P/engine/, |
|                           |                                         | P/content/ (it        |
|                           |                                         | deletes unused blobs) |
|                           |                                         | P/failure/ (deletes)  |
| fleetpy-agent-<machine>   | P/schedule/<machine>/, P/global/,       | P/machines/<machine>, |
|                           | P/metadata/<machine>,                   | P/state/<machine>/,   |
|                           | P/cordon/<machine>, P/fleetpy-layout    | P/failure/<machine>/  |
|                           | P/trust/record                          |                       |

Every role also reads the single marker key of each prefix enclosing P (for /fleetpy:
/fleetpy-layout), the one grant outside P: clients read them to refuse a prefix nested
inside another fleetpy prefix. An agent reads the operators' metadata overlay of its
machine (global units follow it) but never writes it: operators' metadata is what an agent
cannot override. Writing content gives the engine no power it lacks: the
schedule entries it writes carry the unit text agents run.

A pure function of the prefix and the machine ids; Registry.ensure_access applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .layout import ADOPT, FORCE_RESCHEDULE, LAYOUT_KEY, ancestor_markers, join
from .transport import Access, KeyPermission, prefix_range_end

OPERATOR = "fleetpy-operator"
ENGINE = "fleetpy-engine"
AGENT = "fleetpy-agent-"  # + the machine id


@dataclass(frozen=True)
class Role:
    """An etcd role and its grants; the user of the same name holds it."""

    name: str
    permissions: tuple[KeyPermission, ...]


def agent_role_name(machine_id: str) -> str:
    return AGENT + machine_id


def _key(access: Access, key: str) -> KeyPermission:
    return KeyPermission(access, key.encode())


def _under(access: Access, prefix: str, *parts: str) -> KeyPermission:
    """Every key below P/part/.../ (with the trailing slash: P/state/m1/ is not m10's)."""
    start = join(prefix, *parts) + "/"
    return KeyPermission(access, start.encode(), prefix_range_end(start))


def _markers(prefix: str) -> list[KeyPermission]:
    return [_key(Access.READ, join(prefix, LAYOUT_KEY))] + [
        _key(Access.READ, marker) for marker in ancestor_markers(prefix)
    ]


def operator_role(prefix: str) -> Role:
    """The CLI and API: reads everything, writes what users ask for (units, contents,
    apply's deployment records, git watchers, signatures, machines' metadata overlays and
    cordons, the engine's one-shot requests: force-reschedule, and adopt from a restore)."""
    return Role(
        OPERATOR,
        (
            KeyPermission(Access.READ, (prefix + "/").encode(), prefix_range_end(prefix + "/")),
            *ancestor_permissions(prefix),
            *(
                _under(Access.WRITE, prefix, kind)
                for kind in (
                    "unit",
                    "global",
                    "content",
                    "deploy",
                    "watcher",
                    "signature",
                    "metadata",
                    "failure",  # `force-reschedule UNIT` deletes a unit's failure records
                    "cordon",
                    "trust",  # the trust record (`fleetpy keys trust|rotate|revoke`)
                    "audit",  # each change of a unit appends to its trail
                )
            ),
            _key(Access.WRITE, join(prefix, "engine", FORCE_RESCHEDULE)),
            _key(Access.WRITE, join(prefix, "engine", ADOPT)),
            _key(Access.WRITE, join(prefix, LAYOUT_KEY)),
        ),
    )


def engine_role(prefix: str) -> Role:
    """The engine: reads everything, writes placements, reasons, its leader key (and
    clears the operator's request), and deletes content no unit refers to."""
    return Role(
        ENGINE,
        (
            KeyPermission(Access.READ, (prefix + "/").encode(), prefix_range_end(prefix + "/")),
            *ancestor_permissions(prefix),
            *(
                _under(Access.WRITE, prefix, kind)
                for kind in ("schedule", "reason", "engine", "content", "failure")
            ),
        ),
    )


def agent_role(prefix: str, machine_id: str) -> Role:
    """One machine's agent: reads its own schedule, the global units and its operators'
    metadata overlay, reads and writes its machine record, writes its unit states; nothing about other
    machines."""
    return Role(
        agent_role_name(machine_id),
        (
            *_markers(prefix),
            _under(Access.READ, prefix, "schedule", machine_id),
            _under(Access.READ, prefix, "global"),
            _key(Access.READ, join(prefix, "metadata", machine_id)),
            _key(Access.READ, join(prefix, "cordon", machine_id)),
            _key(Access.READ, join(prefix, "trust", "record")),  # the keys it trusts
            # Read too: registering checks that no other agent holds the id.
            _key(Access.READWRITE, join(prefix, "machines", machine_id)),
            _under(Access.WRITE, prefix, "state", machine_id),
            _under(Access.WRITE, prefix, "failure", machine_id),  # RescheduleOnFailure=
        ),
    )


def ancestor_permissions(prefix: str) -> list[KeyPermission]:
    """Reads of the markers of the prefixes enclosing P (single keys)."""
    return [_key(Access.READ, marker) for marker in ancestor_markers(prefix)]


def roles(prefix: str, machines: Sequence[str] = ()) -> tuple[Role, ...]:
    """Every fleetpy role for a normalized prefix and these machines' agents."""
    return (
        operator_role(prefix),
        engine_role(prefix),
        *(agent_role(prefix, machine) for machine in dict.fromkeys(machines)),
    )


__all__ = [
    "AGENT",
    "ENGINE",
    "OPERATOR",
    "Role",
    "agent_role",
    "agent_role_name",
    "engine_role",
    "operator_role",
    "roles",
]
