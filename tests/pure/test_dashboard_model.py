"""The dashboard's document as a pure function of a view (table-tested; no browser, no
etcd)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from fleetpy.api.dashboard_model import Dashboard, Phase, apply_delta, document, unit_phase
from fleetpy.model.cordons import CordonMode, CordonRecord
from fleetpy.model.records import (
    ClusterView,
    DeploymentRecord,
    MachineRecord,
    ScheduleEntry,
    UnitRecord,
    UnitState,
)
from fleetpy.resources import Resources
from fleetpy.states import DesiredState

H1, H2 = "1" * 64, "2" * 64
LAUNCHED, LOADED, INACTIVE = DesiredState.LAUNCHED, DesiredState.LOADED, DesiredState.INACTIVE


def record(name: str, desired: DesiredState = LAUNCHED, **kw: Any) -> UnitRecord:
    return UnitRecord(name=name, hash=kw.pop("hash", H1), desired=desired, **kw)


def state(name: str, machine: str, active: str = "active", **kw: Any) -> UnitState:
    load = kw.pop("load", "loaded")
    sub = kw.pop(
        "sub", {"active": "running", "inactive": "dead", "failed": "failed"}.get(active, "")
    )
    return UnitState(name, machine, load, active, sub, kw.pop("hash", H1), **kw)


def view(
    units: list[UnitRecord],
    machines: tuple[str, ...] = ("m1", "m2"),
    placed: dict[str, str] | None = None,
    states: list[UnitState] | None = None,
    reasons: dict[str, str] | None = None,
) -> ClusterView:
    by_unit: dict[str, dict[str, UnitState]] = {}
    for s in states or []:
        by_unit.setdefault(s.name, {})[s.machine] = s
    return ClusterView(
        revision=7,
        units={u.name: u for u in units},
        machines={
            m: MachineRecord(m, f"10.0.0.{i + 1}", {"n": str(i)}) for i, m in enumerate(machines)
        },
        schedule={u: (m, ScheduleEntry(u, H1, LAUNCHED, "")) for u, m in (placed or {}).items()},
        reasons=reasons or {},
        states=by_unit,
    )


PHASES = [
    # (what, unit, placed, states, reasons, machines, phase, detail contains)
    (
        "running where placed",
        record("a"),
        {"a": "m1"},
        [state("a", "m1")],
        {},
        ("m1",),
        Phase.ACTIVE,
        "",
    ),
    (
        "placed, nothing reported",
        record("a"),
        {"a": "m1"},
        [],
        {},
        ("m1",),
        Phase.STARTING,
        "no state reported",
    ),
    (
        "placed, still activating",
        record("a"),
        {"a": "m1"},
        [state("a", "m1", "activating", sub="start")],
        {},
        ("m1",),
        Phase.STARTING,
        "reports loaded/activating/start",
    ),
    (
        "old contents still running",
        record("a", hash=H2),
        {"a": "m1"},
        [state("a", "m1")],
        {},
        ("m1",),
        Phase.STARTING,
        "",
    ),
    (
        "failed there",
        record("a"),
        {"a": "m1"},
        [state("a", "m1", "failed", message="exit 1")],
        {},
        ("m1",),
        Phase.FAILED,
        "exit 1",
    ),
    (
        "refused (signature)",
        record("a"),
        {"a": "m1"},
        [state("a", "m1", "rejected", load="not-loaded", sub="unsigned")],
        {},
        ("m1",),
        Phase.FAILED,
        "rejected",
    ),
    ("machine gone", record("a"), {"a": "m9"}, [], {}, ("m1",), Phase.MOVING, "machine m9 is gone"),
    (
        "moved, old machine still runs it",
        record("a"),
        {"a": "m2"},
        [state("a", "m1")],
        {},
        ("m1", "m2"),
        Phase.MOVING,
        "moving from m1 to m2",
    ),
    (
        "taken off, nowhere to go",
        record("a"),
        {},
        [state("a", "m1")],
        {"a": "no machine has role=db"},
        ("m1",),
        Phase.MOVING,
        "not placed: no machine has role=db",
    ),
    (
        "unplaced with reason",
        record("a"),
        {},
        [],
        {"a": "no machine has role=db"},
        ("m1",),
        Phase.UNPLACED,
        "no machine has role=db",
    ),
    ("unplaced, engine silent", record("a"), {}, [], {}, ("m1",), Phase.UNPLACED, "not placed yet"),
    (
        "loaded as asked",
        record("a", LOADED),
        {"a": "m1"},
        [state("a", "m1", "inactive")],
        {},
        ("m1",),
        Phase.LOADED,
        "",
    ),
    ("submitted only", record("a", INACTIVE), {}, [], {}, ("m1",), Phase.INACTIVE, ""),
    (
        "unloaded, still running",
        record("a", INACTIVE),
        {},
        [state("a", "m1")],
        {},
        ("m1",),
        Phase.STOPPING,
        "still running on m1",
    ),
    (
        "global, active everywhere",
        record("g", is_global=True),
        {},
        [state("g", "m1"), state("g", "m2")],
        {},
        ("m1", "m2"),
        Phase.ACTIVE,
        "",
    ),
    (
        "running, its container unhealthy",
        record("a"),
        {"a": "m1"},
        [state("a", "m1", health="unhealthy")],
        {},
        ("m1",),
        Phase.ACTIVE,
        "container unhealthy on m1",
    ),
    (
        "global, unhealthy on one",
        record("g", is_global=True),
        {},
        [state("g", "m1", health="healthy"), state("g", "m2", health="unhealthy")],
        {},
        ("m1", "m2"),
        Phase.ACTIVE,
        "container unhealthy on m2",
    ),
    (
        "global, one failed",
        record("g", is_global=True),
        {},
        [state("g", "m1"), state("g", "m2", "failed")],
        {},
        ("m1", "m2"),
        Phase.FAILED,
        "failed on m2",
    ),
    (
        "global, nobody yet",
        record("g", is_global=True),
        {},
        [],
        {},
        ("m1",),
        Phase.STARTING,
        "no machine reports it",
    ),
]


@pytest.mark.parametrize(
    ("unit", "placed", "states", "reasons", "machines", "phase", "detail"),
    [case[1:] for case in PHASES],
    ids=[case[0] for case in PHASES],
)
def test_unit_phase(
    unit: UnitRecord,
    placed: dict[str, str],
    states: list[UnitState],
    reasons: dict[str, str],
    machines: tuple[str, ...],
    phase: Phase,
    detail: str,
) -> None:
    got_phase, got_detail = unit_phase(view([unit], machines, placed, states, reasons), unit)
    assert got_phase is phase
    assert detail in got_detail
    assert (got_detail == "") == (
        detail == "" and phase in (Phase.ACTIVE, Phase.LOADED, Phase.INACTIVE)
    )


def test_document_lists_machines_units_unplaced_and_leader() -> None:
    v = view(
        [record("a"), record("b"), record("c", origin="c1", owner="web")],
        placed={"a": "m1", "c": "m2"},
        states=[state("a", "m1"), state("c", "m2", "activating", sub="start")],
        reasons={"b": "no machine has role=db"},
    )
    m2 = replace(
        v.machines["m2"], capacity=Resources(8 * 1024**3, 4000), used=Resources(2**30, 250)
    )
    v = replace(
        v,
        cordons={"m2": CordonRecord("m2", CordonMode.DRAINING, 2)},
        machines={**v.machines, "m2": m2},
    )
    doc = document(v, "engine-1", {})
    assert doc["revision"] == 7 and doc["leader"] == "engine-1"
    assert doc["summary"] == {
        "machines": 2,
        "units": 3,
        "phases": {"active": 1, "starting": 1, "unplaced": 1},
    }
    assert doc["machines"] == [
        {"id": "m1", "ip": "10.0.0.1", "hostname": "", "metadata": {"n": "0"}, "units": ["a"]}
        | {"cordon": None, "resources": None},
        {"id": "m2", "ip": "10.0.0.2", "hostname": "", "metadata": {"n": "1"}, "units": ["c"]}
        | {"cordon": "draining (max 2)", "resources": "4 CPUs, 8 GiB (used: 0.25 CPUs, 1 GiB)"},
    ]
    units = {u["name"]: u for u in doc["units"]}
    assert units["a"] | {"hash": ""} == {
        "name": "a",
        "desired": "launched",
        "phase": "active",
        "detail": "",
        "machine": "m1",
        "machines": ["m1"],
        "load": "loaded",
        "active": "active",
        "sub": "running",
        "health": "",
        "message": "",
        "hash": "",
        "global": False,
        "owner": None,
        "commit": None,
        "reason": None,
    }
    assert units["b"]["phase"] == "unplaced" and units["b"]["reason"] == "no machine has role=db"
    assert units["b"]["machine"] is None and units["b"]["load"] == ""
    assert (units["c"]["owner"], units["c"]["commit"]) == ("web", "c1")
    assert document(v, None, {})["leader"] is None


DEPLOYMENTS = [
    # (what, units (origin, running the current hash?), record, expected updated/ready/target)
    ("done", [("c2", True), ("c2", True)], DeploymentRecord("web", commit="c2"), (2, 2, "c2")),
    (
        "rolling: one of three updated, not yet up",
        [("c2", False), ("c1", True), ("c1", True)],
        DeploymentRecord("web", commit="c1", applying="c2"),
        (1, 0, "c2"),
    ),
    (
        "rolling: two updated, one up",
        [("c2", True), ("c2", False), ("c1", True)],
        DeploymentRecord("web", commit="c1", applying="c2"),
        (2, 1, "c2"),
    ),
    (
        "no record: the usual commit",
        [("c1", True), ("c1", False), ("c0", True)],
        None,
        (2, 1, "c1"),
    ),
]


@pytest.mark.parametrize(
    ("units", "deployment", "expected"),
    [case[1:] for case in DEPLOYMENTS],
    ids=[case[0] for case in DEPLOYMENTS],
)
def test_deployment_progress(
    units: list[tuple[str, bool]],
    deployment: DeploymentRecord | None,
    expected: tuple[int, int, str],
) -> None:
    records = [
        record(f"web@{i}", origin=origin, owner="web") for i, (origin, _) in enumerate(units)
    ]
    placed = {r.name: "m1" for r in records}
    states = [state(r.name, "m1") for r, (_, up) in zip(records, units) if up]
    doc = document(
        view(records, placed=placed, states=states), None, {"web": deployment} if deployment else {}
    )
    (entry,) = doc["deployments"]
    assert (entry["updated"], entry["ready"], entry["target"]) == expected
    assert entry["units"] == len(units) and entry["name"] == "web"
    if deployment is not None:
        assert (entry["commit"], entry["applying"]) == (deployment.commit, deployment.applying)


def test_a_deployment_without_units_is_listed() -> None:
    doc = document(
        view([]), None, {"gone": DeploymentRecord("gone", commit="c9", message="pruned")}
    )
    assert doc["deployments"] == [
        {
            "name": "gone",
            "commit": "c9",
            "applying": "",
            "message": "pruned",
            "target": "c9",
            "units": 0,
            "updated": 0,
            "ready": 0,
        }
    ]


def test_hostile_names_stay_data() -> None:
    """Whatever a unit or machine is called, it is a JSON string (the page shows text)."""
    evil = record('x<img src=x onerror=alert(1)>"\n.service')
    doc = document(view([evil], placed={evil.name: "m1"}), None, {})
    assert doc["units"][0]["name"] == evil.name


# ----------------------------------------------------------------------------- deltas


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "seq"}


def test_deltas_keep_the_document_that_a_whole_rebuild_gives() -> None:
    """Dashboard.update on what each change touched, and apply_delta on the client's side,
    give document() of the same view, step after step (a unit placed, reported, failed,
    moved, destroyed; a machine gone and back; a deployment's record)."""
    deploy = {"shop": DeploymentRecord("shop", commit="c1")}
    a, b = record("a.service", owner="shop", origin="c1"), record("b.service")
    steps: list[tuple[ClusterView, set[str], set[str], dict[str, DeploymentRecord]]] = [
        (view([a, b]), {"a.service", "b.service"}, set(), deploy),
        (view([a, b], placed={"a.service": "m1"}), {"a.service"}, set(), deploy),
        (
            view([a, b], placed={"a.service": "m1"}, states=[state("a.service", "m1")]),
            {"a.service"},
            set(),
            deploy,
        ),
        (
            view([a, b], ("m2",), placed={"a.service": "m1"}, states=[state("a.service", "m1")]),
            set(),
            {"m1", "m2"},  # m1 gone; m2's record is another (the helper numbers them)
            deploy,
        ),
        (
            view([a, b], placed={"a.service": "m2"}, states=[state("a.service", "m1", "failed")]),
            {"a.service"},
            {"m1", "m2"},
            {"shop": DeploymentRecord("shop", commit="c1", applying="c2")},
        ),
        (view([b], states=[state("a.service", "m1")]), {"a.service"}, set(), {}),
        (view([b]), {"a.service"}, set(), {}),
    ]
    board = Dashboard()
    first, units, machines, deployments = steps[0]
    board.rebuild(first, "e1", deployments)
    client = json.loads(board.snapshot())
    assert _shown(client) == document(first, "e1", deployments)
    for current, units, machines, deployments in steps[1:]:
        current = replace(current, revision=client["revision"] + 1)
        delta = board.update(current, units, machines, "e1", deployments)
        assert delta is not None
        client = apply_delta(client, json.loads(delta))
        expected = document(current, "e1", deployments)
        assert _shown(client) == expected
        assert _shown(json.loads(board.snapshot())) == expected
    assert board.update(current, (), (), "e1", deployments) is None  # nothing changed


def test_a_delta_carries_what_changed_not_the_cluster() -> None:
    """10,000 units; one reported active: the delta holds that unit and its machine, and
    is the size it would be with 10 units."""
    sizes = []
    for count in (10, 10_000):
        units = [record(f"u{i:05d}.service") for i in range(count)]
        placed = {u.name: "m1" if i % 2 else "m2" for i, u in enumerate(units)}
        before = view(units, placed=placed)
        board = Dashboard()
        board.rebuild(before, None, {})
        after = replace(
            before,
            revision=8,
            states={"u00001.service": {"m1": state("u00001.service", "m1")}},
        )
        delta = board.update(after, {"u00001.service"}, (), None, {})
        assert delta is not None
        data = json.loads(delta)
        assert [u["name"] for u in data["units"]] == ["u00001.service"]
        assert data["units"][0]["phase"] == "active"
        assert data["machines"] == [] and data["gone"] == []  # m1's units did not change
        assert "deployments" not in data
        sizes.append(len(delta))
    assert sizes[1] < 1024 and sizes[1] - sizes[0] < 16  # the summary's counts have more digits


def test_a_missed_delta_is_refused() -> None:
    board = Dashboard()
    first = view([record("a.service")])
    board.rebuild(first, None, {})
    client = json.loads(board.snapshot())
    one = board.update(replace(first, revision=8), (), (), "e1", {})
    two = board.update(replace(first, revision=9), (), (), "e2", {})
    assert one is not None and two is not None
    with pytest.raises(ValueError, match="missed"):
        apply_delta(client, json.loads(two))
    assert apply_delta(apply_delta(client, json.loads(one)), json.loads(two))["leader"] == "e2"
