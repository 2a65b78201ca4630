"""Registry against a real etcd: records, transactions under races, leases, watches.

Here: the tests that need the session's etcd or a short-lived helper process (README "Tests"); the others are in
tests/pure/test_registry.py."""

from __future__ import annotations

import hashlib
import itertools
import queue
import threading

import pytest

from fleetpy.errors import MetadataError, StateError, UnknownUnitError
from fleetpy.metadata import MetadataChange
from fleetpy.model.changes import PlaceUnit, UnitChange
from fleetpy.model.events import MachineEvent, MetadataEvent, UnitEvent, WatchBatch
from fleetpy.model.records import MachineRecord, ScheduleEntry, UnitState
from fleetpy.registry import Registry, RegistryConfig
from fleetpy.registry.transport import prefix_range_end
from fleetpy.states import DesiredState

from support.etcd_transport import transport
from support.waiting import until


def change(
    name: str,
    text: str = "[Service]\nExecStart=/bin/true\n",
    desired: DesiredState | None = None,
    is_global: bool = False,
) -> UnitChange:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return UnitChange(name=name, text=text, hash=digest, desired=desired, is_global=is_global)


def test_submit_stores_content_once_and_records_inactive(registry: Registry) -> None:
    text = "[Service]\nExecStart=/bin/true\n"
    registry.change_units([change("a.service", text), change("b.service", text)])
    units = registry.list_units()
    assert {u.desired for u in units.values()} == {"inactive"}
    assert units["a.service"].hash == units["b.service"].hash
    assert registry.get_content(units["a.service"].hash) == text
    assert list(registry.list_content()) == [units["a.service"].hash]


def test_resubmit_same_content_is_a_noop_and_different_content_is_refused(
    registry: Registry,
) -> None:
    registry.change_units([change("a.service", desired=DesiredState.LAUNCHED)])
    registry.change_units([change("a.service")])
    assert registry.get_unit("a.service").desired == "launched"  # type: ignore[union-attr]
    with pytest.raises(StateError, match="different contents"):
        registry.change_units([change("a.service", "[Service]\nExecStart=/bin/false\n")])


def test_failed_batch_writes_nothing(registry: Registry) -> None:
    registry.change_units([change("a.service")])
    with pytest.raises(StateError):
        registry.change_units(
            [change("new.service"), change("a.service", "[Service]\nExecStart=/bin/false\n")]
        )
    assert registry.get_unit("new.service") is None


def test_instance_takes_template_content(registry: Registry) -> None:
    registry.change_units([change("web@.service")])
    registry.change_units(
        [UnitChange("web@1.service", desired=DesiredState.LAUNCHED, template="web@.service")]
    )
    tmpl, inst = registry.get_unit("web@.service"), registry.get_unit("web@1.service")
    assert inst is not None and tmpl is not None and inst.hash == tmpl.hash
    with pytest.raises(UnknownUnitError, match="nor its template"):
        registry.change_units(
            [UnitChange("db@1.service", desired=DesiredState.LAUNCHED, template="db@.service")]
        )


def test_global_units_are_mirrored_for_agents(registry: Registry) -> None:
    registry.change_units([change("mon.service", desired=DesiredState.LAUNCHED, is_global=True)])
    _, placed, globals_, _ = registry.read_machine_schedule("m1")
    assert placed == {} and globals_["mon.service"].desired == "launched"
    assert "ExecStart" in globals_["mon.service"].text
    registry.change_units([UnitChange("mon.service", desired=DesiredState.LOADED)])
    assert registry.read_machine_schedule("m1")[2]["mon.service"].desired == "loaded"
    registry.destroy_units(["mon.service"])
    assert registry.read_machine_schedule("m1")[2] == {}


def test_racing_clients_never_lose_an_update(registry_config: RegistryConfig) -> None:
    """20 clients flip desired states of shared units; the last write of each unit wins whole."""
    setup = Registry(registry_config)
    setup.change_units([change(f"u{i}.service") for i in range(10)])
    errors: list[BaseException] = []

    def client(n: int) -> None:
        reg = Registry(registry_config)
        try:
            for round_ in range(5):
                state = (DesiredState.LOADED, DesiredState.LAUNCHED)[(n + round_) % 2]
                reg.change_units(
                    [UnitChange(f"u{i}.service", desired=state) for i in range(10)]
                    + [change(f"own{n}-{round_}.service", desired=DesiredState.LAUNCHED)]
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            reg.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    units = setup.list_units()
    assert len(units) == 10 + 20 * 5
    assert all(
        units[f"own{n}-{r}.service"].desired == "launched" for n in range(20) for r in range(5)
    )
    # each transaction set all 10 shared units at once, so they agree with each other
    assert len({units[f"u{i}.service"].desired for i in range(10)}) == 1
    setup.close()


def test_read_view_is_consistent(registry: Registry) -> None:
    registry.change_units([change("a.service", desired=DesiredState.LAUNCHED)])
    lease = registry.grant_lease(10)
    registry.register_machine(MachineRecord("m1", "10.0.0.1", {"region": "north"}), lease)
    registry.report_states([UnitState("a.service", "m1", "loaded", "active", "running")], lease)
    view = registry.read_view()
    assert view.units["a.service"].desired == "launched"
    assert view.machines["m1"].metadata == {"region": "north"}
    assert view.states["a.service"]["m1"].sub == "running"
    assert view.revision >= view.units["a.service"].revision


def test_machine_and_states_vanish_with_the_lease(registry: Registry) -> None:
    lease = registry.grant_lease(1)
    registry.register_machine(MachineRecord("m1"), lease)
    registry.report_states([UnitState("a.service", "m1", "loaded", "active", "running")], lease)
    assert "m1" in registry.list_machines()
    # etcd holds a lease 2 s at least (its minimum TTL), then drops it at its next check:
    # ~2.5 s on a quiet machine.
    until(lambda: "m1" not in registry.list_machines(), 15, "the lease to run out", 0.05)
    assert registry.list_machines() == {} and registry.list_states() == {}


def test_a_machine_registers_with_what_it_runs_in_one_transaction(
    registry: Registry, registry_config: RegistryConfig
) -> None:
    """Whoever sees the machine join sees its states: a restore's adoption reads them."""
    seen: queue.Queue[WatchBatch[MachineEvent]] = queue.Queue()
    cancel = registry.watch_machines(seen.put, registry.revision() + 1)
    try:
        lease = registry.grant_lease(30)
        states = [UnitState(f"u{i}.service", "m1", "loaded", "active", "running") for i in range(3)]
        registry.register_machine(MachineRecord("m1"), lease, states)
        joined = seen.get(timeout=5)
    finally:
        cancel()
    # Written in the record's transaction: at the revision the machine joined.
    start = f"{registry_config.prefix}/state/m1/"
    with transport(*registry_config.endpoints) as raw:
        kvs = raw.range(start, prefix_range_end(start)).kvs
    assert len(kvs) == 3 and {kv.mod_revision for kv in kvs} == {joined.revision}
    # More than one transaction holds: the rest follow at once.
    many = [UnitState(f"v{i:03d}.service", "m2", "loaded", "active", "running") for i in range(300)]
    registry.register_machine(MachineRecord("m2"), lease, many)
    assert len([n for n in registry.list_states() if n.startswith("v")]) == 300
    assert registry.running_units()["v299.service"] == ("m2", "")


def test_leader_election_and_fencing(registry: Registry) -> None:
    lease_a, lease_b = registry.grant_lease(10), registry.grant_lease(10)
    assert registry.campaign("a", lease_a)
    assert not registry.campaign("b", lease_b)
    entry = ScheduleEntry("x.service", "ab" * 32, DesiredState.LAUNCHED, "")
    assert registry.engine_write("a", [[PlaceUnit("m1", entry)]])
    assert not registry.engine_write("b", [[PlaceUnit("m2", entry)]])
    registry.revoke_lease(lease_a)
    # the old leader's lease is gone: it can write nothing any more
    assert not registry.engine_write("a", [[PlaceUnit("m3", entry)]])
    assert registry.campaign("b", lease_b)
    view = registry.read_view()
    assert view.schedule == {"x.service": ("m1", entry)}


def test_watch_sees_changes_from_a_revision(registry: Registry) -> None:
    revision = registry.read_view().revision
    registry.change_units([change("a.service")])
    batches: queue.Queue[WatchBatch[UnitEvent]] = queue.Queue()
    cancel = registry.watch_units(batches.put, revision + 1)
    batch = batches.get(timeout=5)
    assert [(e.name, e.record is not None) for e in batch.events] == [("a.service", True)]
    registry.destroy_units(["a.service"])
    batch = batches.get(timeout=5)
    assert [(e.name, e.record) for e in batch.events] == [("a.service", None)]
    cancel()


def test_engine_writes_are_batched_within_etcds_limits(registry: Registry) -> None:
    lease = registry.grant_lease(10)
    assert registry.campaign("e", lease)
    text = "[Service]\nExecStart=/bin/true\n" + "#" * 50_000
    groups = [
        [
            PlaceUnit(
                f"m{i % 3}", ScheduleEntry(f"u{i}.service", "cd" * 32, DesiredState.LAUNCHED, text)
            )
        ]
        for i in range(60)
    ]  # 3 MB in all: etcd takes at most 1.5 MiB per request
    written: list[tuple[int, int]] = []
    assert registry.engine_write("e", groups, lambda start, end: written.append((start, end)))
    assert written[0][0] == 0 and written[-1][1] == 60 and len(written) >= 3
    assert all(a[1] == b[0] for a, b in itertools.pairwise(written))
    assert len(registry.read_view().schedule) == 60


def test_content_gc_spares_rewritten_blobs(registry: Registry) -> None:
    registry.change_units([change("a.service")])
    listed = registry.list_content()
    registry.destroy_units(["a.service"])
    registry.change_units([change("b.service")])  # same content, re-put
    assert registry.delete_content(listed) == 0
    registry.destroy_units(["b.service"])
    assert registry.delete_content(registry.list_content()) == 1


def test_watch_from_a_compacted_revision_says_so(registry: Registry) -> None:
    registry.change_units([change("a.service")])
    old = registry.read_view().revision
    registry.change_units([change("b.service")])
    registry.change_units([change("c.service")])
    registry._etcd.compact(registry.read_view().revision)
    batches: queue.Queue[WatchBatch[UnitEvent]] = queue.Queue()
    registry.watch_units(batches.put, old)
    batch = batches.get(timeout=5)
    assert batch.error is not None and batch.compacted


# ----------------------------------------------------------------------------- machine metadata


def test_operator_metadata_overlays_the_agents_and_outlives_its_lease(registry: Registry) -> None:
    lease = registry.grant_lease(10)
    registry.register_machine(MachineRecord("m1", "10.0.0.1", {"role": "db", "az": "a"}), lease)
    revision = registry.change_metadata(
        [
            MetadataChange("m1", "role", "web"),
            MetadataChange("m1", "az", None),  # hides the agent's own
            MetadataChange("m9", "rack", "r9"),  # not registered (yet): waits for it
        ]
    )
    view = registry.read_view()
    assert view.revision >= revision
    assert view.machines["m1"].metadata == {"role": "web"}
    assert view.machines["m1"].own_metadata == {"role": "db", "az": "a"}
    assert view.overlays == {"m1": {"role": "web", "az": None}, "m9": {"rack": "r9"}}
    assert registry.list_machines()["m1"].metadata == {"role": "web"}
    # The agent goes away and registers again (a restart): the operator's change stays.
    registry.revoke_lease(lease)
    assert registry.list_machines() == {}
    lease = registry.grant_lease(10)
    registry.register_machine(MachineRecord("m1", "10.0.0.1", {"role": "db", "az": "a"}), lease)
    registry.register_machine(MachineRecord("m9", "10.0.0.9", {"rack": "r1"}), lease)
    machines = registry.list_machines()
    assert machines["m1"].metadata == {"role": "web"}
    assert machines["m9"].metadata == {"rack": "r9"}
    assert registry.machine_overlay("m1")[1] == {"role": "web", "az": None}
    assert registry.machine_overlay("m2")[1] == {}


def test_one_patch_is_one_transaction_and_a_refused_one_writes_nothing(
    registry: Registry,
) -> None:
    before = registry.read_view().revision
    revision = registry.change_metadata(
        [MetadataChange(f"m{i}", "k", "v") for i in range(10)] + [MetadataChange("m1", "j", "w")]
    )
    assert revision == before + 1  # ten keys, one etcd revision
    with pytest.raises(MetadataError, match="machines in one change"):
        registry.change_metadata([MetadataChange(f"x{i}", "k", "v") for i in range(100)])
    full = [MetadataChange("m1", f"k{i}", "v") for i in range(70)]
    with pytest.raises(MetadataError, match="too much operator metadata for machine m1"):
        registry.change_metadata([MetadataChange("m2", "k", "changed"), *full])
    with pytest.raises(MetadataError, match="invalid machine id"):
        registry.change_metadata(
            [MetadataChange("m2", "k", "changed"), MetadataChange("a/b", "k", "v")]
        )
    view = registry.read_view()
    assert view.revision == revision
    assert view.overlays["m2"] == {"k": "v"} and view.overlays["m1"] == {"k": "v", "j": "w"}


def test_racing_patches_of_one_machine_both_land(registry_config: RegistryConfig) -> None:
    clients = [Registry(registry_config) for _ in range(4)]
    try:
        threads = [
            threading.Thread(
                target=lambda c=c, n=n: [
                    c.change_metadata([MetadataChange("m1", f"k{n}-{i}", "v")]) for i in range(5)
                ]
            )
            for n, c in enumerate(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(clients[0].machine_overlay("m1")[1]) == 20  # no update lost
    finally:
        for c in clients:
            c.close()


def test_a_malformed_overlay_is_skipped_and_replaced(registry: Registry) -> None:
    warnings: list[str] = []
    reader = Registry(registry.config, warn=warnings.append)
    try:
        for raw in ('{"k": 5}', '{"k=": "v"}', "[]", '{"k": "a,b"}'):
            registry._etcd.put(registry.key("metadata", "m1"), raw)
            assert reader.read_view().overlays == {}
        assert len(warnings) == 4 and all("metadata/m1" in w for w in warnings)
        registry.change_metadata([MetadataChange("m1", "k", "v")])
        assert reader.machine_overlay("m1")[1] == {"k": "v"}
    finally:
        reader.close()


def test_metadata_watch_reports_changes(registry: Registry) -> None:
    seen: queue.Queue[MetadataEvent] = queue.Queue()

    def on_batch(batch: WatchBatch[MetadataEvent]) -> None:
        for event in batch.events:
            seen.put(event)

    revision, _ = registry.machine_overlay("m1")
    cancel_all = registry.watch_metadata(on_batch, revision + 1)
    cancel_one = registry.watch_metadata(on_batch, revision + 1, machine="m1")
    try:
        registry.change_metadata([MetadataChange("m2", "k", "v")])
        registry.change_metadata([MetadataChange("m1", "k", None)])
        got = [seen.get(timeout=5) for _ in range(3)]
        assert sorted(got, key=repr) == sorted(
            [
                MetadataEvent("m2", {"k": "v"}),
                MetadataEvent("m1", {"k": None}),
                MetadataEvent("m1", {"k": None}),
            ],
            key=repr,
        )
    finally:
        cancel_all()
        cancel_one()
