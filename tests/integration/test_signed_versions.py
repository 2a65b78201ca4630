"""An agent's accepted versions against a real etcd (simulated host): recorded on the
host's disk before the unit runs, remembered by the next agent process, and nothing run
while they cannot be written. Real hosts on TLS+auth etcd: test_signed_versions_hosts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.accepted_versions import AcceptedVersions
from fleetpy.agent import Agent
from fleetpy.config import AgentSettings, EngineSettings
from fleetpy.engine import Engine
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.states import DesiredState
from fleetpy.unitfile.signing import (
    FUTURE_SKEW_MS,
    Signer,
    TrustedKey,
    TrustedKeys,
    generate_key,
    load_signer,
    now_ms,
    signature_version,
)
from fleetpy.unitfile.unit import content_hash
from fleetpy.unitmanager import SimulatedUnitManager

from support.waiting import until

OLD = "[Service]\nExecStart=/bin/sleep 1000\n"
NEW = "[Service]\nExecStart=/bin/sleep 2000\n"


class Host:
    """One simulated machine whose agent trusts `signer`, its versions file, an engine."""

    def __init__(self, config: RegistryConfig, signer: Signer, versions: Path) -> None:
        self.registry = Registry(config)
        self.manager = SimulatedUnitManager()
        self.trusted = TrustedKeys(
            {signer.key_id: TrustedKey(signer.key_id, signer.private.public_key(), "ops")}
        )
        self.versions = versions
        self.agent = self.start_agent()
        self.engine = Engine(Registry(config), EngineSettings(lease_ttl=2)).start()

    def start_agent(self) -> Agent:
        agent = Agent(
            self.registry,
            self.manager,
            AgentSettings(machine_id="m1", ttl=3),
            trusted=self.trusted,
            versions=AcceptedVersions(self.versions),
        ).start()
        assert agent.ready.wait(10)
        return agent

    def state(self, unit: str) -> tuple[str, str, str]:
        found = self.registry.list_states().get(unit, {}).get("m1")
        return ("", "", "") if found is None else (found.active, found.sub, found.hash)

    def close(self) -> None:
        self.agent.stop()
        self.engine.stop()
        self.registry.close()


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    generate_key(tmp_path / "keys", "ops")
    return load_signer("ops", tmp_path / "keys", lambda m: None)


@pytest.fixture
def host(registry_config: RegistryConfig, signer: Signer, tmp_path: Path) -> Iterator[Host]:
    made = Host(registry_config, signer, tmp_path / "state" / "agent-m1.versions")
    yield made
    made.close()


def put(host: Host, text: str, signature: str) -> None:
    digest = content_hash(text)
    host.registry.change_units(
        [
            UnitChange(
                "web.service",
                DesiredState.LAUNCHED,
                text,
                digest,
                replace=True,
                signature=signature,
            )
        ]
    )


def test_versions_are_kept_on_the_host_and_outlive_the_agent(host: Host, signer: Signer) -> None:
    old_signature = signer.sign("web.service", content_hash(OLD))
    put(host, OLD, old_signature)
    until(lambda: host.state("web.service")[0] == "active", what="version 1 active")
    new_signature = signer.sign("web.service", content_hash(NEW), signature_version(old_signature))
    put(host, NEW, new_signature)
    until(lambda: host.state("web.service")[2] == content_hash(NEW), what="version 2 runs")
    kept = json.loads(host.versions.read_text())
    assert kept == {"format": 1, "versions": {"web.service": signature_version(new_signature)}}

    # Another agent process, the same host disk: version 1 put back is refused.
    host.agent.stop(revoke=False)
    host.agent = host.start_agent()
    put(host, OLD, old_signature)
    until(lambda: host.state("web.service")[:2] == ("rejected", "rollback"), what="refused")
    assert host.manager.observe()["web.service"].hash == content_hash(NEW)  # still running


def test_nothing_runs_while_the_versions_cannot_be_written(
    host: Host, signer: Signer, capfd: pytest.CaptureFixture[str]
) -> None:
    host.versions.parent.mkdir(parents=True, exist_ok=True)
    host.versions.mkdir()  # in the way of the file: each write fails
    put(host, OLD, signer.sign("web.service", content_hash(OLD)))
    logged: list[str] = []

    def said() -> bool:
        logged.append(capfd.readouterr().err)
        return "event=accepted_versions_not_kept machine=m1" in "".join(logged)

    until(said, what="the agent's one line")
    host.agent.stop(revoke=False)
    assert "web.service" not in host.manager.observe()
    host.versions.rmdir()
    host.agent = host.start_agent()  # a round again: written, then run
    until(lambda: host.state("web.service")[0] == "active", what="active once writable")
    assert json.loads(host.versions.read_text())["versions"]["web.service"] > 0


def test_a_version_from_the_future_runs_once_this_clock_gets_there(
    host: Host, signer: Signer
) -> None:
    ahead = now_ms() + FUTURE_SKEW_MS + 3000  # 3 s beyond what this clock accepts
    put(host, OLD, signer.sign_at("web.service", content_hash(OLD), ahead))
    until(lambda: host.state("web.service")[:2] == ("rejected", "future"), what="refused")
    assert "web.service" not in host.manager.observe()
    # Nothing else happens: the agent screens it again as its clock moves on.
    until(lambda: host.state("web.service")[0] == "active", timeout=20, what="active in time")
    assert now_ms() >= ahead - FUTURE_SKEW_MS
