"""plan and apply of deployments against a real etcd, an engine and simulated hosts
(in this process): exit codes, ownership, rolling order and --max-unavailable, stopping
at a failing version and --rollback, racing applies, restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fleetpy.cli import app
from fleetpy.cluster.etcd import EtcdServer
from fleetpy.deploy.deployment import RenderedUnit
from fleetpy.deploy.rollout import ApplyOptions, DeploymentPlan, apply_deployment, plan_deployment
from fleetpy.errors import DeploymentError, StateError
from fleetpy.model.changes import UnitChange
from fleetpy.model.events import StateEvent, WatchBatch
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import parse_unit

from support.cli_run import Run
from support.rollout import (
    APP,
    SIDE,
    Cluster,
    apply,
    deployment,
    failing_apply_with_rollback,
    render,
)
from support.waiting import until


@pytest.fixture
def cluster(registry_config: RegistryConfig) -> Iterator[Cluster]:
    c = Cluster(registry_config)
    yield c
    c.close()


@pytest.fixture
def cli(etcd: EtcdServer, prefix: str) -> Run:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, ["--endpoint", etcd.endpoint, "--etcd-prefix", prefix, *args])

    return invoke


# ----------------------------------------------------------------------------- plan


def test_plan_exit_codes_and_output(cluster: Cluster, cli: Run, tmp_path: Path) -> None:
    directory = deployment(tmp_path)
    result = cli("plan", str(directory))
    assert result.exit_code == 2, result.output
    assert "4 to add, 0 to change, 0 to remove" in result.stdout
    assert "+ app@1.service  app.service.j2 (instance 1)" in result.stdout
    result = cli("apply", str(directory), "--min-ready", "0")
    assert result.exit_code == 0, result.output
    assert "4 added, 0 replaced, 0 removed" in result.stdout
    result = cli("plan", str(directory))
    assert result.exit_code == 0 and "4 unchanged" in result.stdout

    deployment(tmp_path, version="2", instances=3)
    result = cli("plan", str(directory))
    assert result.exit_code == 2
    assert "~ app@1.service" in result.stdout
    assert "-Description=app 1 version 1" in result.stdout
    assert "+Description=app 1 version 2" in result.stdout
    assert "? app@4.service  no longer rendered; kept (--prune destroys it)" in result.stdout
    assert (
        "- app@4.service  no longer rendered; destroyed"
        in cli("plan", "--prune", str(directory)).stdout
    )
    data = json.loads(cli("plan", str(directory), "-o", "json").stdout)[0]
    assert data["deployment"] == "demo" and data["last_applied"]
    kinds = {c["unit"]: c["kind"] for c in data["changes"]}
    assert kinds == {
        "app@1.service": "change",
        "app@2.service": "change",
        "app@3.service": "change",
        "app@4.service": "orphan",
    }


def test_plan_of_a_broken_deployment_is_one_line_and_exit_1(cli: Run, tmp_path: Path) -> None:
    directory = deployment(tmp_path)
    (directory / "app.service.j2").write_text(APP.replace("{{ command }}", "{{ nope }}"))
    result = cli("plan", str(directory))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"fleetpy: error: {directory}/app.service.j2:5: 'nope' is undefined"
    ]
    (directory / "app.service.j2").write_text(APP.replace("[X-Fleet]", "[X-Flet]"))
    result = cli("plan", str(directory))
    assert result.exit_code == 1
    assert (
        "app.service.j2 (instance 1) renders an invalid app@1.service: unknown section "
        "[X-Flet]" in result.stderr
    )


# ----------------------------------------------------------------------------- apply


def test_apply_new_changed_and_pruned_units(cluster: Cluster, tmp_path: Path) -> None:
    registry = cluster.registry
    directory = deployment(tmp_path)
    apply(registry, directory)
    until(lambda: len(cluster.active()) == 4, what="4 active")
    records = registry.list_units()
    assert {r.owner for r in records.values()} == {"demo"}
    assert {r.origin for r in records.values()} == {"c1"}

    deployment(tmp_path, version="2", instances=3)
    _, result = apply(registry, directory, prune=True, origin="c2")
    assert result.replaced == ("app@1.service", "app@2.service", "app@3.service")
    assert result.removed == ("app@4.service",)
    _, units = render(directory)
    until(lambda: cluster.active() == {u.name: u.hash for u in units}, what="new versions")
    record = registry.get_deployment("demo")
    assert record is not None and record.commit == "c2" and record.applying == ""


def test_prune_never_touches_units_the_deployment_did_not_create(
    cluster: Cluster, tmp_path: Path
) -> None:
    registry = cluster.registry
    unit = parse_unit("[Service]\nExecStart=/bin/sleep 1000\n")
    registry.change_units(
        [UnitChange("manual.service", DesiredState.LAUNCHED, unit.serialize(), unit.hash)]
    )
    other = deployment(tmp_path, name="other", instances=1)
    (other / "fleetpy.yaml").write_text(
        "name: other\nvalues: {version: '1', command: /bin/true}\nunits:\n"
        "  - {name: other.service, template: app.service.j2}\n"
    )
    apply(registry, other, prune=True)
    apply(registry, deployment(tmp_path, instances=2), prune=True)
    assert set(registry.list_units()) == {
        "manual.service",
        "other.service",
        "app@1.service",
        "app@2.service",
    }
    apply(registry, deployment(tmp_path, instances=1), prune=True)  # prunes only its own
    assert set(registry.list_units()) == {"manual.service", "other.service", "app@1.service"}
    # the same names under another deployment: refused, nothing written
    before = registry.list_units()
    with pytest.raises(DeploymentError, match="already exist, created by deployment demo"):
        apply(registry, deployment(tmp_path, name="third", instances=2), prune=True)
    assert registry.list_units() == before
    # a unit someone submitted by hand is not taken over either
    (tmp_path / "deploy-demo" / "fleetpy.yaml").write_text(
        "name: demo\nvalues: {version: '1', command: /bin/true}\nunits:\n"
        "  - {name: manual.service, template: app.service.j2}\n"
    )
    with pytest.raises(DeploymentError, match="created by no deployment: manual.service"):
        apply(registry, tmp_path / "deploy-demo")


def test_rolling_update_keeps_at_most_max_unavailable_down(
    cluster: Cluster, tmp_path: Path
) -> None:
    registry = cluster.registry
    directory = deployment(tmp_path, instances=6)
    apply(registry, directory)
    until(lambda: len(cluster.active()) == 6, what="6 active")
    down: set[str] = set()
    worst = [0]
    started: set[tuple[str, str]] = set()  # (unit, hash) seen active
    lock = threading.Lock()

    def on_states(batch: WatchBatch[StateEvent]) -> None:
        with lock:
            for event in batch.events:
                if event.state is not None and event.state.active == "active":
                    down.discard(event.unit)
                    started.add((event.unit, event.state.hash))
                else:
                    down.add(event.unit)
            worst[0] = max(worst[0], len(down))

    cancel = registry.watch_states(on_states, registry.read_view().revision + 1)
    try:
        deployment(tmp_path, version="2", instances=6)
        _, result = apply(
            registry, directory, options=ApplyOptions(max_unavailable=2, min_ready=0.3, timeout=20)
        )
        # This watch is its own, not the apply's: it can lag behind it (under load). Once
        # it has seen the last new version active, it has seen every stop before.
        new = {(u.name, u.hash) for u in render(directory)[1]}

        def seen_new_active() -> bool:
            with lock:
                return new <= started

        until(seen_new_active, what="the watch to see every new version active")
    finally:
        cancel()
    assert len(result.replaced) == 6
    assert 1 <= worst[0] <= 2  # replacements were seen down, never more than two at once


def test_sidekicks_move_with_their_primary(cluster: Cluster, tmp_path: Path) -> None:
    registry = cluster.registry
    directory = deployment(tmp_path, instances=2, sidekick=True)
    apply(registry, directory)
    until(lambda: len(cluster.active()) == 4, what="4 active")
    deployment(tmp_path, version="2", instances=2, sidekick=True)
    (directory / "side.service.j2").write_text(
        SIDE.replace("[X-Fleet]", "Environment=V=2\n\n[X-Fleet]")
    )
    events = []
    _, units = render(directory)
    name, _ = render(directory)
    plan = plan_deployment(registry, name, units, "c2")
    apply_deployment(
        registry,
        plan,
        units,
        ApplyOptions(min_ready=0, timeout=20),
        lambda e: events.append(e) if e.step == "replace" else None,
    )
    assert [e.units for e in events] == [
        ("app@1.service", "side@1.service"),
        ("app@2.service", "side@2.service"),
    ]


def test_a_failing_version_stops_the_rollout_and_rolls_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    registry = cluster.registry
    directory = deployment(tmp_path, instances=3)
    apply(registry, directory)
    until(lambda: len(cluster.active()) == 3, what="3 active")
    _, old_units = render(directory)
    deployment(tmp_path, version="2", instances=3, command="/bin/false")
    message = failing_apply_with_rollback(registry, directory)
    assert message.startswith("stopped at app@1.service: app@1.service failed on m")
    assert "rolled back app@1.service to the previous version" in message
    assert "the rest is untouched" in message
    old = {u.name: u.hash for u in old_units}
    until(lambda: cluster.active() == old, what="old versions running again")
    record = registry.get_deployment("demo")
    assert record is not None and record.applying == "" and "stopped at" in record.message


def test_racing_applies_one_wins_the_other_stops(cluster: Cluster, tmp_path: Path) -> None:
    registry = cluster.registry
    directory = deployment(tmp_path, instances=3)
    apply(registry, directory)
    until(lambda: len(cluster.active()) == 3, what="3 active")
    deployment(tmp_path, version="A", instances=3)
    name, units_a = render(directory)
    plan_a = plan_deployment(registry, name, units_a, "A")
    deployment(tmp_path, version="B", instances=3)
    _, units_b = render(directory)
    plan_b = plan_deployment(registry, name, units_b, "B")
    outcomes: dict[str, object] = {}

    def run(label: str, plan: DeploymentPlan, units: tuple[RenderedUnit, ...]) -> None:
        try:
            outcomes[label] = apply_deployment(
                registry,
                plan,
                units,
                ApplyOptions(min_ready=0.5, timeout=20),
            )
        except DeploymentError as exc:
            outcomes[label] = exc

    threads = [
        threading.Thread(target=run, args=("A", plan_a, units_a)),
        threading.Thread(target=run, args=("B", plan_b, units_b)),
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.2)  # the point: B plans and applies while A's apply is under way
    for thread in threads:
        thread.join(60)
    errors = [o for o in outcomes.values() if isinstance(o, DeploymentError)]
    assert len(errors) == 1, outcomes
    assert "another apply of deployment demo" in str(
        errors[0]
    ) or "changed since it was planned" in str(errors[0])
    winner = units_a if not isinstance(outcomes["A"], DeploymentError) else units_b
    until(lambda: cluster.active() == {u.name: u.hash for u in winner}, what="winner's versions")


def test_restart_goes_one_machine_at_a_time(cluster: Cluster, cli: Run, tmp_path: Path) -> None:
    apply(cluster.registry, deployment(tmp_path, instances=4))
    until(lambda: len(cluster.active()) == 4, what="4 active")
    result = cli("restart", "app@*")
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == [f"Restarted app@{i}.service" for i in range(1, 5)]
    steps = [line for line in result.stderr.splitlines() if line.startswith("restart")]
    schedule = cluster.registry.read_view().schedule
    assert len(steps) == len({schedule[f"app@{i}.service"][0] for i in range(1, 5)})
    until(lambda: len(cluster.active()) == 4, what="4 active again")


# ----------------------------------------------------------------------------- --replace


def reported(cluster: Cluster, name: str) -> list[tuple[str, str, str]]:
    """(machine, content hash, ACTIVE) of every machine reporting `name`."""
    states = cluster.registry.list_states().get(name, {})
    return [(m, s.hash, s.active) for m, s in sorted(states.items())]


def test_start_replace_restarts_units_on_their_new_contents_where_they_run(
    cluster: Cluster,
    cli: Run,
    tmp_path: Path,
) -> None:
    """`start --replace`: a plain unit, a container unit (stored as its expansion) and an
    instance named without its file (its template's new contents), each restarted on its
    machine; another instance of the template is left alone."""
    registry = cluster.registry
    files = {
        "a.service": "[Service]\nExecStart=/bin/sleep 1000\n",
        "box.service": "[Container]\nImage=local/busybox:latest\nExec=sleep 1000\n",
        "w@.service": "[Service]\nExecStart=/bin/sleep 1000\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / n) for n in ("a.service", "box.service")]
    assert cli("submit", str(tmp_path / "w@.service")).exit_code == 0
    first = cli("start", "--block-attempts", "20", *paths, "w@1.service", "w@2.service")
    assert first.exit_code == 0, first.output
    names = ["a.service", "box.service", "w@1.service"]
    schedule = registry.read_view().schedule
    where = {n: schedule[n][0] for n in names}
    old = {n: r.hash for n, r in registry.list_units().items()}
    for name in files:
        (tmp_path / name).write_text(files[name].replace("1000", "2000"))

    refused = cli("start", *paths)
    assert refused.exit_code == 1 and "add --replace to start it with them" in refused.stderr
    assert {n: r.hash for n, r in registry.list_units().items()} == old
    assert cli("submit", "--replace", str(tmp_path / "w@.service")).exit_code == 0
    result = cli("start", "--replace", "--block-attempts", "20", *paths, "w@1.service")
    assert result.exit_code == 0, result.output
    for name in names:
        record = registry.get_unit(name)
        assert record is not None and record.hash != old[name]
        assert f"Unit {name} launched on {where[name][:8]}" in result.stdout
        assert reported(cluster, name) == [(where[name], record.hash, "active")]
    assert registry.get_unit("w@2.service").hash == old["w@2.service"]  # type: ignore[union-attr]
    expanded = cli("cat", "--expanded", "box.service").stdout
    assert "[X-Container]" in expanded and "sleep 2000" in expanded
    assert "sleep 2000" in cli("cat", "box.service").stdout


def test_load_replace_reloads_in_place_and_refuses_a_launched_unit(
    cluster: Cluster,
    cli: Run,
    tmp_path: Path,
) -> None:
    registry = cluster.registry
    loaded, launched = tmp_path / "l.service", tmp_path / "s.service"
    for path in (loaded, launched):
        path.write_text("[Service]\nExecStart=/bin/sleep 1000\n")
    assert cli("load", "--block-attempts", "20", str(loaded)).exit_code == 0
    assert cli("start", "--block-attempts", "20", str(launched)).exit_code == 0
    where = registry.read_view().schedule["l.service"][0]
    for path in (loaded, launched):
        path.write_text("[Service]\nExecStart=/bin/sleep 2000\n")
    before = {n: (r.hash, r.desired) for n, r in registry.list_units().items()}
    refused = cli("load", "--replace", str(loaded), str(launched))
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        "fleetpy: error: s.service is launched: `load --replace` replaces only inactive or "
        "loaded units; use `start --replace`"
    )
    assert {n: (r.hash, r.desired) for n, r in registry.list_units().items()} == before
    result = cli("load", "--replace", "--block-attempts", "20", str(loaded))
    assert result.exit_code == 0, result.output
    record = registry.get_unit("l.service")
    assert record is not None and record.hash != before["l.service"][0]
    assert f"Unit l.service loaded on {where[:8]}" in result.stdout
    assert reported(cluster, "l.service") == [(where, record.hash, "inactive")]


def test_a_global_change_is_refused_at_plan_and_nothing_is_written(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Replaced in place, the record kept its old Global= flag: the engine placed the unit
    # on one machine while its text said every machine (and the reverse).
    registry = cluster.registry
    directory = deployment(tmp_path)
    apply(registry, directory)
    until(lambda: len(cluster.active()) == 4, what="4 active")
    before = registry.list_units()
    (directory / "app.service.j2").write_text(APP.replace("MaxPerMachine=2", "Global=true"))
    with pytest.raises(DeploymentError, match=r"app@1\.service: the new contents make it global"):
        apply(registry, directory, origin="c2")
    assert registry.list_units() == before


def test_the_registry_refuses_a_global_flip_in_place(registry: Registry) -> None:
    text = "[Service]\nExecStart=/bin/sleep 1000\n"
    unit = parse_unit(text)
    registry.change_units([UnitChange("g.service", None, text, unit.hash, False)])
    flipped = parse_unit(text + "\n[X-Fleet]\nGlobal=true\n")
    with pytest.raises(StateError, match=r"g\.service: the new contents make it global"):
        registry.change_units(
            [UnitChange("g.service", None, flipped.serialize(), flipped.hash, True, replace=True)]
        )
    record = registry.get_unit("g.service")
    assert record is not None and (record.hash, record.is_global) == (unit.hash, False)
