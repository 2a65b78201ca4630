"""Registry against a real etcd: records, transactions under races, leases, watches."""

from __future__ import annotations

import hashlib
import itertools
import queue
import threading
import time

import pytest

from fleetpy.errors import RegistryError, StateError, UnknownUnitError
from fleetpy.registry import (
    MachineRecord,
    PlaceUnit,
    Registry,
    RegistryConfig,
    ScheduleEntry,
    UnitChange,
    UnitEvent,
    UnitState,
    WatchBatch,
)
from fleetpy.states import DesiredState


def change(
    name: str,
    text: str = "[Service]\nExecStart=/bin/true\n",
    desired: str | None = None,
    **kw: object,
) -> UnitChange:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return UnitChange(name=name, text=text, hash=digest, desired=desired, **kw)  # type: ignore[arg-type]


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
    registry.change_units([change("a.service", desired="launched")])
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
        [UnitChange("web@1.service", desired="launched", template="web@.service")]
    )
    tmpl, inst = registry.get_unit("web@.service"), registry.get_unit("web@1.service")
    assert inst is not None and tmpl is not None and inst.hash == tmpl.hash
    with pytest.raises(UnknownUnitError, match="nor its template"):
        registry.change_units(
            [UnitChange("db@1.service", desired="launched", template="db@.service")]
        )


def test_global_units_are_mirrored_for_agents(registry: Registry) -> None:
    registry.change_units([change("mon.service", desired="launched", is_global=True)])
    _, placed, globals_ = registry.read_machine_schedule("m1")
    assert placed == {} and globals_["mon.service"].desired == "launched"
    assert "ExecStart" in globals_["mon.service"].text
    registry.change_units([UnitChange("mon.service", desired="loaded")])
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
                state = ("loaded", "launched")[(n + round_) % 2]
                reg.change_units(
                    [UnitChange(f"u{i}.service", desired=state) for i in range(10)]
                    + [change(f"own{n}-{round_}.service", desired="launched")]
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
    registry.change_units([change("a.service", desired="launched")])
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
    deadline = time.monotonic() + 5
    while "m1" in registry.list_machines() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert registry.list_machines() == {} and registry.list_states() == {}


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


def test_unreachable_etcd_names_the_endpoint() -> None:
    start = time.monotonic()
    with pytest.raises(RegistryError, match="127.0.0.1:1"):
        Registry(RegistryConfig(endpoints=("http://127.0.0.1:1",), timeout=1.0)).list_units()
    assert time.monotonic() - start < 5


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
