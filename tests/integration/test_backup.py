"""`fleetpy backup` and `fleetpy restore` (issue [12]): the desired state back into an
emptied prefix, the engine placing again and the agents following; what cannot be restored
is refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetpy.metadata import MetadataChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.registry.transport import prefix_range_end

from support.cli_helpers import SERVICE, one_error_line, write
from support.cli_run import Run
from support.etcd_transport import transport
from support.sim_cluster import Cluster
from support.waiting import until

pytestmark = pytest.mark.usefixtures("clean_env")


def unit_files(run: Run) -> list[dict[str, object]]:
    rows = json.loads(run("list-unit-files", "-o", "json").stdout)
    return [{k: r[k] for k in ("unit", "hash", "desired_state")} for r in rows]


def wipe(config: RegistryConfig) -> None:
    with transport(*config.endpoints) as raw:
        start = config.prefix + "/"
        raw.delete(start, prefix_range_end(start))


def test_a_backup_restored_into_an_emptied_prefix_brings_the_cluster_back(
    cluster: Cluster,
    run: Run,
    registry: Registry,
    registry_config: RegistryConfig,
    units_dir: Path,
    tmp_path: Path,
) -> None:
    cluster.engine()
    for machine in ("m1", "m2"):
        cluster.agent(machine)
    web = [write(units_dir, f"web{i}.service") for i in range(3)]
    assert run("start", *web).exit_code == 0
    assert (
        run(
            "load", "--no-block", write(units_dir, "idle.service", SERVICE + "Environment=I=1\n")
        ).exit_code
        == 0
    )
    assert (
        run("submit", write(units_dir, "kept.service", SERVICE + "Environment=K=1\n")).exit_code
        == 0
    )
    registry.change_metadata([MetadataChange("m2", "role", "db")])
    until(lambda: len([n for n, _ in cluster.hosted()]) == 3, what="three units running")
    before = unit_files(run)

    backup = tmp_path / "cluster.backup"
    result = run("backup", str(backup))
    assert result.exit_code == 0, result.output
    assert "Backed up 5 units, 3 unit files, 1 machines' metadata" in result.stdout
    data = json.loads(backup.read_text())
    assert data["fleetpy_backup"] == 1 and data["prefix"] == registry_config.prefix
    assert not any(k.startswith(("schedule/", "state/", "machines/")) for k in data["keys"])

    wipe(registry_config)
    assert unit_files(run) == []
    # Agents found the data gone and hold their units (tests/integration/test_data_loss.py).
    until(lambda: all(a._held for a in cluster.agents.values()), what="both agents holding")
    result = run("restore", str(backup))
    assert result.exit_code == 0, result.output
    assert "Restored 5 units" in result.stdout
    assert unit_files(run) == before
    # Agents running units registered again when they found the data gone.
    until(lambda: set(registry.list_machines()) == {"m1", "m2"}, what="both machines back")
    assert registry.list_machines()["m2"].metadata["role"] == "db"
    until(
        lambda: [n for n, _ in cluster.hosted()] == [f"web{i}.service" for i in range(3)],
        what="each web once",
    )

    # Again: everything is already there, nothing is written.
    result = run("restore", str(backup))
    assert result.exit_code == 0 and "(0 keys written, " in result.stdout, result.output


def test_what_cannot_be_restored_is_one_line_and_writes_nothing(
    run: Run, registry_config: RegistryConfig, units_dir: Path, tmp_path: Path
) -> None:
    assert run("submit", write(units_dir, "a.service")).exit_code == 0
    backup = tmp_path / "b.json"
    assert run("backup", str(backup)).exit_code == 0
    assert run("destroy", "a.service").exit_code == 0
    assert (
        run("submit", write(units_dir, "other.service", SERVICE + "Environment=O=1\n")).exit_code
        == 0
    )

    def keys() -> dict[bytes, bytes]:
        with transport(*registry_config.endpoints) as raw:
            start = registry_config.prefix + "/"
            return {kv.key: kv.value for kv in raw.range(start, prefix_range_end(start)).kvs}

    written = keys()
    data = json.loads(backup.read_text())
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**data, "fleetpy_backup": 2}))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**data, "keys": {"unit/x.service": "{not json"}}))
    for path, message in (
        (backup, "already holds other desired state (2 keys, e.g. content/"),
        (newer, "backup format 2 is newer than this fleetpy reads (1)"),
        (broken, "backup key unit/x.service: "),
        (tmp_path / "missing.json", "missing.json"),
    ):
        result = run("restore", str(path))
        assert result.exit_code == 1, result.output
        assert message in one_error_line(result)
        assert keys() == written


def test_restored_units_are_placed_where_they_still_run_not_restarted(
    cluster: Cluster,
    run: Run,
    registry: Registry,
    registry_config: RegistryConfig,
    units_dir: Path,
    tmp_path: Path,
) -> None:
    cluster.engine()
    cluster.agent("m1")
    web = [write(units_dir, f"web{i}.service") for i in range(2)]
    assert run("start", *web).exit_code == 0
    until(lambda: len(cluster.hosted()) == 2, what="both on m1")
    # m2 joins after: placing both anew would put one of them there (least loaded).
    cluster.agent("m2")
    backup = tmp_path / "cluster.backup"
    assert run("backup", str(backup)).exit_code == 0
    actions = {m: a.stats.actions for m, a in cluster.agents.items()}

    wipe(registry_config)
    until(lambda: cluster.agents["m1"]._held, what="m1 holding its units")
    # Registered again, and reporting what runs, before the restore comes.
    until(lambda: set(cluster.running().values()) == {"m1"}, what="m1 reporting both")
    result = run("restore", str(backup))
    assert result.exit_code == 0, result.output

    until(lambda: len(cluster.placement()) == 2, what="both placed")
    assert cluster.placement() == {"web0.service": "m1", "web1.service": "m1"}
    until(lambda: not cluster.agents["m1"]._held, what="m1 following its schedule")
    assert cluster.hosted() == [("web0.service", "m1"), ("web1.service", "m1")]
    # Nothing was stopped, started or rewritten anywhere.
    assert {m: a.stats.actions for m, a in cluster.agents.items()} == actions
    # The request was the engine's to clear.
    assert not registry.adoption_requested()
