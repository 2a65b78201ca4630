"""test_access.py's tests that need fleetpy or etcd processes of its own, TLS etcd, hosts or
tools of the machine (README "Tests"); what the module covers as a whole:
tests/pure/test_access.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from fleetpy.errors import RegistryError
from fleetpy.metadata import MetadataChange
from fleetpy.model.changes import PlaceUnit, UnitChange
from fleetpy.model.events import MetadataEvent
from fleetpy.model.records import MachineRecord, ScheduleEntry, UnitState
from fleetpy.registry.access import ENGINE, OPERATOR, agent_role
from fleetpy.registry.transport import Access, EtcdPermissionDenied, KeyPermission
from fleetpy.states import DesiredState

from support.secure_fixtures import SecureEtcd, secure_etcd
from support.waiting import until

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
        admin.role_grant("fleetpy-agent-m1", KeyPermission(Access.WRITE, b"/fleetpy/machines/m1"))
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
        placed = agent.read_machine_schedule("m2").placed
        assert placed["e.service"].text == text
        engine.revoke_lease(lease)
        assert engine.leader() is None
        operator.destroy_units(["e.service"])


def test_compaction_is_every_users_but_reclaiming_space_is_roots(secure: SecureEtcd) -> None:
    """etcd 3.4 lets any user compact (the engine leader does, issue [12]); defragmenting
    and alarms are etcd's admin calls: reclaim as the operator says so in one line."""
    creds = secure.creds
    with secure.registry(creds.engine) as engine:
        assert engine.compact_history(engine.revision())
    with secure.registry(creds.operator) as operator:
        with pytest.raises(RegistryError, match="take etcd's root user .this client acts as"):
            operator.reclaim_space()
    with secure.registry(creds.root) as root:
        assert root.reclaim_space().unreachable == ()
