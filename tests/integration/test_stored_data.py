"""test_stored_data.py's tests that need the session's etcd or a short-lived helper process
(README "Tests"); what the module covers as a whole: tests/pure/test_stored_data.py."""

from __future__ import annotations

import pytest

from fleetpy.agent import Agent
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.config import AgentSettings
from fleetpy.registry import (
    Registry,
    RegistryConfig,
)

from support.stored_data import HOSTILE_NAMES, RecordingManager, put_raw, schedule_value
from support.waiting import until


def test_raw_keys_with_hostile_names_never_reach_the_unit_manager(
    etcd: EtcdServer, registry_config: RegistryConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = registry_config.prefix.encode()
    bad = [name.encode() for name in HOSTILE_NAMES if name] + [b"\xff\xfe.service"]

    def put_all(names: list[bytes], suffix: bytes) -> None:
        for name in names:
            put_raw(etcd.endpoint, prefix + b"/schedule/m1/" + name + suffix, schedule_value())
            put_raw(etcd.endpoint, prefix + b"/global/" + name + suffix, schedule_value())

    put_all(bad, b"")  # before the agent's first read
    put_raw(etcd.endpoint, prefix + b"/schedule/m1/good.service", schedule_value())
    registry = Registry(registry_config)
    manager = RecordingManager()
    agent = Agent(registry, manager, AgentSettings(machine_id="m1", ttl=5)).start()
    try:
        assert agent.ready.wait(10)
        until(lambda: "good.service" in manager.observe(), 10, "the good unit")
        put_all(bad, b"-late")  # while it watches
        put_raw(etcd.endpoint, prefix + b"/schedule/m1/late.service", schedule_value())
        until(lambda: "late.service" in manager.observe(), 10, "the late unit")
        assert set(manager.names) == {"good.service", "late.service"}
        assert set(manager.observe()) == {"good.service", "late.service"}
        until(lambda: len(registry.list_states()) == 2, 10, "both units reported")
        assert set(registry.list_states()) == {"good.service", "late.service"}
    finally:
        agent.stop()
        registry.close()
    skipped = [line for line in capsys.readouterr().err.splitlines() if "record_skipped" in line]
    assert skipped and not any("\x1b" in line or "\x00" in line for line in skipped)
