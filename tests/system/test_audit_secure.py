"""The audit trail on a TLS + auth etcd (issue [17] items 4 and 5): the user an entry
names is the one etcd knows the client as (its certificate's CN, or --username); only the
operator's role may write trails; what etcd's root writes around fleetpy shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fleetpy.agent import Agent
from fleetpy.config import AgentSettings, EngineSettings
from fleetpy.engine import Engine
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry
from fleetpy.registry.transport import EtcdPermissionDenied
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import parse_unit
from fleetpy.unitmanager import SimulatedUnitManager

from support.rollout import deployment
from support.secure_fixtures import SecureEtcd, secure_etcd

PASSWORD = "audit-pass-0123456789"
SERVICE = "[Service]\nExecStart=/bin/sleep 1000\n"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEtcd]:
    directory = tmp_path_factory.mktemp("audit")
    with secure_etcd(directory, ("m1",), passwords={"fleetpy-operator": PASSWORD}) as etcd:
        yield etcd


def test_the_user_shown_is_the_certificates(secure: SecureEtcd, tmp_path: Path) -> None:
    unit = tmp_path / "web.service"
    unit.write_text(SERVICE)
    secure.cli("start", "--no-block", str(unit))
    secure.cli("stop", "--no-block", "web.service")
    data = json.loads(secure.cli("history", "web.service", "-o", "json").stdout)
    assert [(e["verb"], e["user"]) for e in data["entries"]] == [
        ("start", "fleetpy-operator"),
        ("stop", "fleetpy-operator"),
    ]
    assert data["unrecorded"] is False
    table = secure.cli("history", "web.service").stdout.splitlines()
    assert [line.split()[1:3] for line in table[1:]] == [
        ["start", "fleetpy-operator"],
        ["stop", "fleetpy-operator"],
    ]


def test_a_password_user_is_named_by_its_user_name(secure: SecureEtcd) -> None:
    config = secure.config(secure.creds.operator)
    # The same etcd user by name and password, its certificate's CN aside: etcd takes the
    # token's user, and so does the trail.
    with Registry(replace(config, username="fleetpy-operator", password=PASSWORD)) as reg:
        assert reg.etcd_user == "fleetpy-operator"
        text = parse_unit(SERVICE).serialize()
        reg.change_units(
            [UnitChange("pw.service", DesiredState.LOADED, text, parse_unit(SERVICE).hash)]
        )
        trail = reg.unit_history("pw.service")
    assert trail is not None and [e.user for e in trail.entries] == ["fleetpy-operator"]


def test_only_the_operator_writes_trails(secure: SecureEtcd) -> None:
    creds = secure.creds
    for who, user in ((creds.engine, "fleetpy-engine"), (creds.agents["m1"], "fleetpy-agent-m1")):
        with secure.transport(who) as client:
            with pytest.raises(EtcdPermissionDenied) as info:
                client.put("/fleetpy/audit/web.service", "{}")
            assert f"permission denied for user {user}" in str(info.value)


def test_roots_write_around_fleetpy_shows(secure: SecureEtcd, tmp_path: Path) -> None:
    unit = tmp_path / "db.service"
    unit.write_text(SERVICE)
    secure.cli("start", "--no-block", str(unit))
    key = "/fleetpy/unit/db.service"
    with secure.transport(secure.creds.root) as root:
        value = root.range(key).kvs[0].value
        root.put(key, value.replace(b'"launched"', b'"inactive"'))
    shown = secure.cli("history", "db.service")
    assert "without an entry here" in shown.stderr
    with secure.transport(secure.creds.root) as root:
        root.delete(key)
    data = json.loads(secure.cli("history", "db.service", "-o", "json").stdout)
    assert data["unrecorded"] is True and data["revision"] is None


def test_history_after_a_rolling_apply_with_each_role_its_own_certificate(
    secure: SecureEtcd, tmp_path: Path
) -> None:
    creds = secure.creds
    registries = [secure.registry(creds.agents["m1"]), secure.registry(creds.engine)]
    agent = Agent(
        registries[0], SimulatedUnitManager(), AgentSettings(machine_id="m1", ttl=3)
    ).start()
    engine = Engine(registries[1], EngineSettings(lease_ttl=3, reconcile_interval=1)).start()
    try:
        assert agent.ready.wait(10)
        directory = deployment(tmp_path, instances=2)
        secure.cli("apply", str(directory), "--commit", "c1", "--min-ready", "0")
        deployment(tmp_path, version="2", instances=2)
        secure.cli("apply", str(directory), "--commit", "c2", "--min-ready", "0")
        data = json.loads(secure.cli("history", "app@2.service", "-o", "json").stdout)
        assert [(e["verb"], e["origin"], e["user"]) for e in data["entries"]] == [
            ("start", "c1", "fleetpy-operator"),
            ("replace", "c2", "fleetpy-operator"),
        ]
        assert data["unrecorded"] is False
    finally:
        engine.stop()
        agent.stop()
        for registry in registries:
            registry.close()
