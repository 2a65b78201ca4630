"""The audit trail (issue [17] item 4): every change of a unit's desired state, by the CLI,
`fleetpy apply` or fleet's API, leaves an entry written in the change's own transaction;
`fleetpy history` and GET /fleetpy/v1/units/<name>/history show it; backups carry it."""

from __future__ import annotations

import getpass
import itertools
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpy.deploy.rollout import ApplyOptions
from fleetpy.errors import DeploymentError
from fleetpy.model.audit import AUDIT_KEPT
from fleetpy.model.changes import UnitChange
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.registry.transport import prefix_range_end
from fleetpy.states import DesiredState
from fleetpy.unitfile.signing import format_signature
from fleetpy.unitfile.unit import parse_unit

from support.api_fixtures import Api, UnixConnection, request
from support.cli_helpers import SERVICE, one_error_line, write
from support.cli_run import Run
from support.etcd_transport import transport
from support.global_rollout import UNIT, first_version, monitor, monitor_hash, started_everywhere
from support.rollout import Cluster, apply, deployment
from support.waiting import until

pytestmark = pytest.mark.usefixtures("clean_env")


def history(run: Run, unit: str) -> dict[str, object]:
    result = run("history", unit, "-o", "json")
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def verbs(data: dict[str, object]) -> list[str]:
    entries = data["entries"]
    assert isinstance(entries, list)
    return [e["verb"] for e in entries]


def revisions(config: RegistryConfig, unit: str) -> tuple[int, int]:
    """The mod_revision of the unit's record and of its trail."""
    with transport(*config.endpoints) as raw:
        record = raw.range(f"{config.prefix}/unit/{unit}").kvs
        trail = raw.range(f"{config.prefix}/audit/{unit}").kvs
    return (record[0].mod_revision if record else 0), (trail[0].mod_revision if trail else 0)


def test_each_verb_leaves_an_entry_in_the_same_transaction(
    run: Run, registry_config: RegistryConfig, units_dir: Path
) -> None:
    path = write(units_dir, "web.service")
    for verb in ("submit", "load", "start", "stop", "unload"):
        args = (path,) if verb == "submit" else ("--no-block", path)
        assert run(verb, *args).exit_code == 0
        record, trail = revisions(registry_config, "web.service")
        assert record == trail != 0  # one transaction: one revision
    assert run("start", "--no-block", path).exit_code == 0
    assert run("start", "--no-block", path).exit_code == 0  # nothing changes: no entry
    assert run("destroy", "web.service").exit_code == 0
    data = history(run, "web.service")
    assert verbs(data) == ["submit", "load", "start", "stop", "unload", "start", "destroy"]
    entries = data["entries"]
    assert isinstance(entries, list)
    unit_hash = parse_unit(SERVICE).hash
    assert [e["desired"] for e in entries] == [
        "inactive",
        "loaded",
        "launched",
        "loaded",
        "inactive",
        "launched",
        None,
    ]
    assert {e["hash"] for e in entries[:-1]} == {unit_hash} and entries[-1]["hash"] is None
    assert {e["host"] for e in entries} == {socket.gethostname()}
    assert {e["user"] for e in entries} == {None}  # an etcd without auth
    # Each entry knows its change's revision, in order; the history stays after destroy.
    assert all(e["revision"] > 0 for e in entries)
    assert [e["revision"] for e in entries] == sorted({e["revision"] for e in entries})
    assert data["unrecorded"] is False and data["revision"] is None


def test_history_table_and_a_record_written_around_fleetpy(
    run: Run, registry_config: RegistryConfig, units_dir: Path
) -> None:
    assert run("start", "--no-block", write(units_dir, "web.service")).exit_code == 0
    shown = run("history", "web.service")
    assert shown.exit_code == 0 and shown.stderr == ""
    header, row = shown.stdout.splitlines()
    assert header.split() == ["TIME", "VERB", "USER", "HOST", "DESIRED", "HASH", "KEYS", "REVISION"]
    # No etcd user (an etcd without auth): the client's login is shown in parentheses.
    assert row.split()[1:4] == ["start", f"({getpass.getuser()})", socket.gethostname()]
    assert parse_unit(SERVICE).hash[:7] in row
    # Someone with etcd's credentials writes the record directly: no entry, and it shows.
    key = f"{registry_config.prefix}/unit/web.service"
    with transport(*registry_config.endpoints) as raw:
        value = raw.range(key).kvs[0].value
        raw.put(key, value.replace(b'"launched"', b'"inactive"'))
    shown = run("history", "web.service")
    assert shown.exit_code == 0
    assert "written at revision" in shown.stderr and "without an entry here" in shown.stderr
    assert history(run, "web.service")["unrecorded"] is True


def test_history_of_bad_names_and_unknown_units_is_one_line(run: Run) -> None:
    assert "has no history" in one_error_line(run("history", "never.service"))
    assert run("history", "never.service").exit_code != 0
    assert "invalid" in one_error_line(run("history", "../x.service")).lower()


def test_the_trail_keeps_the_last_entries(registry: Registry) -> None:
    text = parse_unit(SERVICE).serialize()
    unit_hash = parse_unit(SERVICE).hash
    registry.change_units([UnitChange("web.service", DesiredState.LOADED, text, unit_hash)])
    for i in range(AUDIT_KEPT + 4):
        desired = DesiredState.LAUNCHED if i % 2 == 0 else DesiredState.LOADED
        registry.change_units([UnitChange("web.service", desired)])
    trail = registry.unit_history("web.service")
    assert trail is not None and len(trail.entries) == AUDIT_KEPT
    assert trail.entries[-1].verb == "stop"
    assert trail.entries[-1].revision == registry.get_unit("web.service").revision  # type: ignore[union-attr]


def test_concurrent_writers_each_leave_their_entry(registry_config: RegistryConfig) -> None:
    text = parse_unit(SERVICE).serialize()
    unit_hash = parse_unit(SERVICE).hash
    names = [f"u{i}.service" for i in range(4)]
    with Registry(registry_config) as first:
        first.change_units([UnitChange(n, None, text, unit_hash) for n in names])

    def churn(launch: bool) -> None:
        with Registry(registry_config) as reg:
            for _ in range(10):
                desired = DesiredState.LAUNCHED if launch else DesiredState.LOADED
                reg.change_units([UnitChange(n, desired) for n in names])

    threads = [threading.Thread(target=churn, args=(k % 2 == 0,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Registry(registry_config) as reg:
        for name in names:
            trail = reg.unit_history(name)
            record = reg.get_unit(name)
            assert trail is not None and record is not None
            assert not trail.unrecorded(record.revision)
            # Each write that changed the desired state left exactly one entry: the
            # revisions are distinct and each alternates the state.
            revs = [e.revision for e in trail.entries]
            assert len(set(revs)) == len(revs)
            states = [e.desired for e in trail.entries]
            assert all(a != b for a, b in itertools.pairwise(states))


def test_api_writes_are_recorded_and_the_route_serves_them(
    api: Api, tmp_path: Path, registry: Registry
) -> None:
    path = str(tmp_path / "api.sock")
    api(listen=path)
    conn = UnixConnection(path)
    options = [
        {"section": "Service", "name": "ExecStart", "value": "/bin/sleep 1000"},
    ]
    status, _ = request(
        conn,
        "PUT",
        "/fleet/v1/units/api.service",
        {"name": "api.service", "desiredState": "loaded", "options": options},
    )
    assert status == 201
    status, _ = request(conn, "PUT", "/fleet/v1/units/api.service", {"desiredState": "launched"})
    assert status == 204
    status, _ = request(conn, "DELETE", "/fleet/v1/units/api.service")
    assert status == 204
    status, body = request(conn, "GET", "/fleetpy/v1/units/api.service/history")
    assert status == 200
    assert [e["verb"] for e in body["entries"]] == ["load", "start", "destroy"]
    assert body["unit"] == "api.service" and body["unrecorded"] is False
    status, body = request(conn, "GET", "/fleetpy/v1/units/none.service/history")
    assert status == 404 and "no history" in body["error"]["message"]
    status, body = request(conn, "GET", "/fleetpy/v1/units/api.service")
    assert status == 404
    status, body = request(conn, "DELETE", "/fleetpy/v1/units/api.service/history")
    assert status == 405


def test_backup_carries_trails_and_restore_records_itself(
    run: Run, registry_config: RegistryConfig, units_dir: Path, tmp_path: Path
) -> None:
    assert run("start", "--no-block", write(units_dir, "web.service")).exit_code == 0
    gone = write(units_dir, "gone.service", SERVICE + "Environment=G=1\n")
    assert run("start", "--no-block", gone).exit_code == 0
    assert run("destroy", "gone.service").exit_code == 0
    backup = tmp_path / "backup.json"
    assert run("backup", str(backup)).exit_code == 0
    with transport(*registry_config.endpoints) as raw:
        start = registry_config.prefix + "/"
        # etcd lost everything but a destroyed unit's trail (kept: it does not block).
        for kv in raw.range(start, prefix_range_end(start)).kvs:
            if kv.key.decode() != f"{registry_config.prefix}/audit/gone.service":
                raw.delete(kv.key)
    restored = run("restore", str(backup))
    assert restored.exit_code == 0, restored.stderr
    data = history(run, "web.service")
    assert verbs(data) == ["start", "restore"] and data["unrecorded"] is False
    assert verbs(history(run, "gone.service")) == ["start", "destroy"]


@pytest.fixture
def sim(registry_config: RegistryConfig) -> Iterator[Cluster]:
    c = Cluster(registry_config)
    yield c
    c.close()


def test_history_after_a_rolling_apply(sim: Cluster, run: Run, tmp_path: Path) -> None:
    registry = sim.registry
    directory = deployment(tmp_path, instances=2)
    apply(registry, directory, origin="c1")
    until(lambda: len(sim.active()) == 2, what="2 active")
    deployment(tmp_path, version="2", instances=2)
    apply(registry, directory, origin="c2")
    until(lambda: len(sim.active()) == 2, what="2 active again")
    data = history(run, "app@1.service")
    entries = data["entries"]
    assert isinstance(entries, list)
    assert [(e["verb"], e.get("origin")) for e in entries] == [
        ("start", "c1"),
        ("replace", "c2"),
    ]
    assert entries[0]["hash"] != entries[1]["hash"]
    assert data["unrecorded"] is False


def test_history_after_a_rolling_apply_and_a_restart_of_a_global_unit(
    sim: Cluster, run: Run, tmp_path: Path
) -> None:
    _, directory = first_version(sim, tmp_path)
    monitor(tmp_path, "2")
    apply(sim.registry, directory, origin="c2")
    started_everywhere(sim, directory)
    assert run("restart", UNIT, "--max-unavailable", "2").exit_code == 0
    started_everywhere(sim, directory)
    data = history(run, UNIT)
    entries = data["entries"]
    assert isinstance(entries, list)
    # The new version written once (it rolls over the three machines), the roll's steps
    # counted in one entry, the restart's two batches in another.
    assert [(e["verb"], e.get("detail", "")) for e in entries] == [
        ("start", ""),
        ("replace", "rolling over 3 machines"),
        ("roll", "3 machines"),
        ("restart", "3 machines"),
    ]
    assert entries[1]["hash"] == entries[2]["hash"] == entries[3]["hash"] == monitor_hash(directory)
    assert data["unrecorded"] is False


@pytest.mark.usefixtures("signing_env")
def test_signed_changes_name_their_key_and_a_re_sign_is_its_own_entry(
    run: Run, tmp_path: Path
) -> None:
    ops = run("keys", "generate", "ops").stdout.split()[1]
    new = run("keys", "generate", "new").stdout.split()[1]
    path = write(tmp_path, "web.service")
    assert run("start", "--no-block", "--sign", "ops", path).exit_code == 0
    assert run("start", "--no-block", "--sign", "new", path).exit_code == 0  # re-signed
    assert run("stop", "--no-block", "web.service").exit_code == 0
    entries = history(run, "web.service")["entries"]
    assert isinstance(entries, list)
    assert [(e["verb"], e.get("keys")) for e in entries] == [
        ("start", [ops]),
        ("re-sign", [new]),
        ("stop", [new]),  # the unit's signature is kept: it carries the key still
    ]
    shown = run("history", "web.service").stdout.splitlines()
    assert [line.split()[6] for line in shown[1:]] == [ops, new, new]


def test_batches_with_their_trails_fit_in_etcds_transactions(registry: Registry) -> None:
    """etcd takes at most 128 operations and 128 guards a transaction: a trail's put and
    guard per unit still fit, for units with contents, global units and template instances."""
    plain = parse_unit(SERVICE)
    everywhere = parse_unit(SERVICE + "\n[X-Fleet]\nGlobal=true\n")
    template = parse_unit("[Service]\nExecStart=/bin/sleep %i\n")
    changes = [
        UnitChange(f"p{i:03d}.service", DesiredState.LOADED, plain.serialize(), plain.hash)
        for i in range(100)
    ]
    changes += [
        UnitChange(
            f"g{i:03d}.service",
            DesiredState.LAUNCHED,
            everywhere.serialize(),
            everywhere.hash,
            is_global=True,
        )
        for i in range(100)
    ]
    changes.append(UnitChange("t@.service", None, template.serialize(), template.hash))
    registry.change_units(changes)
    instances = [
        UnitChange(f"t@{i}.service", DesiredState.LAUNCHED, template="t@.service")
        for i in range(100)
    ]
    registry.change_units(instances)
    registry.destroy_units([c.name for c in changes[:150]])
    for name in ("p000.service", "g099.service", "t@.service", "t@99.service"):
        trail = registry.unit_history(name)
        assert trail is not None, name
        record = registry.get_unit(name)
        assert not trail.unrecorded(None if record is None else record.revision), name
    assert registry.unit_history("g049.service").entries[-1].verb == "destroy"  # type: ignore[union-attr]


def test_a_junk_trail_is_said_once_and_replaced_by_the_next_change(
    run: Run, registry_config: RegistryConfig, units_dir: Path
) -> None:
    assert run("start", "--no-block", write(units_dir, "web.service")).exit_code == 0
    with transport(*registry_config.endpoints) as raw:
        raw.put(f"{registry_config.prefix}/audit/web.service", b"\xff not json")
    shown = run("history", "web.service")
    assert shown.exit_code == 0 and "Traceback" not in shown.output + shown.stderr
    lines = shown.stderr.splitlines()
    assert len(lines) == 2 and "not a fleetpy record" in lines[0], shown.stderr
    assert "without an entry here" in lines[1]
    assert run("stop", "--no-block", "web.service").exit_code == 0  # the guard holds
    data = history(run, "web.service")
    assert verbs(data) == ["stop"] and data["unrecorded"] is False


def test_a_name_used_again_continues_its_trail(run: Run, units_dir: Path) -> None:
    path = write(units_dir, "web.service")
    assert run("start", "--no-block", path).exit_code == 0
    assert run("destroy", "web.service").exit_code == 0
    # A new unit's trail is taken to be absent first: here it is not, and the write is
    # retried with it read, in the same command.
    assert run("start", "--no-block", path).exit_code == 0
    assert run("destroy", "web.service").exit_code == 0
    assert run("submit", path).exit_code == 0
    data = history(run, "web.service")
    assert verbs(data) == ["start", "destroy", "start", "destroy", "submit"]
    assert data["unrecorded"] is False


def test_each_signature_of_a_unit_names_its_key(registry: Registry) -> None:
    first, second = "0123456789abcdef", "fedcba9876543210"
    signatures = " ".join(format_signature(k, bytes(64)) for k in (first, second))
    unit = parse_unit(SERVICE)
    registry.change_units(
        [UnitChange("web.service", None, unit.serialize(), unit.hash, signature=signatures)]
    )
    trail = registry.unit_history("web.service")
    assert trail is not None and trail.entries[0].keys == (first, second)


def test_a_rolled_back_apply_shows_both_replacements(
    sim: Cluster, run: Run, tmp_path: Path
) -> None:
    directory = deployment(tmp_path, instances=1)
    apply(sim.registry, directory, origin="c1")
    until(lambda: len(sim.active()) == 1, what="1 active")
    deployment(tmp_path, version="2", instances=1, command="/bin/false")
    with pytest.raises(DeploymentError):
        apply(
            sim.registry,
            directory,
            options=ApplyOptions(min_ready=0, timeout=10, rollback=True),
            origin="bad",
        )
    entries = history(run, "app@1.service")["entries"]
    assert isinstance(entries, list)
    assert [(e["verb"], e["origin"]) for e in entries][:2] == [("start", "c1"), ("replace", "bad")]
    assert (entries[2]["verb"], entries[2]["origin"]) == ("replace", "c1")  # put back
    assert entries[2]["hash"] == entries[0]["hash"]
    assert len(entries) == 3, entries
