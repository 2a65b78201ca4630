"""Least privilege, proven against a TLS + auth etcd: each credential is refused
everything outside its role, and the engine, simulated agents and the CLI do their
whole job (start, place, report, force-reschedule, destroy, collect unused content)
each with its own credential only."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings, EngineSettings
from fleetpy.engine import Engine
from fleetpy.model.failures import FailureRecord
from fleetpy.model.records import UnitState
from fleetpy.registry import Registry
from fleetpy.registry.transport import EtcdPermissionDenied, EtcdTransport, prefix_range_end
from fleetpy.unitmanager import SimulatedUnitManager

from support.secure_fixtures import SecureEtcd, secure_etcd
from support.waiting import until

MACHINES = ("m1", "m2")


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEtcd]:
    with secure_etcd(tmp_path_factory.mktemp("rbac"), MACHINES) as etcd:
        yield etcd


def refused(user: str, call: Callable[[], object]) -> str:
    with pytest.raises(EtcdPermissionDenied) as info:
        call()
    assert f"permission denied for user {user} on " in str(info.value)
    return str(info.value)


def puts(client: EtcdTransport, user: str, *keys: str) -> None:
    for key in keys:
        refused(user, lambda: client.put(key, "{}"))
        refused(user, lambda: client.delete(key))


def test_an_agent_touches_nothing_but_its_own(secure: SecureEtcd) -> None:
    user = "fleetpy-agent-m1"
    with secure.transport(secure.creds.agents["m1"]) as agent:
        puts(
            agent,
            user,
            "/fleetpy/unit/x.service",
            "/fleetpy/global/x.service",
            "/fleetpy/content/" + "ab" * 32,
            "/fleetpy/schedule/m1/x.service",  # its own schedule is the engine's to write
            "/fleetpy/schedule/m2/x.service",
            "/fleetpy/state/m2/x.service",
            "/fleetpy/failure/m2/x.service",
            "/fleetpy/machines/m2",
            "/fleetpy/metadata/m1",  # operators' metadata: read, never written, by its agent
            "/fleetpy/metadata/m2",
            "/fleetpy/engine/leader",
            "/fleetpy/fleetpy-layout",
            "/elsewhere",
        )
        refused(user, lambda: agent.range("/fleetpy/metadata/m2"))
        agent.range("/fleetpy/metadata/m1")
        other = "/fleetpy/schedule/m2/"
        refused(user, lambda: agent.range(other, prefix_range_end(other)))
        refused(user, lambda: agent.range("/fleetpy/unit/", prefix_range_end("/fleetpy/unit/")))
        refused(user, lambda: agent.watch(other, prefix_range_end(other), None, print))
        message = refused(user, lambda: agent.put("/fleetpy/unit/x.service", "{}"))
        assert message.endswith("on /fleetpy/unit/x.service")
        own = "/fleetpy/schedule/m1/"
        agent.range(own, prefix_range_end(own))
        agent.put("/fleetpy/state/m1/x.service", "{}")
        agent.delete("/fleetpy/state/m1/x.service")
        agent.put("/fleetpy/failure/m1/x.service", "{}")  # RescheduleOnFailure=
        agent.delete("/fleetpy/failure/m1/x.service")
    with secure.registry(secure.creds.agents["m1"]) as registry:
        refused(user, lambda: registry.read_machine_schedule("m2"))
        lease = registry.grant_lease(10)
        state = UnitState("x.service", "m2", "loaded", "active", "running")
        refused(user, lambda: registry.report_states([state], lease))
        refused(user, registry.list_units)
        registry.revoke_lease(lease)


def test_the_operator_cannot_place_or_pose_as_engine_or_agent(secure: SecureEtcd) -> None:
    with secure.transport(secure.creds.operator) as operator:
        puts(
            operator,
            "fleetpy-operator",
            "/fleetpy/schedule/m1/x.service",
            "/fleetpy/reason/x.service",
            "/fleetpy/engine/leader",
            "/fleetpy/machines/m1",
            "/fleetpy/state/m1/x.service",
            "/elsewhere",
        )
        refused("fleetpy-operator", lambda: operator.range("/elsewhere"))
        operator.delete("/fleetpy/failure/m1/x.service")  # force-reschedule UNIT


def test_the_engine_cannot_submit_or_pose_as_agent(secure: SecureEtcd) -> None:
    with secure.transport(secure.creds.engine) as engine:
        puts(
            engine,
            "fleetpy-engine",
            "/fleetpy/unit/x.service",
            "/fleetpy/global/x.service",
            "/fleetpy/deploy/web",
            "/fleetpy/machines/m1",
            "/fleetpy/metadata/m1",
            "/fleetpy/state/m1/x.service",
            "/fleetpy/fleetpy-layout",
            "/elsewhere",
        )
        engine.delete("/fleetpy/failure/m1/x.service")  # a RescheduleBackoff= ended


def fleetpy(secure: SecureEtcd, *args: str) -> subprocess.CompletedProcess[str]:
    return secure.cli(*args)  # the operator's credential


def test_engine_agents_and_cli_each_with_their_own_credential(
    secure: SecureEtcd, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    creds = secure.creds
    registries: list[Registry] = []
    agents: list[Agent] = []
    engine: Engine | None = None
    try:
        for machine in MACHINES:
            registry = secure.registry(creds.agents[machine])
            registries.append(registry)
            agent = Agent(
                registry,
                SimulatedUnitManager(),
                AgentSettings(machine_id=machine, metadata={"rack": machine}, ttl=3),
            ).start()
            agents.append(agent)
            assert agent.ready.wait(10)
        engine_registry = secure.registry(creds.engine)
        registries.append(engine_registry)
        engine = Engine(engine_registry, EngineSettings(lease_ttl=3, reconcile_interval=1)).start()

        unit = tmp_path / "hello.service"
        unit.write_text(
            "[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nMachineMetadata=rack=m2\n"
        )
        glob = tmp_path / "everywhere.service"
        glob.write_text("[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nGlobal=true\n")
        fleetpy(secure, "start", str(unit), str(glob))  # blocks until both are launched

        def units() -> list[dict[str, str]]:
            data: list[dict[str, str]] = json.loads(
                fleetpy(secure, "list-units", "-o", "json").stdout
            )
            return data

        until(
            lambda: sum(u["active"] == "active" for u in units()) == 3,
            what="hello on m2 and the global unit on both machines active",
        )
        assert {(u["unit"], u["machine"]) for u in units()} == {
            ("hello.service", "m2"),
            ("everywhere.service", "m1"),
            ("everywhere.service", "m2"),
        }
        fleetpy(secure, "force-reschedule")  # the operator's request, cleared by the engine
        # m1's agent reports failures of its own; the engine deletes a record of a unit
        # without RescheduleOnFailure=; the operator reads a unit's records to forget them.
        registries[0].report_failure(FailureRecord("hello.service", "m1", 3, 60.0))
        backup = tmp_path / "cluster.backup"
        fleetpy(secure, "backup", str(backup))
        with secure.registry(creds.operator) as operator:
            until(lambda: not operator.force_reschedule_requested(), what="request cleared")
            until(lambda: operator.read_failures()[1] == [], what="failure record deleted")
            fleetpy(secure, "force-reschedule", "hello.service")
            fleetpy(secure, "destroy", "hello.service", "everywhere.service")
            until(lambda: units() == [], what="both units stopped everywhere")
            # The engine deletes the content nobody refers to any more.
            until(lambda: operator.count("content") == 0, timeout=10, what="content collected")
            # A restore's request to adopt running units: the operator's, cleared by the engine.
            fleetpy(secure, "restore", str(backup))
            until(lambda: sum(u["active"] == "active" for u in units()) == 3, what="restored")
            until(lambda: not operator.adoption_requested(), what="adoption request cleared")
            fleetpy(secure, "destroy", "hello.service", "everywhere.service")
            until(lambda: units() == [], what="both units stopped again")
    finally:
        if engine is not None:
            engine.stop()
        for agent in agents:
            agent.stop()
        for registry in registries:
            registry.close()
    assert "permission denied" not in capfd.readouterr().err


def test_an_agent_whose_role_predates_operator_metadata_keeps_working(
    secure: SecureEtcd, capfd: pytest.CaptureFixture[str]
) -> None:
    """A cluster made before P/metadata existed: the agent's role cannot read its overlay
    until `ensure_access` runs again. The agent says so once and runs on its own metadata."""
    creds = secure.creds
    key = b"/fleetpy/metadata/m1"
    with secure.transport(creds.root) as admin:
        admin.role_revoke("fleetpy-agent-m1", key, None)
    registry = secure.registry(creds.agents["m1"])
    agent = Agent(
        registry,
        SimulatedUnitManager(),
        AgentSettings(machine_id="m1", metadata={"rack": "m1"}, ttl=3),
    )
    try:
        assert registry.agent_overlay("m1") is None
        agent.start()
        assert agent.ready.wait(10)
        with secure.registry(creds.engine) as engine:
            until(lambda: "m1" in engine.list_machines(), what="m1 registered")
        err = capfd.readouterr().err
        assert err.count("event=metadata_overlay_unreadable") == 1, err
    finally:
        agent.stop()
        registry.close()
        with secure.registry(creds.root) as root:
            root.ensure_access(list(MACHINES))  # the role as the table says, for later tests


def test_a_restore_by_an_operator_whose_role_predates_adoption_restores_and_says_so(
    secure: SecureEtcd, tmp_path: Path
) -> None:
    """An operator role from before restores asked the engine to adopt running units: the
    restore still writes the desired state, and says the units are placed anew."""
    creds = secure.creds
    unit = tmp_path / "plain.service"
    unit.write_text("[Service]\nExecStart=/bin/sleep 1000\n")
    backup = tmp_path / "cluster.backup"
    with secure.transport(creds.root) as admin:
        admin.role_revoke("fleetpy-operator", b"/fleetpy/engine/adopt", None)
    try:
        fleetpy(secure, "submit", str(unit))
        fleetpy(secure, "backup", str(backup))
        fleetpy(secure, "destroy", "plain.service")
        result = fleetpy(secure, "restore", str(backup))
        assert "may not ask the engine to adopt running units" in result.stderr
        with secure.registry(creds.operator) as operator:
            assert list(operator.list_units()) == ["plain.service"]
        fleetpy(secure, "destroy", "plain.service")
    finally:
        with secure.registry(creds.root) as root:
            root.ensure_access(list(MACHINES))  # the role as the table says, for later tests
