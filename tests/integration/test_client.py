"""The client library (fleetpy.client): argument resolution, validation before writing, waiting, and listing rows.

Here: the tests that need the session's etcd or a short-lived helper process (README "Tests"); the others are in
tests/pure/test_client.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fleetpy.client import listings, operations, plans, waiting
from fleetpy.client.waiting import WaitTarget
from fleetpy.errors import (
    FleetOptionError,
    FleetpyError,
    StateError,
    UnitFileError,
    UnitNameError,
    UnitParseError,
    UnknownUnitError,
)
from fleetpy.live_view import LiveView
from fleetpy.metadata import MetadataChange
from fleetpy.model.changes import PlaceUnit, StoreReason, UnitChange, UnplaceUnit
from fleetpy.model.records import MachineRecord, ScheduleEntry, UnitState
from fleetpy.registry import Registry
from fleetpy.states import DesiredState
from fleetpy.unitfile.unit import content_hash, parse_unit

from support.cli_helpers import SERVICE, write
from support.waiting import until


def snapshot(registry: Registry) -> dict[str, tuple[str, str, bool]]:
    return {n: (u.hash, u.desired, u.is_global) for n, u in registry.list_units().items()}


# ----------------------------------------------------------------------------- arguments


def test_submit_stores_canonical_text_as_inactive(registry: Registry, units_dir: Path) -> None:
    path = write(units_dir, "web.service", "# comment\n[Service]\nExecStart=/bin/true\n")
    records = operations.submit(registry, [path])
    assert [(r.name, r.desired) for r in records] == [("web.service", "inactive")]
    unit = parse_unit("[Service]\nExecStart=/bin/true\n")
    assert records[0].hash == unit.hash
    assert registry.get_content(unit.hash) == unit.serialize()


def test_submit_leaves_existing_units_alone(registry: Registry, units_dir: Path) -> None:
    path = write(units_dir, "web.service")
    operations.start(registry, [path])
    operations.submit(registry, [path, "web.service"])
    assert registry.get_unit("web.service").desired == "launched"  # type: ignore[union-attr]


def test_global_flag_comes_from_x_fleet(registry: Registry, units_dir: Path) -> None:
    path = write(units_dir, "mon.service", SERVICE + "\n[X-Fleet]\nGlobal=true\n")
    operations.submit(registry, [path])
    assert registry.get_unit("mon.service").is_global  # type: ignore[union-attr]


def test_start_and_load_by_file_and_by_name(registry: Registry, units_dir: Path) -> None:
    operations.load(registry, [write(units_dir, "a.service")])
    operations.submit(registry, [write(units_dir, "b.service", SERVICE + "#x\n")])
    operations.start(registry, ["b.service"])
    assert snapshot(registry)["a.service"][1] == "loaded"
    assert snapshot(registry)["b.service"][1] == "launched"


def test_instances_of_a_submitted_template_start_by_name(
    registry: Registry, units_dir: Path
) -> None:
    operations.submit(
        registry,
        [write(units_dir, "web@.service", SERVICE + "\n[X-Fleet]\nConflicts=web@*.service\n")],
    )
    plan = plans.plan_submit(registry, ["web@3.service"], DesiredState.LAUNCHED)
    assert plan.changes[0].template == "web@.service"
    operations.start(registry, ["web@3.service", "web@4.service"])
    units = registry.list_units()
    assert units["web@3.service"].hash == units["web@.service"].hash
    assert units["web@4.service"].desired == "launched"
    assert operations.unit_text(registry, "web@9.service") == operations.unit_text(
        registry, "web@.service"
    )


def test_template_using_instance_specifiers_is_valid(registry: Registry, units_dir: Path) -> None:
    operations.submit(
        registry,
        [write(units_dir, "side@.service", SERVICE + "\n[X-Fleet]\nMachineOf=web@%i.service\n")],
    )
    assert "side@.service" in registry.list_units()


@pytest.mark.parametrize(
    "args, error, match",
    [
        (["web@.service"], StateError, "is a template"),
        (["db@1.service"], UnknownUnitError, "nor its template db@.service"),
        (["nope.service"], UnknownUnitError, "nope.service is not submitted"),
        (["bad name.service"], UnitNameError, "invalid unit name"),
        (["web.bogus"], UnitNameError, "unknown type suffix"),
        (["./missing.service"], UnitFileError, "missing.service"),
        (["web*.service"], FleetpyError, "globs are only accepted"),
    ],
)
def test_bad_start_arguments_write_nothing(
    registry: Registry, units_dir: Path, args: list[str], error: type[Exception], match: str
) -> None:
    operations.submit(registry, [write(units_dir, "web@.service")])
    good = write(units_dir, "good.service")
    before = snapshot(registry)
    with pytest.raises(error, match=match):
        operations.start(registry, [good, *args])
    assert snapshot(registry) == before


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("[Service]\nExecStart=/bin/true\nnot a line\n", UnitParseError, r"bad\.service:3"),
        (
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nMachineID=abc\n",
            FleetOptionError,
            "cannot be combined",
        ),
        (
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetdata=a=b\n",
            FleetOptionError,
            "did you mean",
        ),
    ],
)
def test_bad_files_write_nothing(
    registry: Registry, units_dir: Path, text: str, error: type[Exception], match: str
) -> None:
    good = write(units_dir, "good.service")
    bad = write(units_dir, "bad.service", text)
    with pytest.raises(error, match=match):
        operations.start(registry, [good, bad])
    assert snapshot(registry) == {}


def test_changed_contents_are_refused_before_writing(registry: Registry, units_dir: Path) -> None:
    operations.submit(registry, [write(units_dir, "a.service")])
    other = units_dir / "other"
    other.mkdir()
    before = snapshot(registry)
    with pytest.raises(StateError, match="different contents"):
        operations.start(
            registry,
            [write(units_dir, "b.service"), write(other, "a.service", SERVICE + "#changed\nX=1\n")],
        )
    assert snapshot(registry) == before


def test_replace_writes_the_new_contents_in_the_units_state(
    registry: Registry, units_dir: Path
) -> None:
    changed = SERVICE.replace("1000", "2000")
    operations.submit(registry, [write(units_dir, "i.service")])
    operations.load(registry, [write(units_dir, "l.service")])
    operations.start(registry, [write(units_dir, "s.service")])
    before = snapshot(registry)
    new = [write(units_dir, n, changed) for n in ("i.service", "l.service", "s.service")]
    with pytest.raises(StateError) as refused:
        operations.start(registry, new)
    # Without --replace: one line naming it, and nothing written.
    assert str(refused.value).endswith("add --replace to start it with them, or destroy it first")
    with pytest.raises(StateError, match="it is launched: `start --replace` replaces it, or"):
        operations.submit(registry, [new[2]])
    with pytest.raises(StateError, match="s.service is launched: `load --replace` replaces"):
        operations.load(registry, new, replace=True)
    assert snapshot(registry) == before
    operations.submit(registry, [new[0]], replace=True)
    operations.load(registry, [new[1]], replace=True)
    operations.start(registry, [new[2]], replace=True)
    digest = content_hash(parse_unit(changed).serialize())
    assert snapshot(registry) == {
        "i.service": (digest, "inactive", False),
        "l.service": (digest, "loaded", False),
        "s.service": (digest, "launched", False),
    }
    assert registry.get_content(digest) == parse_unit(changed).serialize()
    # The same contents again: nothing to replace, the verb only sets its state.
    operations.start(registry, [new[1]], replace=True)
    assert snapshot(registry)["l.service"] == (digest, "launched", False)


def test_replace_of_an_instance_by_name_takes_its_templates_contents(
    registry: Registry, units_dir: Path
) -> None:
    operations.submit(registry, [write(units_dir, "web@.service")])
    operations.start(registry, ["web@1.service", "web@2.service"])
    changed = SERVICE.replace("1000", "2000")
    operations.submit(registry, [write(units_dir, "web@.service", changed)], replace=True)
    old, new = (
        content_hash(parse_unit(SERVICE).serialize()),
        content_hash(parse_unit(changed).serialize()),
    )
    operations.start(registry, ["web@1.service"])  # without --replace: left as it is
    assert registry.get_unit("web@1.service").hash == old  # type: ignore[union-attr]
    operations.start(registry, ["web@1.service"], replace=True)
    assert {n: h for n, (h, _, _) in snapshot(registry).items()} == {
        "web@.service": new,
        "web@1.service": new,
        "web@2.service": old,
    }


def test_replace_keeps_signatures_and_global_as_they_must_be(
    registry: Registry, units_dir: Path
) -> None:
    operations.start(
        registry, [write(units_dir, "g.service", SERVICE + "\n[X-Fleet]\nGlobal=true\n")]
    )
    with pytest.raises(StateError, match=r"make it not global \(Global=\), which cannot change"):
        operations.start(registry, [write(units_dir, "g.service")], replace=True)
    # A record signed earlier (here: any signature) is not replaced by an unsigned unit.
    operations.start(registry, [write(units_dir, "s.service")])
    registry.change_units([UnitChange("s.service", signature="ed25519:x:y")])
    before = snapshot(registry)
    with pytest.raises(StateError, match="s.service is signed and its replacement is not"):
        operations.start(
            registry, [write(units_dir, "s.service", SERVICE + "#\nA=1\n")], replace=True
        )
    with pytest.raises(StateError, match="s.service is signed"):
        operations.put_unit(registry, "s.service", SERVICE + "A=1\n", None)
    assert snapshot(registry) == before


def test_api_put_of_new_contents_makes_the_unit_anew(registry: Registry) -> None:
    """fleet's API: other options under an existing name make a new unit, inactive unless
    the body says otherwise (fleetctl's --replace then waits for inactive)."""
    operations.put_unit(registry, "a.service", SERVICE, DesiredState.LAUNCHED)
    changed = SERVICE.replace("1000", "2000")
    assert operations.put_unit(registry, "a.service", changed, None).outcome == "created"
    record = registry.get_unit("a.service")
    assert record is not None and record.desired == "inactive"
    assert record.hash == content_hash(parse_unit(changed).serialize())
    operations.put_unit(registry, "a.service", SERVICE, DesiredState.LAUNCHED)
    assert registry.get_unit("a.service").desired == "launched"  # type: ignore[union-attr]


def test_stop_requires_launched_names_and_filters_globs(
    registry: Registry, units_dir: Path
) -> None:
    operations.start(registry, [write(units_dir, "web1.service"), write(units_dir, "web2.service")])
    operations.load(registry, [write(units_dir, "web3.service")])
    with pytest.raises(
        StateError,
        match=r"^unit web3.service is not launched "
        r"\(desired state loaded\)$",
    ):
        operations.stop(registry, ["web1.service", "web3.service"])
    assert snapshot(registry)["web1.service"][1] == "launched"
    plan = plans.plan_stop(registry, ["web*.service"])
    assert plan.names == ("web1.service", "web2.service")
    operations.stop(registry, ["web*"])
    assert {d for _, d, _ in snapshot(registry).values()} == {"loaded"}


def test_unload_and_destroy_take_globs(registry: Registry, units_dir: Path) -> None:
    operations.start(
        registry,
        [write(units_dir, f"web{i}.service") for i in range(3)] + [write(units_dir, "db.service")],
    )
    operations.unload(registry, ["web[01].service"])
    desired = {n: d for n, (_, d, _) in snapshot(registry).items()}
    assert desired == {
        "web0.service": "inactive",
        "web1.service": "inactive",
        "web2.service": "launched",
        "db.service": "launched",
    }
    with pytest.raises(UnknownUnitError, match="no submitted unit matches 'zz\\*'"):
        operations.destroy(registry, ["web*", "zz*"])
    assert len(snapshot(registry)) == 4
    assert sorted(operations.destroy(registry, ["web*", "db.service"])) == [
        "db.service",
        "web0.service",
        "web1.service",
        "web2.service",
    ]
    assert snapshot(registry) == {}


def test_unit_text_of_unknown_unit(registry: Registry) -> None:
    with pytest.raises(UnknownUnitError, match="x.service is not submitted"):
        operations.unit_text(registry, "x.service")


# ----------------------------------------------------------------------------- wait_for


def fake_agent(
    registry: Registry,
    machine: str,
    unit: str,
    active: str,
    waiting: threading.Event,
    hash_: str | None = None,
) -> threading.Thread:
    """Report a unit's state as an agent would, once `waiting` is set: wait_for is
    following the cluster (its first progress report), so the state reaches it by the
    watch, after it began. The machine registers before (here, at once): wait_for's
    watches of machines and of states progress independently, so a machine registered
    just before its state could reach the view after it (a loaded machine saw that)."""
    lease = registry.grant_lease(30)
    registry.register_machine(MachineRecord(machine, "10.0.0.9"), lease)

    def run() -> None:
        assert waiting.wait(10)
        digest = hash_ or registry.get_unit(unit).hash  # type: ignore[union-attr]
        registry.report_states(
            [
                UnitState(
                    unit,
                    machine,
                    "loaded",
                    active,
                    "running" if active == "active" else active,
                    digest,
                )
            ],
            lease,
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_for_wakes_on_reported_state(registry: Registry, units_dir: Path) -> None:
    operations.start(registry, [write(units_dir, "a.service")])
    seen: list[list[waiting.UnitProgress]] = []
    woken = threading.Event()
    fake_agent(registry, "f" * 32, "a.service", "active", woken)

    def progress(units: list[waiting.UnitProgress]) -> None:
        seen.append(units)
        woken.set()

    began = time.monotonic()
    result = waiting.wait_for(registry, ["a.service"], WaitTarget.LAUNCHED, 10, progress)
    assert result.ok and not result.timed_out
    # Woken by the watch, not the backstop's re-read (a bound with room for a loaded machine).
    assert time.monotonic() - began < waiting.BACKSTOP_SECONDS
    assert result.units[0].detail == "launched on ffffffff/10.0.0.9"
    assert seen[0][0].status == "waiting" and seen[-1][0].status == "done"


TRUE_TEXT = "[Service]\nExecStart=/bin/true\n"


def test_live_view_patches_the_view_from_events(registry: Registry) -> None:
    follower = LiveView(registry)
    try:
        lease = registry.grant_lease(30)
        entry = ScheduleEntry(
            "a.service", "a1" * 32, DesiredState.LAUNCHED, "[Service]\nExecStart=/bin/true\n"
        )
        assert registry.campaign("test-engine", lease)
        registry.engine_write("test-engine", [[PlaceUnit("m1", entry)]])
        registry.register_machine(MachineRecord("m1", "10.0.0.1"), lease)
        registry.report_states(
            [
                UnitState("a.service", "m1", "loaded", "active", "running", "h1"),
                UnitState("b.service", "m1", "loaded", "active", "running"),
            ],
            lease,
        )
        deadline = time.monotonic() + 5
        current = follower.update()
        # states, schedule and machines come through separate watches: wait for all three
        while (
            len(current.states) < 2
            or "a.service" not in current.schedule
            or "m1" not in current.machines
        ) and time.monotonic() < deadline:
            follower.wake.wait(0.5)
            current = follower.update()
        assert current.schedule["a.service"][0] == "m1"
        assert current.schedule["a.service"][1].text == ""
        assert current.machines["m1"].ip == "10.0.0.1"
        assert current.states["a.service"]["m1"].active == "active"
        assert follower.fresh("a.service", "m1") and not follower.fresh("a.service", "m2")
        registry.report_states([], lease, removed=[("b.service", "m1")])
        registry.engine_write("test-engine", [[UnplaceUnit("m1", "a.service")]])
        while (
            "a.service" in current.schedule or "b.service" in current.states
        ) and time.monotonic() < deadline:
            follower.wake.wait(0.5)
            current = follower.update()
        assert "b.service" not in current.states and "a.service" not in current.schedule
        # units and the engine's reasons come through watches too
        registry.engine_write("test-engine", [[StoreReason("c.service", "no machines")]])
        registry.change_units(
            [UnitChange("c.service", text=TRUE_TEXT, hash=content_hash(TRUE_TEXT))]
        )
        while (
            "c.service" not in current.reasons or "c.service" not in current.units
        ) and time.monotonic() < deadline:
            follower.wake.wait(0.5)
            current = follower.update()
        assert current.reasons["c.service"] == "no machines"
        full = registry.read_view(with_text=False)
        assert (current.states, current.schedule, current.units, current.reasons) == (
            full.states,
            full.schedule,
            full.units,
            full.reasons,
        )
        assert follower.resyncs == 1  # events only, no re-read
    finally:
        follower.close()


def test_live_view_follows_operator_metadata(registry: Registry) -> None:
    """PATCH /machines reaches list-machines, the API, the dashboard and metrics through
    the view's watch: the machines in it carry the machine's effective metadata."""
    follower = LiveView(registry)
    try:
        lease = registry.grant_lease(30)
        registry.register_machine(MachineRecord("m1", "10.0.0.1", {"role": "db", "az": "a"}), lease)
        registry.change_metadata(
            [
                MetadataChange("m1", "role", "web"),
                MetadataChange("m1", "az", None),
                MetadataChange("m2", "rack", "r2"),
            ]
        )
        registry.register_machine(MachineRecord("m2", "10.0.0.2", {"rack": "r1"}), lease)

        def seen() -> bool:
            machines = follower.update().machines
            return {m: dict(r.metadata) for m, r in machines.items()} == {
                "m1": {"role": "web"},
                "m2": {"rack": "r2"},
            }

        until(seen, what="the view to show the machines' effective metadata")
        full = registry.read_view(with_text=False)
        assert follower.current().machines == full.machines
        assert follower.current().overlays == full.overlays
        rows = listings.machine_rows(registry)  # list-machines
        assert [(r.machine, r.metadata) for r in rows] == [
            ("m1", {"role": "web"}),
            ("m2", {"rack": "r2"}),
        ]
        assert follower.resyncs == 1
    finally:
        follower.close()


def test_wait_for_reports_a_failure_promptly(registry: Registry, units_dir: Path) -> None:
    operations.start(registry, [write(units_dir, "a.service")])
    woken = threading.Event()
    fake_agent(registry, "f" * 32, "a.service", "failed", woken)
    began = time.monotonic()
    result = waiting.wait_for(
        registry, ["a.service"], WaitTarget.LAUNCHED, 30, lambda _: woken.set()
    )
    assert time.monotonic() - began < 5
    assert result.units[0].status == "failed" and not result.timed_out


def test_wait_for_times_out_naming_the_missing_engine(registry: Registry, units_dir: Path) -> None:
    operations.start(registry, [write(units_dir, "a.service")])
    began = time.monotonic()
    result = waiting.wait_for(registry, ["a.service"], WaitTarget.LAUNCHED, 1)
    # Its one attempt, not the backstop's 10 s (the view's start-up and final read on a
    # loaded machine take the rest).
    assert 0.9 < time.monotonic() - began < 5
    assert result.timed_out
    assert result.error_message() == (
        "timed out after 1s waiting for a.service to be launched (no engine is running)"
    )


# ----------------------------------------------------------------------------- rows


def test_rows(registry: Registry, units_dir: Path) -> None:
    operations.start(
        registry,
        [
            write(units_dir, "b.service"),
            write(units_dir, "g.service", SERVICE + "[X-Fleet]\nGlobal=1\n"),
        ],
    )
    operations.submit(registry, [write(units_dir, "a.service", SERVICE + "#\nA=1\n")])
    lease = registry.grant_lease(30)
    registry.register_machine(MachineRecord("m2", "10.0.0.2", {"z": "1", "a": "2"}), lease)
    registry.register_machine(MachineRecord("m1", "10.0.0.1"), lease)
    b_hash = registry.get_unit("b.service").hash  # type: ignore[union-attr]
    registry.report_states(
        [
            UnitState("b.service", "m2", "loaded", "active", "running", b_hash),
            UnitState("g.service", "m2", "loaded", "active", "running"),
            UnitState("g.service", "m1", "loaded", "failed", "failed"),
        ],
        lease,
    )
    current = registry.read_view(with_text=False)
    rows = listings.unit_file_rows(current)
    assert [(r.unit, r.desired_state, r.state, r.machine) for r in rows] == [
        ("a.service", "inactive", "inactive", None),
        ("b.service", "launched", "launched", None),
        ("g.service", "launched", "launched", None),
    ]
    assert [(r.unit, r.machine, r.ip, r.active) for r in listings.unit_rows(current)] == [
        ("b.service", "m2", "10.0.0.2", "active"),
        ("g.service", "m1", "10.0.0.1", "failed"),
        ("g.service", "m2", "10.0.0.2", "active"),
    ]
    machines = listings.machine_rows(registry)
    assert [(m.machine, m.ip, list(m.metadata.items())) for m in machines] == [
        ("m1", "10.0.0.1", []),
        ("m2", "10.0.0.2", [("a", "2"), ("z", "1")]),
    ]


def test_listing_reads_only_what_it_shows(registry: Registry, units_dir: Path) -> None:
    """read_listing: the families asked for, placements from the schedule's keys alone
    (a unit's text is never read for a listing), the same rows as from a whole view."""
    operations.start(registry, [write(units_dir, f"{n}.service") for n in "abc"])
    lease = registry.grant_lease(30)
    registry.register_machine(MachineRecord("m1", "10.0.0.1"), lease)
    registry.register_machine(MachineRecord("m2", "10.0.0.2"), lease)
    assert registry.campaign("engine-1", lease)
    records = registry.get_units(["a.service", "b.service"])
    places = [
        [PlaceUnit(m, ScheduleEntry(r.name, r.hash, r.desired, "[Service]\n"))]
        for m, r in zip(("m2", "m1"), (records["a.service"], records["b.service"]))
        if r is not None
    ]
    assert registry.engine_write("engine-1", [*places, [StoreReason("c.service", "no room")]])
    registry.report_states([UnitState("a.service", "m2", "loaded", "active", "running")], lease)
    read = registry.read_listing(units=True, placed=True, reasons=True, states=True)
    assert read.placed == {"a.service": "m2", "b.service": "m1"}
    assert read.machines == {}  # not asked
    assert listings.unit_file_rows(read) == listings.unit_file_rows(registry.read_view())
    read = registry.read_listing(states=True, machines=True)
    assert (read.units, read.placed, read.reasons) == ({}, {}, {})
    assert listings.unit_rows(read) == listings.unit_rows(registry.read_view())
    assert [(r.unit, r.machine, r.ip) for r in listings.unit_rows(read)] == [
        ("a.service", "m2", "10.0.0.2")
    ]


def test_a_view_read_piecewise_is_the_view_read_at_once(
    registry: Registry, units_dir: Path
) -> None:
    """read_view(piecewise=True) (the API server's: one family per request, at one
    revision): the same view as one transaction, even with writes going on after it."""
    operations.start(registry, [write(units_dir, f"{n}.service") for n in "abc"])
    lease = registry.grant_lease(30)
    registry.register_machine(MachineRecord("m1", "10.0.0.1"), lease)
    registry.report_states([UnitState("a.service", "m1", "loaded", "active", "running")], lease)
    whole = registry.read_view(with_text=False)
    assert registry.read_view(with_text=False, piecewise=True) == whole
    original = registry._etcd.range
    written: list[str] = []

    def writes_meanwhile(*args: object, **kwargs: object) -> object:
        written.append(f"x{len(written)}.service")  # before each family's read
        operations.start(registry, [write(units_dir, written[-1])])
        return original(*args, **kwargs)  # type: ignore[arg-type]

    registry._etcd.range = writes_meanwhile  # type: ignore[method-assign,assignment]
    try:
        pieces = registry.read_view(with_text=False, piecewise=True)
    finally:
        registry._etcd.range = original  # type: ignore[method-assign]
    assert len(written) == 7  # a request per family
    assert set(pieces.units) == set(whole.units) | {"x0.service"}  # at the first's revision
