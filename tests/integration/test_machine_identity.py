"""A machine id is one host's (issue [12]): a second agent with the same id (a host cloned
with the same /etc/machine-id) is refused in one line and runs nothing, however long the
first one lives; the same agent restarting takes its registration back at once."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from fleetpy.agent import Agent, agent_instance
from fleetpy.config import AgentSettings, UnitManagerKind
from fleetpy.entrypoints import instance_file
from fleetpy.model.records import MachineRecord
from fleetpy.registry import MachineIdInUse, Registry
from fleetpy.unitmanager import SimulatedUnitManager

from support.sim_cluster import Cluster, unit
from support.waiting import until

TTL = 2


def host(cluster: Cluster, name: str, instance: str, ttl: int = TTL) -> Agent:
    """An agent for machine id m1 on host NAME."""
    return Agent(
        Registry(cluster.config),
        SimulatedUnitManager(),
        AgentSettings(machine_id="m1", ttl=ttl),
        hostname=name,
        instance=instance,
    ).start()


def running(agent: Agent) -> set[str]:
    return {n for n, s in agent.manager.observe().items() if s.active == "active"}


def test_a_clone_with_the_same_machine_id_is_refused_and_runs_nothing(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.engine()
    first = host(cluster, "alpha", "i-alpha")
    assert first.ready.wait(10)
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(3)])
    until(lambda: len(running(first)) == 3, what="three units on the first host")

    clone = host(cluster, "beta", "i-beta")
    try:
        time.sleep(3 * TTL)  # the point: however long it waits, the clone does nothing
        assert not clone.ready.is_set()
        assert running(clone) == set()
        assert cluster.registry.list_machines()["m1"].hostname == "alpha"
        said = [
            line for line in capsys.readouterr().err.splitlines() if "machine_id_in_use" in line
        ]
        assert len(said) == 1, said
        assert "machine id m1 is in use by another agent (host alpha)" in said[0]
        assert "/etc/machine-id" in said[0]
        assert "hint=" not in said[0]  # another name: a clone, not this host's past
        assert len(running(first)) == 3
    finally:
        clone.stop()
        first.stop()


def test_the_same_agent_restarting_takes_its_registration_back_at_once(
    cluster: Cluster,
) -> None:
    # A lease long enough that registering (slower under load) fits well inside half of
    # it: waiting for the old lease would take all of it.
    ttl = 10
    first = host(cluster, "alpha", "i-alpha", ttl)
    assert first.ready.wait(10)
    first.stop(revoke=False)  # as the daemon stops: the lease runs on
    again = host(cluster, "alpha", "i-alpha", ttl)
    try:
        assert again.ready.wait(ttl / 2), "waited for the old lease instead of taking over"
    finally:
        again.stop()


def test_a_host_rebooted_without_its_token_waits_for_its_old_lease_and_is_told_why(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    first = host(cluster, "alpha", "i-alpha")
    assert first.ready.wait(10)
    first.stop(revoke=False)  # the host goes down; its lease runs on
    again = host(cluster, "alpha", "i-lost")  # same name, its instance file was not kept
    try:
        # The old lease ends within TTL, then its next try (every second) registers.
        assert again.ready.wait(TTL + 10), "the old lease ended: it registers"
        said = [
            line for line in capsys.readouterr().err.splitlines() if "machine_id_in_use" in line
        ]
        assert len(said) == 1, said
        assert "hint=" in said[0] and "/var/lib/fleetpy" in said[0]
        assert f"at most {TTL} s" in said[0]
    finally:
        again.stop()


def test_a_registration_from_another_instance_is_refused_whole(registry: Registry) -> None:
    lease = registry.grant_lease(30)
    registry.register_machine(MachineRecord("m1", hostname="alpha", instance="a"), lease)
    other = registry.grant_lease(30)
    with pytest.raises(MachineIdInUse, match="in use by another agent"):
        registry.register_machine(MachineRecord("m1", hostname="beta", instance="b"), other)
    assert registry.list_machines()["m1"].hostname == "alpha"
    # An agent from before instances were recorded ("") is taken over.
    registry.register_machine(MachineRecord("m2", hostname="old"), lease)
    registry.register_machine(MachineRecord("m2", hostname="new", instance="n"), other)
    assert registry.list_machines()["m2"].hostname == "new"


def test_the_instance_is_kept_across_restarts_and_reboots_in_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lib" / "agent-m1.instance"  # its directory made on first use
    first = agent_instance(path)
    assert agent_instance(path) == first  # restarted, or rebooted: the file is on disk
    assert first.startswith(socket.gethostname() + "/")
    monkeypatch.setattr(socket, "gethostname", lambda: "a-clone")
    assert agent_instance(path) != first  # a clone carrying the file differs by its name
    path.unlink()
    assert agent_instance(path).startswith("a-clone/")
    (tmp_path / "ro").mkdir(mode=0o500)
    assert agent_instance(tmp_path / "ro" / "x.instance")  # unwritable: still one


def test_a_real_agent_keeps_its_instance_on_disk_a_simulated_one_beside_its_units() -> None:
    systemd = AgentSettings(unit_manager=UnitManagerKind.SYSTEMD)
    simulated = AgentSettings(unit_manager=UnitManagerKind.SIMULATED, unit_dir="/tmp/x/units")
    assert instance_file(systemd, "m1") == Path("/var/lib/fleetpy/agent-m1.instance")
    assert instance_file(simulated, "m1") == Path("/tmp/x/agent-m1.instance")
