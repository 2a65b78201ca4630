"""test_client.py's tests that need no etcd and no process (README "Tests"); what the module
covers as a whole: tests/integration/test_client.py."""

from __future__ import annotations

import pytest

from fleetpy.client import verbs, waiting
from fleetpy.client.waiting import WaitTarget
from fleetpy.model.records import ClusterView, MachineRecord, ScheduleEntry, UnitRecord, UnitState
from fleetpy.states import DesiredState

IN, LD, LN = DesiredState.INACTIVE, DesiredState.LOADED, DesiredState.LAUNCHED


@pytest.mark.parametrize(
    ("verb", "current", "refusal"),
    [
        (None, IN, None),
        (
            None,
            LD,
            "a.service is loaded: `submit --replace` replaces only inactive units; "
            "use `load --replace` or `start --replace`",
        ),
        (
            None,
            LN,
            "a.service is launched: `submit --replace` replaces only inactive units; "
            "use `start --replace`",
        ),
        (LD, IN, None),
        (LD, LD, None),
        (
            LD,
            LN,
            "a.service is launched: `load --replace` replaces only inactive or loaded "
            "units; use `start --replace`",
        ),
        (LN, IN, None),
        (LN, LD, None),
        (LN, LN, None),
    ],
)
def test_replace_rules_are_fleetctls(
    verb: DesiredState | None, current: DesiredState, refusal: str | None
) -> None:
    """fleetctl's checkReplaceUnitState: submit replaces inactive units, load inactive or
    loaded ones, start any (verb None is submit)."""
    assert verbs.replace_refusal("a.service", current, verb) == refusal


# ----------------------------------------------------------------------------- evaluate


def view(
    units: dict[str, UnitRecord],
    states: dict[str, dict[str, UnitState]] | None = None,
    schedule: dict[str, tuple[str, ScheduleEntry]] | None = None,
    reasons: dict[str, str] | None = None,
    machines: dict[str, MachineRecord] | None = None,
) -> ClusterView:
    return ClusterView(1, units, machines or {}, schedule or {}, reasons or {}, states or {})


def test_evaluate_launched_loaded_and_failed() -> None:
    units = {"a.service": UnitRecord("a.service", "h1", LN)}
    machines = {"m1" * 16: MachineRecord("m1" * 16, "10.0.0.1")}
    run = {
        "a.service": {
            "m1" * 16: UnitState("a.service", "m1" * 16, "loaded", "active", "running", "h1")
        }
    }
    [p] = waiting.evaluate(view(units, run, machines=machines), ["a.service"], WaitTarget.LAUNCHED)
    assert (p.status, p.detail) == ("done", "launched on m1m1m1m1/10.0.0.1")
    old = {"a.service": {"m1": UnitState("a.service", "m1", "loaded", "active", "running", "h0")}}
    assert (
        waiting.evaluate(view(units, old), ["a.service"], WaitTarget.LAUNCHED)[0].status
        == "waiting"
    )
    failed = {
        "a.service": {
            "m1": UnitState("a.service", "m1", "loaded", "failed", "failed", "h1", "exit code 1")
        }
    }
    [p] = waiting.evaluate(view(units, failed), ["a.service"], WaitTarget.LAUNCHED)
    assert p.status == "failed" and "loaded/failed/failed: exit code 1" in p.detail
    [p] = waiting.evaluate(
        view(units, failed), ["a.service"], WaitTarget.LAUNCHED, fresh=lambda u, m: False
    )
    assert p.status == "waiting"
    assert (
        waiting.evaluate(view(units, failed), ["a.service"], WaitTarget.LOADED)[0].status == "done"
    )
    assert (
        waiting.evaluate(view(units, run), ["a.service"], WaitTarget.LOADED)[0].status == "waiting"
    )


@pytest.mark.parametrize(
    ("active", "sub", "job", "fresh", "status", "detail"),
    [
        # systemd's start job decides, whatever ActiveState shows since: Type=simple
        # `/bin/false` is started at fork, then fails; a oneshot's success is never active.
        ("failed", "failed", "done", True, "done", "launched on m1 (now loaded/failed/failed)"),
        ("inactive", "dead", "done", True, "done", "launched on m1 (now loaded/inactive/dead)"),
        ("active", "running", "done", False, "done", "launched on m1"),
        ("inactive", "dead", "skipped", True, "done", "launched on m1 (now loaded/inactive/dead)"),
        # Until the job ended, a failed ActiveState decides nothing either way.
        (
            "failed",
            "failed",
            "pending",
            True,
            "waiting",
            "placed on m1, reports loaded/failed/failed",
        ),
        (
            "active",
            "running",
            "pending",
            True,
            "waiting",
            "placed on m1, reports loaded/active/running",
        ),
        # A failed start job fails the wait at once, fresh or not: the agent clears the job
        # when it stops the unit, so it cannot be left from before.
        (
            "failed",
            "failed",
            "failed",
            False,
            "failed",
            "failed on m1: loaded/failed/failed (start job failed)",
        ),
        (
            "activating",
            "start",
            "timeout",
            False,
            "failed",
            "failed on m1: loaded/activating/start (start job timeout)",
        ),
        (
            "inactive",
            "dead",
            "refused",
            False,
            "failed",
            "failed on m1: loaded/inactive/dead (systemd refused to start it)",
        ),
        # No job known (adopted after an agent restart, or an older agent): ActiveState.
        ("active", "running", "", False, "done", "launched on m1"),
        ("failed", "failed", "", True, "failed", "failed on m1: loaded/failed/failed"),
        ("failed", "failed", "", False, "waiting", "placed on m1, reports loaded/failed/failed"),
    ],
)
def test_evaluate_launched_follows_systemds_start_job(
    active: str, sub: str, job: str, fresh: bool, status: str, detail: str
) -> None:
    units = {"a.service": UnitRecord("a.service", "h1", LN)}
    state = UnitState("a.service", "m1", "loaded", active, sub, "h1", job=job)
    entry = ScheduleEntry("a.service", "h1", LN, "")
    [p] = waiting.evaluate(
        view(units, {"a.service": {"m1": state}}, schedule={"a.service": ("m1", entry)}),
        ["a.service"],
        WaitTarget.LAUNCHED,
        fresh=lambda u, m: fresh,
    )
    assert (p.status, p.detail) == (status, detail)


def test_evaluate_stopped() -> None:
    units = {"a.service": UnitRecord("a.service", "h1", LD)}
    run = {"a.service": {"m1": UnitState("a.service", "m1", "loaded", "active", "running", "h1")}}
    dead = {"a.service": {"m1": UnitState("a.service", "m1", "loaded", "failed", "failed", "h1")}}
    assert (
        waiting.evaluate(view(units, run), ["a.service"], WaitTarget.STOPPED)[0].status == "waiting"
    )
    [p] = waiting.evaluate(view(units, dead), ["a.service"], WaitTarget.STOPPED)
    assert (p.status, p.detail) == ("done", "stopped on m1")
    [p] = waiting.evaluate(view(units), ["a.service"], WaitTarget.STOPPED)
    assert (p.status, p.detail) == ("done", "stopped (not placed)")
    entry = ScheduleEntry("a.service", "h1", LD, "")
    [p] = waiting.evaluate(
        view(units, schedule={"a.service": ("m1", entry)}), ["a.service"], WaitTarget.STOPPED
    )
    assert p.status == "waiting"


def test_evaluate_explains_pending_units() -> None:
    units = {"a.service": UnitRecord("a.service", "h1", LN)}
    [p] = waiting.evaluate(
        view(units, reasons={"a.service": "no machines are alive"}),
        ["a.service"],
        WaitTarget.LAUNCHED,
    )
    assert p.detail == "not placed: no machines are alive"
    [p] = waiting.evaluate(view(units), ["a.service"], WaitTarget.LAUNCHED, no_engine=True)
    assert p.detail == "no engine is running"
    entry = ScheduleEntry("a.service", "h1", LN, "")
    [p] = waiting.evaluate(
        view(units, schedule={"a.service": ("m1", entry)}),
        ["a.service"],
        WaitTarget.LAUNCHED,
        no_engine=True,
    )
    assert p.detail == "placed on m1, no state reported yet"
    glob = {"g.service": UnitRecord("g.service", "h1", LN, is_global=True)}
    assert (
        waiting.evaluate(view(glob), ["g.service"], WaitTarget.LAUNCHED)[0].detail
        == "no machines are alive"
    )


def test_evaluate_inactive_means_no_state_anywhere() -> None:
    units = {"a.service": UnitRecord("a.service", "h1", IN)}
    states = {"a.service": {"m1": UnitState("a.service", "m1", "loaded", "inactive", "dead")}}
    [p] = waiting.evaluate(view(units, states), ["a.service"], WaitTarget.UNLOADED)
    assert p.status == "waiting" and "still reported on m1" in p.detail
    assert waiting.evaluate(view(units), ["a.service"], WaitTarget.UNLOADED)[0].status == "done"


def test_wait_result_messages() -> None:
    result = waiting.WaitResult(
        WaitTarget.LAUNCHED,
        (waiting.UnitProgress("a.service", "waiting", "no engine is running"),),
        2.0,
        True,
        2,
    )
    assert result.error_message() == (
        "timed out after 2s waiting for a.service to be launched (no engine is running)"
    )
    result = waiting.WaitResult(
        WaitTarget.LAUNCHED,
        (
            waiting.UnitProgress("a.service", "failed", "failed on m1: loaded/failed/failed"),
            waiting.UnitProgress("b.service", "waiting", "not placed yet"),
            waiting.UnitProgress("c.service", "waiting", "not placed yet"),
            waiting.UnitProgress("d.service", "done", "launched on m1"),
        ),
        2.0,
        True,
        2,
    )
    message = result.error_message()
    assert message is not None and "\n" not in message
    assert message.startswith("a.service failed on m1")
    assert "2 units to be launched: b.service (not placed yet); c.service" in message
    assert not result.ok
