"""Drains and maintenance windows (issue 24, items 1 and 5), on real hosts: `fleetpy
drain` moves a host's units to the other one, each started there before the next moves;
`fleetpy drain --no-move --window` keeps a host's units on it through a reboot longer
than its agent's TTL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fleetpy.drain import MOVED_OFF

from support.hosts_fixtures import SharedHosts
from support.waiting import polling, until

pytestmark = pytest.mark.hosts

SHARED_HOSTS: tuple[dict[str, str], ...] = ({"name": "a"}, {"name": "b"})  # TTL 3 s each

PLAIN = "[Service]\nExecStart=/bin/sleep infinity\n"
BOX = "[Container]\nImage=local/busybox:latest\nExec=sleep 1000\nStopTimeout=2\n"
SIDEKICK = PLAIN + "\n[X-Fleet]\nMachineOf=p1.service\n"


def placement(shared: SharedHosts) -> dict[str, str]:
    return {unit: machine for unit, (machine, _) in shared.registry.read_view().schedule.items()}


def start_units(shared: SharedHosts, units: dict[str, str]) -> None:
    paths = [shared.fleet.write(name, text) for name, text in units.items()]
    shared.fleet("start", "--block-attempts", "120", *paths)


@contextmanager
def uncordoned_after(shared: SharedHosts) -> Iterator[None]:
    try:
        yield
    finally:
        for machine in shared.registry.cordons():
            shared.registry.remove_cordon(machine)


@contextmanager
def watched(shared: SharedHosts, units: list[str]) -> Iterator[dict[str, list[str]]]:
    """Every 0.2 s: where each unit is placed (each change), and how many moved units are
    on their way (under "(on their way)")."""
    seen: dict[str, list[str]] = {unit: [] for unit in units}
    seen["(on their way)"] = []

    def poll() -> None:
        view = shared.registry.read_view(with_states=False)
        for unit in units:
            machine = view.schedule.get(unit, ("(unplaced)",))[0]
            if not seen[unit] or seen[unit][-1] != machine:
                seen[unit].append(machine)
        ways = sum(1 for r in view.reasons.values() if r.startswith(MOVED_OFF))
        seen["(on their way)"].append(str(ways))

    with polling(poll):
        yield seen


def test_a_drain_moves_a_hosts_units_one_at_a_time(on_shared_hosts: SharedHosts) -> None:
    """Everything on host a moves to host b (a container unit, plain ones, a MachineOf=
    sidekick with its unit), at most one on its way at a time, each placed once more
    only; the drained host runs none of them, and takes no new unit until uncordoned."""
    shared = on_shared_hosts
    a, b = shared.hosts
    with uncordoned_after(shared):
        shared.fleet("cordon", b.machine_id)  # everything starts on a
        start_units(shared, {"p1.service": PLAIN, "p2.service": PLAIN, "c1.service": BOX})
        start_units(shared, {"s1.service": SIDEKICK})
        units = ["c1.service", "p1.service", "p2.service", "s1.service"]
        assert placement(shared) == dict.fromkeys(units, a.machine_id)
        shared.fleet("uncordon", b.machine_id)
        with watched(shared, units) as seen:
            started = time.monotonic()
            result = shared.fleet("drain", a.machine_id, "--timeout", "90", check=False)
            took = time.monotonic() - started
        engine_log = (shared.fleet.workdir / "engine.log").read_text()[-6000:]
        # What host b's systemd and agent said (a moved unit once failed there under load).
        journal = "" if result.returncode == 0 else b.journal(lines=80)
        assert result.stdout.strip() == f"Machine {a.machine_id} drained", (
            f"{result.stderr}\nthe engine said:\n{engine_log}\nhost b's journal:\n{journal}"
        )
        for unit in units:
            assert seen[unit] == [a.machine_id, b.machine_id], (unit, seen[unit])
            assert b.is_active(unit), unit  # the drain waited for host b to report it active
        # p1 and its sidekick move together: two on their way then, one otherwise.
        ways = {int(count) for count in seen["(on their way)"]}
        assert max(ways) <= 2 and 1 in ways, ways
        # Host a's agent stops its copies, removes their files and then reports them gone:
        # the drain waits for none of that (the last one can lag, under load).
        until(
            lambda: (
                not any(a.is_active(u) for u in units)
                and {u: set(shared.registry.list_states().get(u, {})) for u in units}
                == {u: {b.machine_id} for u in units}
            ),
            timeout=30,
            what="host a's copies stopped and reported gone",
        )
        listed = shared.fleet("list-machines", "-l", "--no-legend", "--fields", "machine,cordon")
        rows = [line.split() for line in listed.stdout.splitlines()]
        assert [a.machine_id, "draining", "(max", "1)"] in rows, listed.stdout
        start_units(shared, {"n1.service": PLAIN})
        assert placement(shared)["n1.service"] == b.machine_id
    print(f"drained_4_units_in={took:.1f}s")


def test_a_reboot_in_a_maintenance_window_moves_nothing(on_shared_hosts: SharedHosts) -> None:
    """Host a rebooted (powered off, then booted) for longer than its agent's TTL within a
    maintenance window: its units are never placed elsewhere, and run on it again once it
    is back."""
    shared = on_shared_hosts
    a, b = shared.hosts
    with uncordoned_after(shared):
        shared.fleet("cordon", b.machine_id)
        start_units(shared, {"p1.service": PLAIN, "c1.service": BOX})
        shared.fleet("uncordon", b.machine_id)
        units = ["c1.service", "p1.service"]
        result = shared.fleet("drain", a.machine_id, "--no-move", "--window", "10m")
        assert "in maintenance until" in result.stdout
        with watched(shared, units) as seen:
            a.power_off(hard=True)
            until(
                lambda: a.machine_id not in shared.registry.list_machines(),
                timeout=30,
                what="host a's lease ended",
            )
            time.sleep(5)  # well past the TTL (3 s): a lost machine's units would move now
            # The engine says why it holds them (once it has planned: later under load).
            until(
                lambda: all(
                    "maintenance window" in shared.registry.read_view().reasons.get(u, "")
                    for u in units
                ),
                timeout=30,
                what=f"the reasons naming the maintenance window: {units}",
            )
            booted = time.monotonic()
            a.boot()
            until(
                lambda: (
                    all(a.is_active(u) for u in units)
                    and all(
                        shared.registry.list_states().get(u, {}).get(a.machine_id) is not None
                        and shared.registry.list_states()[u][a.machine_id].active == "active"
                        for u in units
                    )
                ),
                timeout=90,
                what="the units active again on host a",
            )
            back = time.monotonic() - booted
        assert {u: seen[u] for u in units} == {u: [a.machine_id] for u in units}
        assert not any(b.is_active(u) for u in units)
        shared.fleet("uncordon", a.machine_id)
        until(lambda: shared.registry.read_view().reasons == {}, what="the reasons cleared")
    print(f"units_active_after_boot={back:.1f}s")
