"""Rolling updates of global units, the pure parts: the roll a global entry carries (its
codec, what each machine runs of it, how a write and a step change it) and the client's
judgement of a step's machines (fleetpy.model.global_rolls, fleetpy.deploy.global_rollout)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fleetpy.agent_plan import select_globals
from fleetpy.deploy.global_rollout import Phase, Status, judge, next_batch, still_active
from fleetpy.health import Health
from fleetpy.model.codecs import MalformedRecord
from fleetpy.model.global_rolls import GlobalRoll, GlobalVersion, after_write, stepped
from fleetpy.model.records import ClusterView, MachineRecord, ScheduleEntry, UnitState
from fleetpy.states import DesiredState

OLD, NEW, OTHER = "a" * 64, "b" * 64, "c" * 64
G = "mon.service"
TEXT = "[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nGlobal=true\n"
PREVIOUS = GlobalVersion(OLD, TEXT.replace("1000", "999"), "sig-old")


def entry(
    roll: GlobalRoll | None = None, desired: DesiredState = DesiredState.LAUNCHED
) -> ScheduleEntry:
    return ScheduleEntry(G, NEW, desired, TEXT, "sig-new", roll)


# ----------------------------------------------------------------------------- the record


def test_an_entry_with_a_roll_reads_back_and_one_without_stays_as_it_was() -> None:
    rolling = entry(GlobalRoll(PREVIOUS, frozenset({"m2", "m1"}), frozenset({"m3"})))
    raw = rolling.to_json().encode()
    assert json.loads(raw)["roll"] == {
        "previous": {"hash": OLD, "text": PREVIOUS.text, "signature": "sig-old"},
        "waiting": ["m1", "m2"],
        "stopped": ["m3"],
    }
    assert ScheduleEntry.from_json(G, raw) == rolling
    plain = entry()
    assert "roll" not in json.loads(plain.to_json())  # what the previous release wrote
    assert ScheduleEntry.from_json(G, plain.to_json().encode()).roll is None


@pytest.mark.parametrize(
    ("roll", "why"),
    [
        ([], "field 'roll' is a list"),
        ({"previous": "x"}, "field 'roll.previous' is a str"),
        ({"previous": {"hash": "nope", "text": ""}}, "not a sha256"),
        ({"previous": {"hash": OLD, "text": ""}, "waiting": "m1"}, "field 'waiting' is a str"),
        ({"previous": {"hash": OLD, "text": ""}, "waiting": [1]}, "holds a non-string"),
        ({"stopped": ["../x"]}, "invalid machine id"),
    ],
)
def test_a_malformed_roll_is_a_malformed_entry(roll: object, why: str) -> None:
    raw = json.dumps({"v": 1, "hash": NEW, "desired": "launched", "text": TEXT, "roll": roll})
    with pytest.raises(MalformedRecord, match=why):
        ScheduleEntry.from_json(G, raw.encode())


@pytest.mark.parametrize(
    ("roll", "machine", "hash", "desired", "signature"),
    [
        (None, "m1", NEW, DesiredState.LAUNCHED, "sig-new"),
        (GlobalRoll(PREVIOUS, frozenset({"m1"})), "m1", OLD, DesiredState.LAUNCHED, "sig-old"),
        (GlobalRoll(PREVIOUS, frozenset({"m1"})), "m2", NEW, DesiredState.LAUNCHED, "sig-new"),
        # a machine that joined mid-roll is in no set: the new version
        (GlobalRoll(PREVIOUS, frozenset({"m1"})), "m9", NEW, DesiredState.LAUNCHED, "sig-new"),
        (
            GlobalRoll(None, frozenset(), frozenset({"m1"})),
            "m1",
            NEW,
            DesiredState.LOADED,
            "sig-new",
        ),
        (
            GlobalRoll(PREVIOUS, frozenset({"m1"}), frozenset({"m1"})),
            "m1",
            OLD,
            DesiredState.LOADED,
            "sig-old",
        ),
    ],
)
def test_what_each_machine_runs_of_a_rolling_entry(
    roll: GlobalRoll | None, machine: str, hash: str, desired: DesiredState, signature: str
) -> None:
    mine = entry(roll).for_machine(machine)
    assert (mine.hash, mine.desired, mine.signature, mine.roll) == (hash, desired, signature, None)
    assert mine.text == (PREVIOUS.text if hash == OLD else TEXT)


def test_a_stopped_entry_stays_stopped_and_unloaded_is_not_loaded() -> None:
    roll = GlobalRoll(None, frozenset(), frozenset({"m1"}))
    assert entry(roll, DesiredState.INACTIVE).for_machine("m1").desired is DesiredState.INACTIVE


def test_the_agent_chooses_its_machines_version_of_a_rolling_global() -> None:
    rolling = entry(GlobalRoll(PREVIOUS, frozenset({"m1"})))
    chosen = select_globals({G: rolling.for_machine("m1")}, {}, {})
    assert chosen[G].hash == OLD


CURRENT = GlobalVersion(NEW, TEXT, "sig-new")
M12 = frozenset({"m1", "m2"})


@pytest.mark.parametrize(
    ("roll", "current", "new_hash", "rolling", "after"),
    [
        # first write of the unit: nothing to roll
        (None, None, NEW, M12, None),
        # a desired-state change (same version) keeps the roll going
        (GlobalRoll(PREVIOUS, M12), CURRENT, NEW, None, GlobalRoll(PREVIOUS, M12)),
        # a new version without a roll: every machine at once (start --replace, the API)
        (None, CURRENT, OTHER, None, None),
        (GlobalRoll(PREVIOUS, M12), CURRENT, OTHER, None, None),
        # a new version rolled over the machines that run it
        (None, CURRENT, OTHER, M12, GlobalRoll(CURRENT, M12)),
        (None, CURRENT, OTHER, frozenset(), None),  # runs nowhere: nothing to roll
        # a newer version mid-roll: the waiting machines keep the oldest until moved
        (
            GlobalRoll(PREVIOUS, frozenset({"m2"})),
            CURRENT,
            OTHER,
            M12,
            GlobalRoll(PREVIOUS, frozenset({"m2"})),
        ),
        # back to the previous version mid-roll: every machine is on it at once
        (GlobalRoll(PREVIOUS, frozenset({"m2"})), CURRENT, OLD, M12, None),
        # a restart's stopped machines stay stopped through a new version
        (
            GlobalRoll(None, frozenset(), frozenset({"m3"})),
            CURRENT,
            OTHER,
            M12,
            GlobalRoll(CURRENT, M12, frozenset({"m3"})),
        ),
    ],
)
def test_the_roll_after_a_write(
    roll: GlobalRoll | None,
    current: GlobalVersion | None,
    new_hash: str,
    rolling: frozenset[str] | None,
    after: GlobalRoll | None,
) -> None:
    assert after_write(roll, current, new_hash, rolling) == after


@pytest.mark.parametrize(
    ("roll", "move", "stop", "start", "after"),
    [
        (GlobalRoll(PREVIOUS, M12), {"m1"}, set(), set(), GlobalRoll(PREVIOUS, frozenset({"m2"}))),
        (GlobalRoll(PREVIOUS, M12), M12, set(), set(), None),  # the last step ends it
        (None, set(), {"m1"}, set(), GlobalRoll(None, frozenset(), frozenset({"m1"}))),
        (GlobalRoll(None, frozenset(), frozenset({"m1"})), set(), set(), {"m1"}, None),
        (
            GlobalRoll(PREVIOUS, M12, frozenset({"m1"})),
            set(),
            set(),
            {"m1"},
            GlobalRoll(PREVIOUS, M12),
        ),
    ],
)
def test_the_roll_after_a_step(
    roll: GlobalRoll | None,
    move: set[str],
    stop: set[str],
    start: set[str],
    after: GlobalRoll | None,
) -> None:
    assert stepped(roll, frozenset(move), frozenset(stop), frozenset(start)) == after


# ----------------------------------------------------------------------------- steps


@pytest.mark.parametrize(
    ("waiting", "alive", "size", "batch", "gone"),
    [
        ({"m3", "m1", "m2"}, {"m1", "m2", "m3"}, 1, {"m1"}, set()),
        ({"m3", "m1", "m2"}, {"m1", "m2", "m3"}, 2, {"m1", "m2"}, set()),
        ({"m3", "m1", "m2"}, {"m2", "m3"}, 1, {"m2"}, {"m1"}),  # m1 left: moved for free
        ({"m1"}, set(), 1, set(), {"m1"}),
        ({"m1", "m2"}, {"m1", "m2"}, 0, {"m1"}, set()),  # at least one
    ],
)
def test_the_next_step_of_a_roll(
    waiting: set[str], alive: set[str], size: int, batch: set[str], gone: set[str]
) -> None:
    assert next_batch(waiting, alive, size) == (frozenset(batch), frozenset(gone))


def view(*states: UnitState, machines: tuple[str, ...] = ("m1", "m2")) -> ClusterView:
    return ClusterView(
        revision=1,
        units={},
        machines={m: MachineRecord(m, f"10.0.0.{i + 1}") for i, m in enumerate(machines)},
        schedule={},
        reasons={},
        states={G: {s.machine: s for s in states}} if states else {},
    )


def state(
    machine: str, hash: str, active: str, sub: str, job: str = "", message: str = ""
) -> UnitState:
    return UnitState(G, machine, "loaded", active, sub, hash, message, job)


@pytest.mark.parametrize(
    ("states", "phase", "status", "detail"),
    [
        (
            (state("m1", NEW, "active", "running", "done"),),
            Phase.STARTED,
            Status.DONE,
            "active on m1/10.0.0.1",
        ),
        (
            (state("m1", OLD, "active", "running", "done"),),
            Phase.STARTED,
            Status.WAITING,
            "m1/10.0.0.1 still runs the previous version",
        ),
        (
            (state("m1", NEW, "activating", "start", "pending"),),
            Phase.STARTED,
            Status.WAITING,
            "m1/10.0.0.1 reports loaded/activating/start",
        ),
        (
            (state("m1", NEW, "failed", "failed", "failed", "exit code 1"),),
            Phase.STARTED,
            Status.FAILED,
            "failed on m1/10.0.0.1: loaded/failed/failed: exit code 1 (start job failed)",
        ),
        # started, then died: failed too, not a success
        (
            (state("m1", NEW, "failed", "failed", "done"),),
            Phase.STARTED,
            Status.FAILED,
            "failed on m1/10.0.0.1: loaded/failed/failed",
        ),
        (
            (state("m1", NEW, "rejected", "unsigned"),),
            Phase.STARTED,
            Status.FAILED,
            "rejected on m1/10.0.0.1: loaded/rejected/unsigned",
        ),
        ((), Phase.STARTED, Status.DONE, "no longer runs on m1/10.0.0.1"),
        (
            (state("m1", NEW, "active", "running", "done"),),
            Phase.STOPPED,
            Status.WAITING,
            "m1/10.0.0.1 reports active/running",
        ),
        (
            (state("m1", NEW, "inactive", "dead"),),
            Phase.STOPPED,
            Status.DONE,
            "stopped on m1/10.0.0.1",
        ),
        # after a stop, its start not begun yet: not started
        (
            (state("m1", NEW, "inactive", "dead"),),
            Phase.STARTED,
            Status.WAITING,
            "m1/10.0.0.1 reports loaded/inactive/dead",
        ),
    ],
)
def test_judging_a_steps_machine(
    states: tuple[UnitState, ...], phase: Phase, status: Status, detail: str
) -> None:
    (progress,) = judge(view(*states), G, {"m1": NEW}, phase)
    assert (progress.status, progress.detail) == (status, detail)


def test_a_machine_that_left_is_not_waited_for() -> None:
    (progress,) = judge(view(machines=("m2",)), G, {"m1": NEW}, Phase.STARTED)
    assert (progress.status, progress.detail) == (Status.GONE, "m1 left the cluster")


def test_an_unhealthy_container_is_not_done() -> None:
    unhealthy = replace(state("m1", NEW, "active", "running", "done"), health=Health.UNHEALTHY)
    (progress,) = judge(view(unhealthy), G, {"m1": NEW}, Phase.STARTED)
    assert (progress.status, progress.detail) == (Status.WAITING, "unhealthy on m1/10.0.0.1")
    healthy = replace(unhealthy, health=Health.HEALTHY)
    (progress,) = judge(view(healthy), G, {"m1": NEW}, Phase.STARTED)
    assert progress.status is Status.DONE


def test_after_min_ready_a_machine_that_did_not_stay_active_is_named() -> None:
    now = view(
        state("m1", NEW, "active", "running", "done"),
        state("m2", NEW, "inactive", "dead", "done"),
        replace(state("m3", NEW, "active", "running", "done"), health=Health.UNHEALTHY),
        machines=("m1", "m2", "m3"),
    )
    problems = still_active(now, G, {"m1": NEW, "m2": NEW, "m3": NEW})
    assert [(p.machine, p.detail) for p in problems] == [
        ("m2", "did not stay active on m2/10.0.0.2 (inactive/dead)"),
        ("m3", "did not stay active on m3/10.0.0.3 (active/running, unhealthy)"),
    ]
