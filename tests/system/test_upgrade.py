"""Upgrades without downtime (README "Upgrades"): the previous release, installed from its
wheel (tests/support/previous_release.py), beside this one against one etcd, in both
directions of the mixed state; and an agent upgraded in place on a real host adopting its
running units. What each release does with the other's records: tests/*/test_schema_versions.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetpy.cluster.etcd import EtcdServer
from fleetpy.cluster.nspawn import Host, HostPool
from fleetpy.registry import Registry

from support.hosts_fixtures import pool_name_prefix
from support.previous_release import Mixed, Release, previous_release
from support.waiting import until

SERVICE = "[Service]\nExecStart=/bin/sleep infinity\n"
FIRST = [f"u{i}.service" for i in range(4)]
LATER = ["n0.service", "n1.service"]
# This checkout's package, bound into a host beside the previous release's.
NEXT = Path(__file__).resolve().parents[2] / "fleetpy"


@pytest.fixture(scope="session")
def previous() -> Release:
    return previous_release()


@pytest.fixture
def mixed(etcd: EtcdServer, prefix: str, tmp_path: Path) -> Iterator[Mixed]:
    cluster = Mixed(etcd.endpoint, prefix, tmp_path)
    for name in (*FIRST, *LATER):
        (tmp_path / name).write_text(SERVICE)
    yield cluster
    cluster.close()


def placement(registry: Registry) -> dict[str, str]:
    return {u: m for u, (m, _) in registry.read_view(with_states=False).schedule.items()}


def stored(registry: Registry, *key: str) -> dict[str, Any]:
    kvs = registry._etcd.range(registry.key(*key)).kvs
    return json.loads(kvs[0].value) if kvs else {}


def units(mixed: Mixed, release: Release | None) -> dict[str, Any]:
    listed = json.loads(mixed.cli(release, "list-units", "-o", "json").stdout)
    return {u["unit"]: (u["machine"], u["active"]) for u in listed}


def handover(mixed: Mixed, registry: Registry, old: str, new: str, release: Release | None) -> None:
    """Replace engine OLD by NEW (of RELEASE): started first, then OLD stopped."""
    leader = registry.leader()
    mixed.engine(new, release)
    mixed.stop(old)
    until(lambda: registry.leader() not in (None, leader), timeout=20, what=f"{new} leads")


def upgraded_cluster_keeps_running(
    mixed: Mixed, registry: Registry, agents: Release | None, first: Release | None,
    then: Release | None,
) -> None:  # fmt: skip
    """Agents of AGENTS; engine and CLI of FIRST place units, then engine and CLI of THEN
    take over and place more: nothing moves or stops, each reads what the other wrote."""
    for machine in ("m1", "m2"):
        mixed.agent(machine, agents)
    mixed.engine("engine-first", first)
    until(lambda: len(registry.list_machines()) == 2, what="2 machines")
    mixed.cli(first, "start", *FIRST)  # blocks until active
    before = placement(registry)
    assert sorted(before) == FIRST
    handover(mixed, registry, "engine-first", "engine-then", then)
    mixed.cli(then, "start", *LATER)
    for release in (first, then):
        listed = units(mixed, release)
        assert {u: a for u, (_, a) in listed.items()} == dict.fromkeys(FIRST + LATER, "active")
        assert {u: m for u, (m, _) in listed.items() if u in FIRST} == before
    assert {u: m for u, m in placement(registry).items() if u in FIRST} == before
    listed_machines = json.loads(mixed.cli(first, "list-machines", "-o", "json").stdout)
    assert len(listed_machines) == 2
    for machine in ("m1", "m2"):
        assert mixed.processes[machine].poll() is None
        log = mixed.log(machine)
        assert "action=stop" not in log and "agent_retry" not in log, log[-2000:]
        assert "record_skipped" not in log and "record_too_new" not in log
    # Each side wrote its own format (this release's records carry "v"), read by the other.
    for key, writer in (
        (("machines", "m1"), agents),
        (("unit", FIRST[0]), first),
        (("unit", LATER[0]), then),
        (("schedule", before[FIRST[0]], FIRST[0]), first),
        (("schedule", placement(registry)[LATER[0]], LATER[0]), then),
    ):
        assert ("v" in stored(registry, *key)) is (writer is None), key
    for engine in ("engine-first", "engine-then"):
        assert "record_skipped" not in mixed.log(engine), mixed.log(engine)[-2000:]


def test_old_agents_keep_their_units_under_a_new_engine_and_cli(
    previous: Release, mixed: Mixed, registry: Registry
) -> None:
    upgraded_cluster_keeps_running(mixed, registry, previous, previous, None)


def test_new_agents_keep_their_units_under_an_old_engine_and_cli(
    previous: Release, mixed: Mixed, registry: Registry
) -> None:
    upgraded_cluster_keeps_running(mixed, registry, None, None, previous)


@pytest.fixture
def previous_host(
    previous: Release,
    host_rootfs: Path,
    host_docker: str,
    etcd: EtcdServer,
    prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Host]:
    """A host whose agent is the previous release's (its package bound where a host's
    fleetpy is imported from), with this release's package beside it, not yet used."""
    with HostPool(
        rootfs=host_rootfs,
        state_root=tmp_path_factory.mktemp("hosts"),
        etcd_endpoints=[etcd.endpoint],
        package_dir=previous.package_dir,
        name_prefix=pool_name_prefix(),
    ) as pool:
        (host,) = pool.start(1, etcd_prefix=prefix, binds=[(NEXT, "/opt/fleetpy-next/fleetpy")])
        yield host


def test_an_agent_upgraded_in_place_adopts_its_running_units(
    previous: Release, previous_host: Host, mixed: Mixed, registry: Registry
) -> None:
    host = previous_host
    mixed.engine("engine", previous)
    until(lambda: host.machine_id in registry.list_machines(), timeout=60, what="host registered")
    mixed.cli(previous, "start", *LATER)
    pids = {unit: host.main_pid(unit) for unit in LATER}
    assert all(pids.values())

    def record() -> dict[str, Any]:
        return stored(registry, "machines", host.machine_id)

    assert "v" not in record()  # the previous release's agent wrote it
    # The upgrade: this release's package first on the agent's path, the agent restarted.
    host.run(["mkdir", "-p", "/run/systemd/system/fleetpy-agent.service.d"])
    host.run(
        ["tee", "/run/systemd/system/fleetpy-agent.service.d/upgrade.conf"],
        input="[Service]\nEnvironment=PYTHONPATH=/opt/fleetpy-next\n",
    )
    host.systemctl("daemon-reload")
    host.systemctl("restart", "fleetpy-agent")
    until(lambda: record().get("v") == 1, timeout=30, what="this release's agent registered")
    until(
        lambda: "engine_synced" in mixed.log("engine") and all(
            host.is_active(unit) for unit in LATER
        ),
        what="units active",
    )  # fmt: skip
    assert {unit: host.main_pid(unit) for unit in LATER} == pids
    journal = host.journal("fleetpy-agent")
    after = journal[journal.rfind("machine_registered") :]
    assert "unit_action" not in after, after
    assert {u: a for u, (_, a) in units(mixed, previous).items()} == dict.fromkeys(LATER, "active")
