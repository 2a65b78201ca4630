"""fleetpy's etcd roles: the table (a pure function of prefix and machines), and
Registry.ensure_access applying it to a TLS + auth etcd, where each kind of client can
do its work (leases, leader election) with its own least-privilege credential."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from fleetpy.metadata import MetadataChange
from fleetpy.registry import (
    MachineRecord,
    MetadataEvent,
    PlaceUnit,
    ScheduleEntry,
    UnitChange,
    UnitState,
)
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
    EtcdPermissionDenied,
    KeyPermission,
    prefix_range_end,
)
from fleetpy.states import DesiredState

from support.secure_fixtures import SecureEtcd, secure_etcd
from support.waiting import until

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
    (W, "/fleetpy/engine/force-reschedule", True),
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
    (W, "/fleetpy/content/" + "ab" * 32, True),
    (W, "/fleetpy/unit/a.service", False),
    (W, "/fleetpy/global/a.service", False),
    (W, "/fleetpy/machines/m1", False),
    (W, "/fleetpy/state/m1/a.service", False),
    (W, "/fleetpy/deploy/web", False),
    (R, "/fleetpy/metadata/m1", True),
    (W, "/fleetpy/metadata/m1", False),
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
        KeyPermission(W, b"/fleetpy/machines/m1"),
        under(W, "/fleetpy/state/m1/"),
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


# ----------------------------------------------------------------------------- real etcd


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEtcd]:
    with secure_etcd(tmp_path_factory.mktemp("access"), machines=("m1", "m2")) as etcd:
        yield etcd


def test_ensure_access_made_the_users_and_is_idempotent(secure: SecureEtcd) -> None:
    assert {"user root", f"role {OPERATOR}", f"user {ENGINE}", "user fleetpy-agent-m2"} <= set(
        secure.made
    )
    with secure.registry(secure.creds.root) as root:
        assert root.ensure_access(["m1", "m2"]) == []


def test_ensure_access_converges_a_role_to_the_table(secure: SecureEtcd) -> None:
    """A grant someone added by hand is revoked; a changed one is set back."""
    creds = secure.creds
    with secure.transport(creds.root) as admin:
        admin.role_grant("fleetpy-agent-m1", KeyPermission(Access.READWRITE, b"/fleetpy/unit/x"))
        admin.role_grant(
            "fleetpy-agent-m1", KeyPermission(Access.READWRITE, b"/fleetpy/machines/m1")
        )
        with secure.registry(creds.root) as root:
            changed = root.ensure_access(["m1", "m2"])
        assert len(changed) == 2, changed
        assert set(admin.role_permissions("fleetpy-agent-m1")) == set(
            agent_role("/fleetpy", "m1").permissions
        )


def test_an_agent_keeps_its_lease_and_writes_under_it(secure: SecureEtcd) -> None:
    creds = secure.creds
    with secure.registry(creds.agents["m1"]) as agent, secure.registry(creds.engine) as engine:
        agent.ensure_layout()
        lease = agent.grant_lease(10)
        agent.register_machine(MachineRecord("m1", "10.0.0.1", {"rack": "r1"}, ttl=10), lease)
        agent.report_states([UnitState("a.service", "m1", "loaded", "active", "running")], lease)
        assert agent.refresh_lease(lease) > 0
        assert set(engine.list_machines()) == {"m1"}
        assert engine.list_states()["a.service"]["m1"].active == "active"
        agent.report_states([], lease, removed=[("a.service", "m1")])
        assert engine.list_states() == {}
        agent.revoke_lease(lease)  # needs write on every key attached to it
        assert engine.list_machines() == {}
        # Nothing of another machine, whatever the lease.
        other = agent.grant_lease(10)
        with pytest.raises(EtcdPermissionDenied, match="user fleetpy-agent-m1 on /fleetpy/mach"):
            agent.register_machine(MachineRecord("m2"), other)
        agent.revoke_lease(other)


def test_operators_set_machine_metadata_that_agents_only_read(secure: SecureEtcd) -> None:
    creds = secure.creds
    with (
        secure.registry(creds.operator) as operator,
        secure.registry(creds.agents["m1"]) as agent,
        secure.registry(creds.engine) as engine,
    ):
        operator.change_metadata([MetadataChange("m1", "role", "web")])
        assert agent.machine_overlay("m1")[1] == {"role": "web"}
        assert engine.read_view().overlays["m1"] == {"role": "web"}
        seen: list[object] = []
        cancel = agent.watch_metadata(lambda batch: seen.extend(batch.events), machine="m1")
        try:
            operator.change_metadata([MetadataChange("m1", "role", None)])
            until(lambda: seen == [MetadataEvent("m1", {"role": None})], what="the agent's watch")
        finally:
            cancel()
        with pytest.raises(EtcdPermissionDenied):
            agent.change_metadata([MetadataChange("m1", "role", "db")])
        with pytest.raises(EtcdPermissionDenied):
            agent.machine_overlay("m2")
        operator.change_metadata([MetadataChange("m2", "role", None)])
        assert agent.machine_overlay("m1")[1] == {"role": None}


def test_the_engine_elects_itself_and_places(secure: SecureEtcd) -> None:
    creds = secure.creds
    text = "[Service]\nExecStart=/bin/true\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    with (
        secure.registry(creds.engine) as engine,
        secure.registry(creds.operator) as operator,
        secure.registry(creds.agents["m2"]) as agent,
    ):
        operator.change_units([UnitChange("e.service", DesiredState.LAUNCHED, text, digest)])
        lease = engine.grant_lease(5)
        assert engine.campaign("engine-a", lease)
        assert engine.leader() == "engine-a"
        assert engine.refresh_lease(lease) > 0
        entry = ScheduleEntry("e.service", digest, DesiredState.LAUNCHED, text)
        assert engine.engine_write("engine-a", [[PlaceUnit("m2", entry)]])
        _, placed, _ = agent.read_machine_schedule("m2")
        assert placed["e.service"].text == text
        engine.revoke_lease(lease)
        assert engine.leader() is None
        operator.destroy_units(["e.service"])
