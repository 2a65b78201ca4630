"""An agent's --metrics-listen on a real host (systemd-nspawn, real systemd over D-Bus):
units it owns and its D-Bus calls, scraped from outside. Hosts share this machine's
network in this harness, so each host's agent listens on a port of its own."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetpy.cluster.etcd import free_port
from fleetpy.config import EngineSettings
from fleetpy.engine import Engine
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import parse_unit

from support.waiting import until

pytestmark = pytest.mark.hosts


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(port: int, name: str, **labels: str) -> float:
    return scrape(port).get((name, tuple(sorted(labels.items()))), 0.0)


def test_agent_metrics_on_a_real_host(
    hosts: Callable[..., list[object]], registry_config: RegistryConfig
) -> None:
    port = free_port()
    hosts(1, extra_config={"metrics_listen": f"127.0.0.1:{port}"})
    registry = Registry(registry_config)
    engine = Engine(Registry(registry_config), EngineSettings(lease_ttl=3)).start()
    try:
        until(lambda: value(port, "fleetpy_agent_units_owned") == 0 and scrape(port), 60, "agent")
        text = parse_unit("[Service]\nExecStart=/bin/sleep 100000\n").serialize()
        digest = parse_unit(text).hash
        registry.change_units(
            [
                UnitChange(f"metrics{i}.service", DesiredState.LAUNCHED, text, digest)
                for i in range(3)
            ]
        )
        until(
            lambda: value(port, "fleetpy_agent_units", active="active") == 3,
            60,
            "3 units active on the host",
        )
        assert value(port, "fleetpy_agent_units_owned") == 3
        count = "fleetpy_agent_dbus_call_seconds_count"
        # Units' object paths come from their names (no LoadUnit) and started units'
        # states from their starts' signals (no GetAll): one StartUnit each.
        assert value(port, count, method="LoadUnit") == 0
        assert value(port, count, method="GetAll") == 0
        assert value(port, count, method="StartUnit") == 3
        assert value(port, "fleetpy_agent_dbus_call_seconds_sum", method="StartUnit") > 0
        assert value(port, "fleetpy_agent_systemd_job_failures_total", result="failed") == 0
    finally:
        engine.stop()
        engine.registry.close()
        registry.close()
