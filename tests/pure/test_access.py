"""fleetpy's etcd roles: the table (a pure function of prefix and machines), and
Registry.ensure_access applying it to a TLS + auth etcd, where each kind of client can
do its work (leases, leader election) with its own least-privilege credential.

Here: the tests that need no etcd and no process (README "Tests"); the others are in
tests/system/test_access.py."""

from __future__ import annotations

import pytest

from fleetpy.registry.access import (
    ENGINE,
    OPERATOR,
    Role,
    agent_role,
    agent_role_name,
    engine_role,
    operator_role,
    roles,
)
from fleetpy.registry.transport import (
    Access,
    KeyPermission,
    prefix_range_end,
)

R, W = Access.READ, Access.WRITE


def permits(role: Role, access: Access, key: str) -> bool:
    """What etcd decides for one key: some grant of the right kind covers it."""
    raw = key.encode()
    for p in role.permissions:
        if access is not p.access and p.access is not Access.READWRITE:
            continue
        if p.range_end is None and raw == p.key:
            return True
        if p.range_end is not None and p.key <= raw < p.range_end:
            return True
    return False


OPERATOR_TABLE = [
    (R, "/fleetpy/unit/a.service", True),
    (R, "/fleetpy/schedule/m1/a.service", True),
    (R, "/fleetpy/state/m2/a.service", True),
    (R, "/fleetpy-layout", True),
    (R, "/fleetpy/fleetpy-layout", True),
    (W, "/fleetpy/unit/a.service", True),
    (W, "/fleetpy/global/a.service", True),
    (W, "/fleetpy/content/" + "ab" * 32, True),
    (W, "/fleetpy/deploy/web", True),
    (W, "/fleetpy/watcher/web", True),
    (W, "/fleetpy/signature/" + "ab" * 32, True),
    (W, "/fleetpy/metadata/m1", True),
    (W, "/fleetpy/failure/m1/a.service", True),  # force-reschedule UNIT
    (W, "/fleetpy/cordon/m1", True),
    (W, "/fleetpy/engine/force-reschedule", True),
    (W, "/fleetpy/engine/adopt", True),
    (W, "/fleetpy/fleetpy-layout", True),
    (W, "/fleetpy/engine/leader", False),
    (W, "/fleetpy/schedule/m1/a.service", False),
    (W, "/fleetpy/reason/a.service", False),
    (W, "/fleetpy/machines/m1", False),
    (W, "/fleetpy/state/m1/a.service", False),
    (W, "/fleetpy-layout", False),
    (R, "/fleetpy2/unit/a.service", False),
    (W, "/fleetpy2/unit/a.service", False),
    (R, "/other/key", False),
]


ENGINE_TABLE = [
    (R, "/fleetpy/unit/a.service", True),
    (R, "/fleetpy/machines/m1", True),
    (W, "/fleetpy/schedule/m1/a.service", True),
    (W, "/fleetpy/reason/a.service", True),
    (W, "/fleetpy/engine/leader", True),
    (W, "/fleetpy/engine/force-reschedule", True),
    (W, "/fleetpy/engine/adopt", True),
    (W, "/fleetpy/content/" + "ab" * 32, True),
    (W, "/fleetpy/failure/m1/a.service", True),  # a backoff ended
    (W, "/fleetpy/unit/a.service", False),
    (W, "/fleetpy/global/a.service", False),
    (W, "/fleetpy/machines/m1", False),
    (W, "/fleetpy/state/m1/a.service", False),
    (W, "/fleetpy/deploy/web", False),
    (R, "/fleetpy/metadata/m1", True),
    (W, "/fleetpy/metadata/m1", False),
    (W, "/fleetpy/cordon/m1", False),  # cordons are operators'
    (W, "/fleetpy/fleetpy-layout", False),
    (R, "/fleetpyx", False),
]


AGENT_TABLE = [  # the agent of m1, with m10 and m2 in the cluster
    (R, "/fleetpy/schedule/m1/a.service", True),
    (R, "/fleetpy/global/g.service", True),
    (R, "/fleetpy/fleetpy-layout", True),
    (R, "/fleetpy-layout", True),
    (R, "/fleetpy/metadata/m1", True),
    (W, "/fleetpy/machines/m1", True),
    (R, "/fleetpy/machines/m1", True),  # registering checks no other agent holds the id
    (W, "/fleetpy/failure/m1/a.service", True),
    (W, "/fleetpy/failure/m10/a.service", False),
    (W, "/fleetpy/failure/m2/a.service", False),
    (W, "/fleetpy/state/m1/a.service", True),
    (R, "/fleetpy/schedule/m10/a.service", False),
    (R, "/fleetpy/schedule/m2/a.service", False),
    (R, "/fleetpy/unit/a.service", False),
    (R, "/fleetpy/content/" + "ab" * 32, False),
    (R, "/fleetpy/machines/m2", False),
    (R, "/fleetpy/state/m2/a.service", False),
    (R, "/fleetpy/metadata/m10", False),
    (R, "/fleetpy/metadata/m2", False),
    (W, "/fleetpy/metadata/m1", False),  # operators' metadata: the agent cannot override it
    (R, "/fleetpy/cordon/m1", True),  # a drain of its machine may stop its globals
    (R, "/fleetpy/cordon/m2", False),
    (W, "/fleetpy/cordon/m1", False),  # its cordon is the operator's
    (W, "/fleetpy/machines/m10", False),
    (W, "/fleetpy/machines/m1/x", False),
    (W, "/fleetpy/state/m10/a.service", False),
    (W, "/fleetpy/state/m2/a.service", False),
    (W, "/fleetpy/unit/a.service", False),
    (W, "/fleetpy/global/a.service", False),
    (W, "/fleetpy/schedule/m1/a.service", False),
    (W, "/fleetpy/fleetpy-layout", False),
    (W, "/fleetpy/engine/leader", False),
]


@pytest.mark.parametrize("access, key, allowed", OPERATOR_TABLE)
def test_operator_role(access: Access, key: str, allowed: bool) -> None:
    assert permits(operator_role("/fleetpy"), access, key) is allowed


@pytest.mark.parametrize("access, key, allowed", ENGINE_TABLE)
def test_engine_role(access: Access, key: str, allowed: bool) -> None:
    assert permits(engine_role("/fleetpy"), access, key) is allowed


@pytest.mark.parametrize("access, key, allowed", AGENT_TABLE)
def test_agent_role(access: Access, key: str, allowed: bool) -> None:
    assert permits(agent_role("/fleetpy", "m1"), access, key) is allowed


def test_agent_role_is_exactly_its_own_keys() -> None:
    role = agent_role("/fleetpy", "m1")
    assert role.name == agent_role_name("m1") == "fleetpy-agent-m1"

    def under(access: Access, start: str) -> KeyPermission:
        return KeyPermission(access, start.encode(), prefix_range_end(start))

    assert set(role.permissions) == {
        KeyPermission(R, b"/fleetpy/fleetpy-layout"),
        KeyPermission(R, b"/fleetpy-layout"),
        under(R, "/fleetpy/schedule/m1/"),
        under(R, "/fleetpy/global/"),
        KeyPermission(R, b"/fleetpy/metadata/m1"),
        KeyPermission(R, b"/fleetpy/cordon/m1"),
        KeyPermission(R, b"/fleetpy/trust/record"),  # the keys it trusts beyond its roots
        KeyPermission(Access.READWRITE, b"/fleetpy/machines/m1"),
        under(W, "/fleetpy/state/m1/"),
        under(W, "/fleetpy/failure/m1/"),
    }


@pytest.mark.parametrize("prefix", ["/fleetpy", "/a/b/c", ""])
def test_nothing_is_granted_outside_the_prefix(prefix: str) -> None:
    """Writes stay inside P/; reads too, but for the marker keys of enclosing prefixes
    (single keys, read to refuse a prefix nested in another fleetpy prefix)."""
    inside = (prefix + "/").encode()
    markers = {f"{'/'.join(prefix.split('/')[:i])}/fleetpy-layout".encode() for i in range(1, 4)}
    for role in roles(prefix, ["m1", "m2"]):
        for p in role.permissions:
            within = p.key.startswith(inside) and (
                p.range_end is None or p.range_end <= prefix_range_end(inside)
            )
            if p.access is Access.READ and p.range_end is None and not within:
                assert p.key in markers and p.key != inside + b"fleetpy-layout", (role.name, p)
            else:
                assert within, (role.name, p)


def test_roles_one_per_machine() -> None:
    names = [role.name for role in roles("/fleetpy", ["m1", "m2", "m1"])]
    assert names == [OPERATOR, ENGINE, "fleetpy-agent-m1", "fleetpy-agent-m2"]
