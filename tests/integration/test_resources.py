"""Resource-aware placement against a real etcd (issue 25 items 1-2): agents report their
machine's capacity and their units' usage (written again only past a threshold), the CLI
and the API show them, malformed sizes are refused at submit, and the engine places
reservations on 1,000 simulated machines where they fit, saying why not where not."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import Result

from fleetpy.agent import Agent
from fleetpy.api import fleetv1
from fleetpy.live_view import LiveView
from fleetpy.model.records import MachineRecord
from fleetpy.registry import Registry
from fleetpy.resources import Resources
from fleetpy.scheduler import ReasonKind, reason_kind
from fleetpy.unitfile.unit import fleet_options, parse_unit

from support.cli_helpers import SERVICE, one_error_line, snapshot, write
from support.cli_run import Run
from support.sim_cluster import Cluster, unit, watch
from support.waiting import until

pytestmark = pytest.mark.usefixtures("clean_env")

GiB = 1024**3
MiB = 1024**2


def table(result: Result) -> list[list[str]]:
    assert result.exit_code == 0, result.output
    return [line.split() for line in result.stdout.splitlines()]


def test_list_machines_and_the_api_show_capacity_and_usage(run: Run, registry: Registry) -> None:
    lease = registry.grant_lease(60)
    new, old = "a" * 32, "b" * 32
    registry.register_machine(
        MachineRecord(new, "10.0.0.1", capacity=Resources(8 * GiB, 4000), used=Resources(GiB, 250)),
        lease,
    )
    registry.register_machine(MachineRecord(old, "10.0.0.2"), lease)  # an agent before reports
    fields = "machine,cpus,memory,cpu-used,memory-used"
    assert table(run("list-machines", "--fields", fields)) == [
        ["MACHINE", "CPUS", "MEMORY", "CPU-USED", "MEMORY-USED"],
        ["aaaaaaaa", "4", "CPUs", "8", "GiB", "0.25", "CPUs", "1", "GiB"],
        ["bbbbbbbb", "-", "-", "-", "-"],
    ]
    assert table(run("list-machines"))[0] == ["MACHINE", "IP", "METADATA"]  # fleetctl's
    rows = json.loads(run("list-machines", "-o", "json").stdout)
    assert (rows[0]["capacity"], rows[0]["used"]) == (
        {"memory": 8 * GiB, "cpus": 4.0},
        {"memory": GiB, "cpus": 0.25},
    )
    assert (rows[1]["capacity"], rows[1]["used"]) == (None, None)
    live = LiveView(registry)
    try:
        machines = dict(fleetv1.machine_rows(live.view))
        assert machines[new]["fleetpy"] == {
            "capacity": {"memory": 8 * GiB, "cpus": 4.0},
            "used": {"memory": GiB, "cpus": 0.25},
        }
        assert "fleetpy" not in machines[old]  # fleet's machine, as before
    finally:
        live.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[Service]\nExecStart=/bin/db\nMemoryMax=2 GB\n",
            "invalid [Service] MemoryMax=2 GB in db.service (expected a size such as 512M",
        ),
        (
            "[Service]\nExecStart=/bin/db\n[X-Fleet]\nReserveMemory=lots\n",
            "invalid [X-Fleet] ReserveMemory=lots in db.service",
        ),
        (
            "[Service]\nExecStart=/bin/db\n[X-Fleet]\nReserveCPU=-1\n",
            "invalid [X-Fleet] ReserveCPU=-1 in db.service",
        ),
    ],
)
def test_malformed_sizes_are_refused_at_submit_in_one_line(
    run: Run, registry: Registry, units_dir: Path, text: str, message: str
) -> None:
    good = write(units_dir, "good.service", SERVICE)
    before = snapshot(registry)
    result = run("submit", good, write(units_dir, "db.service", text))
    assert result.exit_code == 1, result.output
    assert message in one_error_line(result)
    assert snapshot(registry) == before  # nothing written, the good unit neither


def test_agents_report_capacity_and_write_usage_again_only_past_a_threshold(
    cluster: Cluster,
) -> None:
    agent = cluster.agent("m1", ttl=1, capacity=Resources(8 * GiB, 4000))
    record = cluster.registry.list_machines()["m1"]
    assert (record.capacity, record.used) == (Resources(8 * GiB, 4000), Resources(0, 0))
    cluster.engine()
    cluster.registry.change_units([unit(f"u{i}.service") for i in range(30)])
    until(lambda: len(cluster.running()) == 30, timeout=30, what="30 units active")
    # 30 units of 16 MiB each (the simulated figure): 480 MiB, past 5 % of 8 GiB.
    until(
        lambda: cluster.registry.list_machines()["m1"].used == Resources(480 * MiB, 0),
        timeout=10,
        what="the usage written again",
    )
    agent.manager.memory_per_unit += MiB  # type: ignore[attr-defined]  # 30 MiB more: noise
    assert agent.resources.measure() == Resources(510 * MiB, 0)
    time.sleep(2)  # four lease renewals (ttl 1: one every 0.5 s), each measuring it
    assert cluster.registry.list_machines()["m1"].used == Resources(480 * MiB, 0)
    # Its own record written again wakes neither its loop nor its counts (it watches the
    # record only to see it deleted): once woke it per write, failing test_engine_scale.
    woken = agent.stats.wakeups
    agent.manager.memory_per_unit = 64 * MiB  # type: ignore[attr-defined]
    until(
        lambda: cluster.registry.list_machines()["m1"].used == Resources(30 * 64 * MiB, 0),
        what="the usage written again",
    )
    time.sleep(0.5)  # its watch has had the write
    assert agent.stats.wakeups == woken


def test_reservations_fit_on_a_thousand_simulated_machines(cluster: Cluster) -> None:
    """985 machines of 4 GiB and 2 CPUs, 10 of 32 GiB and 16 CPUs, 5 whose agents report
    no capacity; 20 databases of 24 GiB, 1,200 caches of 3 GiB, one unit of 64 GiB and 100
    units that reserve nothing."""
    registry = cluster.registry
    lease = registry.grant_lease(300)
    small, big, old = Resources(4 * GiB, 2000), Resources(32 * GiB, 16_000), None
    capacity: dict[str, Resources | None] = {}
    for index in range(1000):
        machine = f"{index:04x}".ljust(32, "0")  # shown as its first 8 characters
        capacity[machine] = big if index >= 990 else old if index >= 985 else small
        registry.register_machine(MachineRecord(machine, capacity=capacity[machine]), lease)
    changes = [unit(f"a-db@{i}.service", "ReserveMemory=24G") for i in range(20)]
    changes += [unit(f"cache@{i}.service", "ReserveMemory=3G\nReserveCPU=0.5") for i in range(1200)]
    changes += [unit("huge.service", "ReserveMemory=64G")]
    changes += [unit(f"plain@{i}.service") for i in range(100)]
    registry.change_units(changes)
    cluster.engine()

    def settled() -> bool:
        view = registry.read_view(with_states=False)
        return len(view.schedule) + len(view.reasons) >= len(changes)

    until(settled, timeout=120, what="every unit placed or given a reason")
    view = registry.read_view(with_states=False)
    reserves = {c.name: fleet_options(parse_unit(c.text or ""), c.name).reserves for c in changes}
    used: dict[str, Resources] = {}
    for name, (machine, _) in view.schedule.items():
        used[machine] = used.get(machine, Resources()) + reserves[name]
    for machine, total in used.items():
        offered = capacity[machine]
        if offered is None:  # an old agent's machine takes only units reserving nothing
            assert not total, machine
        else:
            assert total.memory <= offered.memory and total.cpu <= offered.cpu, machine
    placed = Counter(name.partition("@")[0] for name in view.schedule)
    # The databases first (by name): one on each big machine; then caches: one on each
    # small one, and two more on each big one (8 GiB left there); plain units anywhere.
    assert placed == {"a-db": 10, "cache": 985 + 20, "plain": 100}
    assert any(capacity[m] is None for m, _ in (view.schedule[n] for n in view.schedule))
    first_big = f"{990:04x}0000"
    reasons = Counter(view.reasons.values())
    assert reasons[f"no machine has 24 GiB free; largest free 8 GiB on {first_big}…"] == 10
    assert reasons[f"no machine has 3 GiB free; largest free 2 GiB on {first_big}…"] == 195
    assert view.reasons["huge.service"] == (
        "it reserves 64 GiB, more than any machine has (largest 32 GiB)"
    )
    assert {reason_kind(r) for r in view.reasons.values()} == {ReasonKind.RESOURCES}


def test_an_engine_failover_and_a_machine_that_shrank_move_nothing(cluster: Cluster) -> None:
    for machine in ("m1", "m2"):
        cluster.agent(machine, capacity=Resources(4 * GiB, 2000))
    first = cluster.engine()
    cluster.registry.change_units([unit(f"db{i}.service", "ReserveMemory=2G") for i in range(4)])
    until(lambda: len(cluster.running()) == 4, timeout=30, what="4 databases active")
    before = cluster.placement()
    assert Counter(before.values()) == {"m1": 2, "m2": 2}

    def unchanged() -> None:
        assert cluster.placement() == before, "a database moved"
        assert len(cluster.hosted()) == 4, "a database stopped"

    stop, seen = watch(unchanged)
    # m1's agent comes back offering 1 GiB (an operator kept memory for the OS): what
    # it runs stays, reservations over its capacity or not; nothing new goes there.
    old = cluster.agents["m1"]
    old.stop(revoke=False)
    cluster.agents["m1"] = Agent(
        cluster.registry,
        old.manager,
        old.settings,
        instance=old.instance,
        capacity=Resources(GiB, 2000),
    ).start()
    until(
        lambda: cluster.registry.list_machines()["m1"].capacity == Resources(GiB, 2000),
        what="m1 registered with its new capacity",
    )
    first.stop()
    second = cluster.engine()  # a new leader: a full read, a full pass
    cluster.registry.change_units([unit("db4.service", "ReserveMemory=2G")])
    until(lambda: "db4.service" in cluster.registry.read_view().reasons, what="db4's reason")
    assert cluster.registry.read_view().reasons["db4.service"] == (
        "no machine has 2 GiB free; largest free 0 B on m2…"
    )
    assert second.stats.passes >= 1
    stop.set()
    assert seen == []
    assert cluster.placement() == before


def test_list_machines_shows_what_is_reserved_and_free_as_the_engine_counts_it(
    cluster: Cluster, run: Run
) -> None:
    cluster.agent("m1", capacity=Resources(8 * GiB, 4000))
    cluster.engine()
    monitor = unit("mon.service", is_global=True)
    monitor = replace(monitor, text=(monitor.text or "") + "MemoryMax=512M\n")
    monitor = replace(monitor, hash=hashlib.sha256((monitor.text or "").encode()).hexdigest())
    cluster.registry.change_units([unit("db.service", "ReserveMemory=2G\nReserveCPU=1"), monitor])
    until(lambda: len(cluster.running()) == 2, timeout=30, what="db and the monitor active")
    assert table(run("list-machines", "--fields", "machine,reserved,free")) == [
        ["MACHINE", "RESERVED", "FREE"],
        ["m1", "2.5", "GiB,", "1", "CPU", "5.5", "GiB,", "3", "CPUs"],
    ]
