"""The live view's own bookkeeping against a real etcd: batches of an earlier read are
dropped, a watch that lags behind another is still applied, and neither a reader's
failing listener nor an unexpected error in a step stops the view.

Here: the tests that need the session's etcd or a short-lived helper process (README "Tests"); the others are in
tests/pure/test_view.py."""

from __future__ import annotations

from fleetpy.live_view import LiveView
from fleetpy.model.events import MachineEvent, WatchBatch
from fleetpy.model.records import MachineRecord
from fleetpy.registry import Registry

from support.waiting import until


def test_a_lagging_watch_is_applied_and_an_old_reads_batches_are_not(registry: Registry) -> None:
    live = LiveView(registry)
    try:
        base = live.view.revision
        # m2 through a watch that is ahead, then m1 through one that lags behind it
        live._on(live.generation, WatchBatch((MachineEvent("m2", MachineRecord("m2")),), base + 9))
        assert list(live.update().machines) == ["m2"]
        live._on(live.generation, WatchBatch((MachineEvent("m1", MachineRecord("m1")),), base + 5))
        # a watch of the read before this one, delivering after its cancel
        live._on(
            live.generation - 1, WatchBatch((MachineEvent("m3", MachineRecord("m3")),), base + 7)
        )
        view = live.update()
        assert sorted(view.machines) == ["m1", "m2"]
        assert view.revision == base + 9
    finally:
        live.close()


def test_a_failing_listener_does_not_stop_the_view(registry: Registry) -> None:
    live = LiveView(registry)
    seen: list[int] = []

    def broken(view: object, touched: object) -> None:
        raise KeyError("a reader's bug")

    live.subscribe(broken)
    live.subscribe(lambda view, touched: seen.append(len(view.machines)))
    live.follow()
    try:
        lease = registry.grant_lease(30)
        registry.register_machine(MachineRecord("m1"), lease)
        until(lambda: seen and seen[-1] == 1, what="the second listener told")
        registry.register_machine(MachineRecord("m2"), lease)
        until(lambda: len(live.current().machines) == 2, what="the view still following")
    finally:
        live.close()
