"""cordon, drain, uncordon and maintenance windows: engines and simulated agents in this
process against a real etcd, and the CLI's refusals."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import replace

import pytest

from fleetpy.api import fleetv1
from fleetpy.api.dashboard_model import Dashboard, document
from fleetpy.client import drain
from fleetpy.drain import CANNOT_LEAVE, moved_off, moving
from fleetpy.engine import Engine
from fleetpy.errors import DrainError
from fleetpy.live_view import LiveView, touched
from fleetpy.model.changes import UnitChange
from fleetpy.model.cordons import CordonEvent, CordonMode, CordonRecord
from fleetpy.model.records import MachineRecord
from fleetpy.registry import Registry
from fleetpy.states import DesiredState

from support.cli_helpers import one_error_line
from support.cli_run import Run
from support.sim_cluster import Cluster, never_twice, unit, watch
from support.waiting import until


def test_drain_moves_units_a_few_at_a_time_and_keeps_what_cannot_leave(cluster: Cluster) -> None:
    cluster.agent("m1", disk="ssd")
    cluster.engine()
    units = [unit(f"u{i}.service") for i in range(4)]
    units += [
        unit("a.service"),
        unit("side.service", "MachineOf=a.service"),
        unit("ssd.service", "MachineMetadata=disk=ssd"),
    ]
    cluster.registry.change_units(units)
    until(lambda: len(cluster.running()) == 7, what="7 units active on m1")
    # Units take a second to start where they go: max-unavailable has something to count.
    cluster.agent("m2", start_seconds=1.0)
    cluster.agent("m3", start_seconds=1.0)

    def at_most_two_on_their_way() -> None:
        progress = drain.drain_progress(cluster.registry, "m1")
        assert len(progress.moving) <= 2, f"{len(progress.moving)} moving at once"

    stop, seen = watch(at_most_two_on_their_way)
    stop_twice, twice = watch(never_twice(cluster))
    assert drain.start_drain(cluster.registry, "m1", 2) == "m1"
    progress = drain.wait_drain(cluster.registry, "m1", 60, lambda p: None)
    stop.set()
    stop_twice.set()
    assert seen == [] and twice == []
    assert progress.done and progress.remaining == () and progress.moving == {}
    assert progress.stuck == {"ssd.service": "no machine has disk=ssd"}
    placement = cluster.placement()
    assert placement["ssd.service"] == "m1"
    assert placement["a.service"] == placement["side.service"] != "m1"
    running = cluster.running()
    assert {u for u, m in running.items() if m == "m1"} == {"ssd.service"}
    assert len(running) == 7
    reasons = cluster.registry.read_view().reasons
    assert reasons == {"ssd.service": CANNOT_LEAVE + "m1: no machine has disk=ssd"}
    # Cordoned: a new unit goes elsewhere, even one that would have gone to the emptiest.
    cluster.registry.change_units([unit("new.service")])
    until(lambda: "new.service" in cluster.running(), what="new.service placed")
    assert cluster.placement()["new.service"] != "m1"
    # Uncordoned: m1 takes units again, and the one that could not leave says nothing.
    assert drain.uncordon(cluster.registry, "m1") == ("m1", True)
    until(lambda: cluster.registry.read_view().reasons == {}, what="reasons cleared")
    cluster.registry.change_units([unit("later.service")])
    until(lambda: cluster.running().get("later.service") == "m1", what="later.service on m1")
    assert cluster.placement()["ssd.service"] == "m1"


def test_a_drain_goes_on_across_an_engine_failover(cluster: Cluster) -> None:
    cluster.agent("m1")
    first = cluster.engine()
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(4)])
    until(lambda: len(cluster.running()) == 4, what="4 units on m1")
    cluster.agent("m2", start_seconds=1.0)
    second = cluster.engine()
    stop_twice, twice = watch(never_twice(cluster))
    drain.start_drain(cluster.registry, "m1", 1)
    until(
        lambda: any(
            r.startswith(moved_off("m1", "m2")[:20])
            for r in cluster.registry.read_view().reasons.values()
        ),
        what="a unit on its way",
    )
    leader = first if first.is_leader.is_set() else second
    leader.stop()  # mid-drain: the other engine reads where it stands from etcd
    progress = drain.wait_drain(cluster.registry, "m1", 60, lambda p: None)
    stop_twice.set()
    assert twice == []
    assert progress.done and progress.stuck == {}
    assert cluster.running() == {f"u{i}.service": "m2" for i in range(4)}


def test_two_drains_at_once_and_a_drain_run_again(cluster: Cluster) -> None:
    for machine in ("m1", "m2", "m3"):
        cluster.agent(machine)
    cluster.engine()
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(6)])
    until(lambda: len(cluster.running()) == 6, what="6 units")
    drain.start_drain(cluster.registry, "m1", 1)
    drain.start_drain(cluster.registry, "m2", 3)
    drain.start_drain(cluster.registry, "m1", 2)  # again: the same drain, a new limit
    for machine in ("m1", "m2"):
        assert drain.wait_drain(cluster.registry, machine, 60, lambda p: None).done
    assert set(cluster.running().values()) == {"m3"}
    assert len(cluster.running()) == 6
    cordons = cluster.registry.cordons()
    assert cordons["m1"].mode is CordonMode.DRAINING and cordons["m1"].max_unavailable == 2


def test_the_last_machine_is_drained_of_nothing(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.engine()
    cluster.registry.change_units([unit("a.service")])
    until(lambda: cluster.running() == {"a.service": "m1"}, what="a on m1")
    drain.start_drain(cluster.registry, "m1", 1)
    progress = drain.wait_drain(cluster.registry, "m1", 30, lambda p: None)
    assert progress.stuck == {"a.service": "every live machine is cordoned"}
    assert cluster.running() == {"a.service": "m1"}


def test_a_maintenance_window_holds_units_through_a_reboot(cluster: Cluster) -> None:
    cluster.agent("m1", ttl=1)
    cluster.agent("m2", ttl=1)
    cluster.engine()
    cluster.registry.change_units([unit("a.service", "MachineID=m1"), unit("b.service")])
    until(lambda: len(cluster.running()) == 2, what="both active")
    cluster.registry.change_units([unit("c.service", "MachineOf=b.service")])
    until(lambda: len(cluster.running()) == 3, what="three active")
    before = cluster.placement()
    host = before["b.service"]
    drain.start_maintenance(cluster.registry, host, 30)
    cluster.agents[host].stop(revoke=False)  # rebooting: its lease runs out
    until(lambda: host not in cluster.registry.list_machines(), what="its lease ended")
    until(
        lambda: "maintenance window" in cluster.registry.read_view().reasons.get("b.service", ""),
        what="b held, saying why",
    )
    threading.Event().wait(3)  # several TTLs: nothing moves
    assert cluster.placement() == before
    cluster.agent(host, ttl=1)  # back from the reboot: its units start there again
    until(lambda: cluster.running() == before, what="units active on the same machines")
    assert drain.uncordon(cluster.registry, host) == (host, True)


def test_a_maintenance_window_ends_and_units_move(cluster: Cluster) -> None:
    cluster.agent("m1", ttl=1)
    cluster.agent("m2", ttl=1)
    cluster.engine()
    cluster.registry.change_units([unit("b.service")])
    until(lambda: len(cluster.running()) == 1, what="b active")
    host = cluster.placement()["b.service"]
    other = "m2" if host == "m1" else "m1"
    drain.start_maintenance(cluster.registry, host, 3)
    cluster.agents[host].stop(revoke=False)
    until(lambda: host not in cluster.registry.list_machines(), what="its lease ended")
    assert cluster.placement() == {"b.service": host}
    # etcd drops the record with its lease: the machine is judged lost, its units move.
    until(lambda: cluster.running() == {"b.service": other}, timeout=20, what="b moved")
    assert cluster.registry.cordons() == {}


def test_refusals_are_one_line(run: Run, registry: Registry) -> None:
    with pytest.raises(DrainError, match="no machine with an id starting 'nope'"):
        drain.start_drain(registry, "nope", 1)
    with pytest.raises(DrainError, match="expected 1 or more"):
        drain.start_drain(registry, "nope", 0)
    for args, message in [
        (["drain", "nope"], "no machine with an id starting 'nope' is known"),
        (["cordon", "nope"], "no machine with an id starting 'nope' is known"),
        (["drain", "nope", "--max-unavailable", "0"], "--max-unavailable 0: expected 1 or more"),
        (["drain", "nope", "--no-move"], "--no-move and --window go together"),
        (["drain", "nope", "--no-move", "--include-global"], "does not go with --no-move"),
        (["drain", "nope", "--no-move", "--window", "soon"], "expected a duration"),
        (["drain", "nope", "--no-move", "--window", "30d"], "expected a duration"),
        (["drain", "nope", "--no-move", "--window", "900h"], "expected 1 s to 7 days"),
        (["drain", "nope", "--timeout", "0"], "expected seconds, more than 0"),
    ]:
        result = run(*args)
        assert result.exit_code != 0, args
        assert message in one_error_line(result), (args, result.stderr)
    assert registry.cordons() == {}


def test_a_dead_machine_is_not_drained(cluster: Cluster, run: Run) -> None:
    cluster.agent("m1", ttl=1)
    cluster.agent("m2", ttl=1)
    engine = cluster.engine()
    cluster.registry.change_units([unit("a.service", "MachineID=m1")])
    until(lambda: cluster.running() == {"a.service": "m1"}, what="a on m1")
    engine.stop()  # nobody moves it: m1 stays the machine a.service is scheduled on
    cluster.agents["m1"].stop(revoke=False)
    until(lambda: "m1" not in cluster.registry.list_machines(), what="m1 gone")
    result = run("drain", "m1")
    assert "machine m1 is not reporting" in one_error_line(result)
    result = run("cordon", "m1")  # a cordon waits for it: it takes nothing new when back
    assert result.exit_code == 0, result.stderr
    assert "Cordoned machine m1" in result.stdout
    assert list(cluster.registry.cordons()) == ["m1"]


def test_cli_cordon_drain_uncordon(cluster: Cluster, run: Run) -> None:
    cluster.agent("m1")
    cluster.agent("m2")
    cluster.engine()
    cluster.registry.change_units([unit("a.service", "MachineID=m1"), unit("b.service")])
    until(lambda: len(cluster.running()) == 2, what="both active")
    result = run("drain", "m1", "--timeout", "20")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "Unit a.service stays on machine m1: MachineID=m1 pins it to that machine"
    ]
    assert cluster.running() == {"a.service": "m1", "b.service": "m2"}
    assert "cannot leave it" in one_error_line(result, progress=True)
    listed = run("list-machines", "--no-legend", "--fields", "machine,cordon").stdout
    assert listed.split() == ["m1", "draining", "(max", "1)", "m2", "-"]
    result = run("drain", "m2", "--no-move", "--window", "15m")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Machine m2 in maintenance until ")
    machines = json.loads(run("list-machines", "-o", "json").stdout)
    window = machines[1]["cordon"]
    assert window["mode"] == "cordoned" and window["maintenanceUntil"] > window["at"] + 899
    assert "maintenance until" in run("list-machines").stdout
    result = run("uncordon", "m1")
    assert (result.exit_code, result.stdout.strip()) == (0, "Uncordoned machine m1")
    result = run("uncordon", "m1")
    assert (result.exit_code, result.stdout.strip()) == (0, "Machine m1 was not cordoned")
    assert run("uncordon", "m2").exit_code == 0
    # Nothing cordoned: list-machines shows fleetctl's columns only.
    assert run("list-machines").stdout.split()[:3] == ["MACHINE", "IP", "METADATA"]
    assert "CORDON" not in run("list-machines").stdout


def test_the_api_and_the_dashboard_show_a_cordon(registry: Registry) -> None:
    registry.register_machine(MachineRecord("m1", "10.0.0.1"), registry.grant_lease(30))
    live = LiveView(registry)
    try:
        dashboard = Dashboard()
        dashboard.rebuild(live.view, None, {})
        registry.put_cordon(CordonRecord("m1", CordonMode.DRAINING, 2))
        until(lambda: "m1" in live.update().cordons, what="the view to see the cordon")
        view = live.update()
        assert fleetv1.machine_rows(view)[0][1]["fleetpy"]["cordon"]["maxUnavailable"] == 2
        assert document(view, None, {})["machines"][0]["cordon"] == "draining (max 2)"
        changed = touched([CordonEvent("m1", None)]).machines
        delta = dashboard.update(view, [], changed, None, {})
        assert delta is not None and b"draining (max 2)" in delta
        registry.remove_cordon("m1")
        until(lambda: live.update().cordons == {}, what="the view to see it gone")
        assert "fleetpy" not in fleetv1.machine_rows(live.update())[0][1]
    finally:
        live.close()


def test_a_backup_holds_cordons_but_not_maintenance_windows(registry: Registry) -> None:
    registry.put_cordon(CordonRecord("m1", CordonMode.DRAINING, 2))
    registry.put_cordon(CordonRecord("m2", maintenance_until=1.0), window=60)
    _, keys = registry.read_desired()
    assert sorted(k for k in keys if k.startswith("cordon/")) == ["cordon/m1"]


def test_global_units_stay_unless_the_drain_includes_them(cluster: Cluster) -> None:
    cluster.agent("m1")
    cluster.agent("m2")
    cluster.engine()
    cluster.registry.change_units([unit("g.service", "Global=true", is_global=True)])

    def global_on() -> set[str]:
        return set(cluster.registry.list_states().get("g.service", {}))

    until(lambda: global_on() == {"m1", "m2"}, what="g on both machines")
    drain.start_drain(cluster.registry, "m1", 1)
    assert drain.wait_drain(cluster.registry, "m1", 30, lambda p: None).done
    time.sleep(0.5)
    assert global_on() == {"m1", "m2"}  # a drain leaves global units where they run
    drain.start_drain(cluster.registry, "m1", 1, include_global=True)
    until(lambda: global_on() == {"m2"}, what="g stopped on m1 only")
    assert [name for name, machine in cluster.hosted() if machine == "m1"] == []
    # An agent restarted while its machine drains reads it again: g stays off.
    cluster.agents["m1"].stop()
    cluster.agent("m1")
    time.sleep(0.5)
    assert global_on() == {"m2"}
    drain.uncordon(cluster.registry, "m1")
    until(lambda: global_on() == {"m1", "m2"}, what="g back on m1")


def test_a_drain_run_again_after_the_cli_went_away_waits_for_the_rest(
    cluster: Cluster, run: Run
) -> None:
    cluster.agent("m1")
    cluster.engine()
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(3)])
    until(lambda: len(cluster.running()) == 3, what="3 units on m1")
    cluster.agent("m2", start_seconds=0.5)
    result = run("drain", "m1", "--no-block")  # as a CLI killed once the record is written
    assert (result.exit_code, result.stdout) == (0, "Draining machine m1\n")
    result = run("drain", "m1", "--timeout", "60")
    assert (result.exit_code, result.stdout) == (0, "Machine m1 drained\n"), result.stderr
    assert "machine m1: " in result.stderr  # its progress
    assert cluster.running() == {f"u{i}.service": "m2" for i in range(3)}


def test_a_drain_that_times_out_says_what_is_left(cluster: Cluster, run: Run) -> None:
    cluster.agent("m1")
    cluster.engine()
    text = "[Service]\nExecStart=/bin/false\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    failing = UnitChange("bad.service", DesiredState.LAUNCHED, text, digest)
    cluster.registry.change_units([failing, unit("ok.service")])
    until(lambda: len(cluster.placement()) == 2, what="both placed on m1")
    cluster.agent("m2")
    assert run("drain", "m1", "--no-block").exit_code == 0
    # bad.service leaves first (one at a time) and fails on m2: the engine's pass, the move
    # and m2's report are waited for here (seconds under load), so the drain run again
    # below ends on them however slow the machine, after its 3 s.

    def failed_on_m2() -> bool:
        reason = cluster.registry.read_view().reasons.get("bad.service", "")
        state = cluster.registry.list_states().get("bad.service", {}).get("m2")
        return moving(reason) == ("m1", "m2") and state is not None and state.active == "failed"

    until(failed_on_m2, what="bad.service on its way to m2 and failed there")
    result = run("drain", "m1", "--timeout", "3")
    line = one_error_line(result, progress=True)
    assert "drain of machine m1 not finished after 3s: " in line
    assert "1 not active where they went (bad.service on m2: failed (it failed there))" in line
    assert "run `fleetpy drain` again to wait" in line
    # ok.service waits behind it (one at a time), and the record stays for the next run.
    assert cluster.placement()["ok.service"] == "m1"
    assert list(cluster.registry.cordons()) == ["m1"]


def no_periodic_full_reads(engine: Engine) -> None:
    """For a test counting ENGINE's passes: no periodic full read (every 5 s) meanwhile.
    One counts in full_reads a moment before its pass counts in passes (the read's last
    steps and its garbage collection come between: longer under load), so a count taken
    in between was one short."""
    engine.settings = replace(engine.settings, reconcile_interval=60)


def test_units_on_their_way_cost_a_pass_when_they_arrive_not_every_second(
    cluster: Cluster,
) -> None:
    cluster.agent("m1")
    engine = cluster.engine()
    no_periodic_full_reads(engine)
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(2)])
    until(lambda: len(cluster.running()) == 2, what="2 units on m1")
    cluster.agent("m2", start_seconds=4.0)  # each moved unit activating 4 s: 4 looks
    until(lambda: engine.stats.passes > 0, what="a first pass")

    def passes() -> int:  # but those after the engine's periodic full reads (every 5 s)
        return engine.stats.passes - engine.stats.full_reads

    before = passes()
    drain.start_drain(cluster.registry, "m1", 1)
    assert drain.wait_drain(cluster.registry, "m1", 60, lambda p: None).done
    # One pass for the cordon (the first unit leaves), one per arrival (the next leaves);
    # the looks in between read those units' states and plan nothing (was one pass each).
    assert passes() - before <= 3
    assert cluster.running() == {"u0.service": "m2", "u1.service": "m2"}


def test_a_unit_that_cannot_leave_costs_no_pass_while_the_machine_drains(
    cluster: Cluster,
) -> None:
    cluster.agent("m1")
    engine = cluster.engine()
    no_periodic_full_reads(engine)
    cluster.registry.change_units([unit("a.service")])
    until(lambda: cluster.running() == {"a.service": "m1"}, what="a on m1")
    drain.start_drain(cluster.registry, "m1", 1)
    progress = drain.wait_drain(cluster.registry, "m1", 30, lambda p: None)
    assert progress.stuck == {"a.service": "every live machine is cordoned"}
    passes = engine.stats.passes - engine.stats.full_reads  # (one every 5 s: a pass each)
    time.sleep(3)  # it is tried again when the cluster changes, not once a second
    assert engine.stats.passes - engine.stats.full_reads == passes
    cluster.agent("m2")  # a change: it leaves
    until(lambda: cluster.running() == {"a.service": "m2"}, what="a moved to m2")
