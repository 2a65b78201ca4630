"""plan and apply against simulated hosts: three agents and an engine in this process,
and a deployment directory to render (test_rollout, test_gitops)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings, EngineSettings
from fleetpy.deploy.deployment import RenderedUnit, load_deployment, render_deployment
from fleetpy.deploy.rollout import (
    ApplyOptions,
    ApplyResult,
    DeploymentPlan,
    apply_deployment,
    plan_deployment,
)
from fleetpy.engine import Engine
from fleetpy.errors import DeploymentError
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.unitmanager import SimulatedUnitManager

APP = """\
[Unit]
Description=app {{ instance }} version {{ version }}

[Service]
ExecStart={{ command }}

[X-Fleet]
MaxPerMachine=2
"""


SIDE = """\
[Service]
ExecStart=/bin/sleep 1000

[X-Fleet]
MachineOf=app@%i.service
"""


class Cluster:
    """Three simulated hosts and an engine, in this process."""

    def __init__(self, config: RegistryConfig) -> None:
        self.registry = Registry(config)
        # Starts take a moment, so a rolling update's down units show in the reports.
        self.agents = [
            Agent(
                Registry(config),
                SimulatedUnitManager(start_seconds=0.2),
                AgentSettings(machine_id=f"m{i}", metadata={"rack": f"r{i}"}, ttl=3),
            ).start()
            for i in range(3)
        ]
        self.engine = Engine(
            Registry(config), EngineSettings(lease_ttl=3, reconcile_interval=5)
        ).start()
        for agent in self.agents:
            agent.ready.wait(10)

    def active(self) -> dict[str, str]:
        """unit -> hash it runs, where active."""
        return {
            u: s.hash
            for u, by in self.registry.list_states().items()
            for s in by.values()
            if s.active == "active"
        }

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.engine.stop()
        self.registry.close()


def deployment(
    tmp_path: Path,
    version: str = "1",
    instances: int = 4,
    command: str = "/bin/sleep 1000",
    sidekick: bool = False,
    extra: str = "",
    name: str = "demo",
) -> Path:
    directory = tmp_path / f"deploy-{name}"
    directory.mkdir(exist_ok=True)
    (directory / "app.service.j2").write_text(APP)
    (directory / "side.service.j2").write_text(SIDE)
    units = [f"  - {{name: app@.service, template: app.service.j2, instances: {instances}}}"]
    if sidekick:
        units.append(
            f"  - {{name: side@.service, template: side.service.j2, instances: {instances}}}"
        )
    units.append(extra) if extra else None
    (directory / "fleetpy.yaml").write_text(
        f"name: {name}\nvalues: {{version: '{version}', command: '{command}'}}\nunits:\n"
        + "\n".join(units)
        + "\nrollout: {max_unavailable: 1, min_ready: 0, timeout: 20}\n"
    )
    return directory


def render(directory: Path) -> tuple[str, tuple[RenderedUnit, ...]]:
    loaded = load_deployment(directory)
    return loaded.name, render_deployment(loaded)


QUICK = ApplyOptions(min_ready=0, timeout=20)


def apply(
    registry: Registry,
    directory: Path,
    prune: bool = False,
    options: ApplyOptions = QUICK,
    origin: str = "c1",
) -> tuple[DeploymentPlan, ApplyResult]:
    name, units = render(directory)
    plan = plan_deployment(registry, name, units, origin, prune)
    return plan, apply_deployment(registry, plan, units, options)


def failing_apply_with_rollback(registry: Registry, directory: Path) -> str:
    """`apply --rollback` of a version that fails (origin "bad"): its error message."""
    with pytest.raises(DeploymentError) as info:
        apply(
            registry,
            directory,
            options=ApplyOptions(min_ready=0, timeout=10, rollback=True),
            origin="bad",
        )
    return str(info.value)
