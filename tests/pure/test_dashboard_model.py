"""The dashboard's document as a pure function of a view (table-tested; no browser, no
etcd)."""

from __future__ import annotations

from typing import Any

import pytest

from fleetpy.api.dashboard_model import Phase, document, unit_phase
from fleetpy.model.records import (
    ClusterView,
    DeploymentRecord,
    MachineRecord,
    ScheduleEntry,
    UnitRecord,
    UnitState,
)
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
    doc = document(v, "engine-1", {})
    assert doc["revision"] == 7 and doc["leader"] == "engine-1"
    assert doc["summary"] == {
        "machines": 2,
        "units": 3,
        "phases": {"active": 1, "starting": 1, "unplaced": 1},
    }
    assert doc["machines"] == [
        {"id": "m1", "ip": "10.0.0.1", "hostname": "", "metadata": {"n": "0"}, "units": ["a"]},
        {"id": "m2", "ip": "10.0.0.2", "hostname": "", "metadata": {"n": "1"}, "units": ["c"]},
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
