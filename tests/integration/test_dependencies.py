"""Dependencies across machines ([X-Fleet] Requires=/BindsTo=): an engine and simulated
agents in this process against a real etcd; and submit's checks of the graph."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fleetpy.api import fleetv1
from fleetpy.client import drain
from fleetpy.model.changes import UnitChange
from fleetpy.states import DesiredState

from support.cli_helpers import one_error_line
from support.cli_run import Run
from support.sim_cluster import Cluster, unit, watch
from support.waiting import until

WEB = "web.service"
DB = "db.service"


def reason(cluster: Cluster, name: str) -> str | None:
    return cluster.registry.read_view(with_states=False).reasons.get(name)


def web_in_api(cluster: Cluster) -> dict[str, Any]:
    """web.service as fleet's API gives it."""
    return fleetv1.unit_json(cluster.registry.read_view(), WEB, [])


def started_after_db(cluster: Cluster) -> tuple[threading.Event, list[str]]:
    """A background check: web is never active on its host before db is active on its own."""
    seen_db: list[bool] = []

    def check() -> None:
        hosted = dict(cluster.hosted())
        if hosted.get(DB) == "m2":
            seen_db.append(True)
        assert WEB not in hosted or seen_db, "web.service active before db.service was"

    return watch(check)


def test_web_waits_for_db_on_another_machine_and_follows_it_with_binds_to(
    cluster: Cluster,
) -> None:
    cluster.agent("m1", role="web")
    cluster.agent("m2", role="db", start_seconds=1.0)
    cluster.engine()
    stop, seen = started_after_db(cluster)
    cluster.registry.change_units(
        [unit(WEB, "MachineMetadata=role=web\nRequires=db.service\nBindsTo=db.service")]
    )
    until(lambda: cluster.placement().get(WEB) == "m1", what="web placed on m1")
    until(
        lambda: (
            reason(cluster, WEB)
            == "waiting for db.service to be active: no such unit is submitted (destroyed, or "
            "not submitted yet)"
        ),
        what="web waiting for db, not submitted",
    )
    assert cluster.running() == {}
    cluster.registry.change_units([unit(DB, "MachineMetadata=role=db")])
    until(lambda: cluster.running() == {DB: "m2", WEB: "m1"}, what="db, then web, active")
    until(lambda: reason(cluster, WEB) is None, what="web's reason cleared")
    stop.set()
    assert seen == []
    # db stopped: web (BindsTo=) is stopped where it is, saying why; started again after.
    cluster.registry.change_units([UnitChange(DB, desired=DesiredState.LOADED)])
    until(lambda: cluster.running() == {}, what="web stopped after db")
    assert cluster.placement()[WEB] == "m1"
    waiting = "waiting for db.service to be active: it is not started (desired state loaded)"
    assert reason(cluster, WEB) == waiting
    until(lambda: web_in_api(cluster)["currentState"] == "loaded", what="web loaded in the API")
    assert web_in_api(cluster)["desiredState"] == "launched"
    assert web_in_api(cluster)["fleetpy"]["reason"] == waiting
    cluster.registry.change_units([UnitChange(DB, desired=DesiredState.LAUNCHED)])
    until(lambda: cluster.running() == {DB: "m2", WEB: "m1"}, what="db and web active again")
    # db destroyed: web stopped, saying so.
    cluster.registry.destroy_units([DB])
    until(lambda: cluster.running() == {}, what="web stopped after db destroyed")
    assert reason(cluster, WEB) == (
        "waiting for db.service to be active: no such unit is submitted (destroyed, or "
        "not submitted yet)"
    )


def test_a_dependency_submitted_but_invalid_is_named_so(cluster: Cluster) -> None:
    """db.service written (by an older client, or straight into etcd) with [X-Fleet]
    options the engine cannot use: web waits, and its reason says db is invalid and why,
    not that no such unit is submitted."""
    cluster.agent("m1")
    cluster.engine()
    cluster.registry.change_units(
        [unit(DB, "MaxPerMachine=lots"), unit(WEB, "Requires=db.service")]
    )
    until(
        lambda: (reason(cluster, WEB) or "").startswith(
            "waiting for db.service to be active: it is submitted but invalid ("
        ),
        what="web waiting for db, invalid",
    )
    assert "MaxPerMachine" in (reason(cluster, WEB) or ""), reason(cluster, WEB)
    assert cluster.running() == {}


def test_requires_alone_leaves_a_started_unit_running_and_db_machine_lost(
    cluster: Cluster,
) -> None:
    cluster.agent("m1", role="web")
    db_agent = cluster.agent("m2", role="db")
    cluster.engine()
    cluster.registry.change_units(
        [
            unit(WEB, "MachineMetadata=role=web\nRequires=db.service"),
            unit("bound.service", "MachineMetadata=role=web\nBindsTo=db.service"),
            unit(DB, "MachineMetadata=role=db"),
        ]
    )
    until(lambda: len(cluster.running()) == 3, what="all three active")
    db_agent.stop()  # db's machine lost: it can go nowhere else
    until(lambda: cluster.running() == {WEB: "m1"}, what="bound stopped, web running")
    until(
        lambda: (reason(cluster, "bound.service") or "").startswith(
            "waiting for db.service to be active: "
        ),
        what="bound's reason",
    )
    assert cluster.placement()["bound.service"] == "m1"
    assert reason(cluster, WEB) is None


def test_a_failover_keeps_a_waiting_unit_waiting(cluster: Cluster) -> None:
    cluster.agent("m1")
    first = cluster.engine()
    cluster.registry.change_units(
        [unit(WEB, "Requires=db.service"), unit(DB, desired=DesiredState.LOADED)]
    )
    until(
        lambda: (
            reason(cluster, WEB)
            == "waiting for db.service to be active: it is not started (desired state loaded)"
        ),
        what="web waiting",
    )
    cluster.engine()
    first.stop()
    until(lambda: any(e.is_leader.is_set() for e in cluster.engines[1:]), what="a new leader")
    assert cluster.running() == {}
    cluster.registry.change_units([UnitChange(DB, desired=DesiredState.LAUNCHED)])
    until(lambda: cluster.running() == {DB: "m1", WEB: "m1"}, what="db then web active")


# -- submit's checks


def write(directory: Path, name: str, fleet: str) -> str:
    path = directory / name
    path.write_text(f"[Service]\nExecStart=/bin/true\n\n[X-Fleet]\n{fleet}\n")
    return str(path)


def test_submit_warns_of_a_dependency_not_submitted_and_refuses_a_cycle(
    run: Run, tmp_path: Path
) -> None:
    web = write(tmp_path, WEB, "Requires=db.service")
    result = run("submit", web)
    assert result.exit_code == 0, result.stderr
    assert (
        "fleetpy: warning: [X-Fleet] Requires=db.service in web.service: no unit db.service "
        "is submitted; web.service will wait until it is submitted and active"
    ) in result.stderr
    db = write(tmp_path, DB, "BindsTo=web.service")
    result = run("submit", db)
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "fleetpy: error: [X-Fleet] Requires= cycle: db.service -> web.service -> db.service "
        "(each unit would wait for the next to be active; BindsTo= counts as Requires=)"
    )
    assert run("list-unit-files", "--no-legend").output.count(".service") == 1


def test_apply_refuses_a_dependency_cycle_and_writes_nothing(run: Run, tmp_path: Path) -> None:
    directory = tmp_path / "cycle"
    directory.mkdir()
    write(directory, "a.service", "Requires=b.service")
    write(directory, "b.service", "BindsTo=a.service")
    (directory / "fleetpy.yaml").write_text(
        "name: cycle\nunits:\n  - name: a.service\n    template: a.service\n"
        "  - name: b.service\n    template: b.service\n"
    )
    for verb in ("plan", "apply"):
        result = run(verb, str(directory))
        assert result.exit_code == 1, result.output
        assert one_error_line(result) == (
            "fleetpy: error: [X-Fleet] Requires= cycle: a.service -> b.service -> a.service "
            "(each unit would wait for the next to be active; BindsTo= counts as Requires=)"
        )
    assert run("list-unit-files", "--no-legend").output.strip() == ""


def test_a_drain_moves_a_waiting_unit_and_finishes(cluster: Cluster) -> None:
    """A unit held loaded (waiting for its dependency) arrives loaded where it was moved:
    the drain counts it as arrived, not as on its way for ever."""
    cluster.agent("m1")
    cluster.engine()
    cluster.registry.change_units([unit(WEB, "Requires=db.service")])
    until(lambda: cluster.placement().get(WEB) == "m1", what="web placed (loaded) on m1")
    cluster.agent("m2")
    drain.start_drain(cluster.registry, "m1", 1)
    progress = drain.wait_drain(cluster.registry, "m1", 30, lambda p: None)
    assert progress.done and progress.stuck == {}
    assert cluster.placement()[WEB] == "m2"
    until(
        lambda: (reason(cluster, WEB) or "").startswith("waiting for db.service to be active"),
        what="web's reason: waiting again, where it went",
    )


def test_a_blocking_start_that_times_out_says_what_its_unit_waits_for(
    cluster: Cluster, run: Run, tmp_path: Path
) -> None:
    """start (and apply) time out naming the dependency a placed unit waits for, not only
    its systemd state (a trial of units/stack: 'reports loaded/inactive/dead')."""
    cluster.agent("m1")
    engine = cluster.engine()
    # Leading, its first pass done, before the start's 3 s begin: they are for the pass
    # that places web and says what it waits for (the election and first read are slower
    # under load).
    until(lambda: engine.stats.passes > 0, what="the engine's first pass")
    web = tmp_path / WEB
    web.write_text("[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nRequires=db.service\n")
    result = run("start", "--block-attempts", "3", str(web))
    assert result.exit_code == 1
    # (the engine and agent of this process log on the same stderr)
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("fleetpy: error:")]
    assert "placed on m1" in line and "waiting for db.service to be active" in line, line
