"""Hosts rebooted (issue 21, item 5), on real hosts: the same nspawn host powered off and
booted again, with its machine id, agent config and /var/lib/fleetpy.

Back within its lease (the host "keep", TTL 60 s), its units run on it again and the engine
moves nothing; away longer (the host "away", TTL 3 s), its units move, and when it comes
back it runs none of them again. A host keeps its unit files in /run (the default: gone
at a reboot) or on its disk (`unit_dir` under /var/lib/fleetpy: left there by the reboot).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import yaml

from fleetpy.cluster.nspawn import AGENT_UNIT, Host

from support.fleet import containers
from support.hosts_fixtures import SharedHosts
from support.waiting import polling, until

pytestmark = pytest.mark.hosts

SHARED_HOSTS: tuple[dict[str, str], ...] = ({"name": "keep"}, {"name": "away"})
KEEP_TTL = 60  # longer than a reboot takes here (10-30 s), however loaded the machine
DISK_UNITS = "/var/lib/fleetpy/units"  # unit files that a reboot leaves in place
SHARED_HOST_OPTIONS = ({"ttl": KEEP_TTL}, {"ttl": 3, "unit_dir": DISK_UNITS})

PLAIN = "[Service]\nExecStart=/bin/sleep infinity\n"
BOX = "[Container]\nImage=local/busybox:latest\nExec=sleep 1000\nStopTimeout=2\n"
EVERYWHERE = PLAIN + "\n[X-Fleet]\nGlobal=true\n"  # g.service, on every host


def host_of(shared: SharedHosts, role: str) -> Host:
    index = [m["name"] for m in SHARED_HOSTS].index(role)
    return shared.hosts[index]


def placement(shared: SharedHosts) -> dict[str, str]:
    """unit -> the machine the engine placed it on."""
    return {unit: machine for unit, (machine, _) in shared.registry.read_view().schedule.items()}


def active_on(shared: SharedHosts, unit: str) -> set[str]:
    """The machines whose agents report UNIT active."""
    states = shared.registry.list_states().get(unit, {})
    return {machine for machine, state in states.items() if state.active == "active"}


def start_units(shared: SharedHosts, units: dict[str, str]) -> None:
    paths = [shared.fleet.write(name, text) for name, text in units.items()]
    shared.fleet("start", "--block-attempts", "120", *paths)


def agent_log(host: Host) -> str:
    return host.journal(AGENT_UNIT, lines=2000)


def registered_lease(host: Host) -> int:
    """The lease HOST's agent registered its machine with, from its log."""
    last = agent_log(host).rsplit("event=machine_registered", 1)[1]
    return int(last.split("lease=", 1)[1].split()[0], 16)


def use_unit_dir(shared: SharedHosts, host: Host, unit_dir: str) -> None:
    """Point HOST's agent at UNIT_DIR (no unit runs on it now) and restart it."""
    config = yaml.safe_load(host.config_path.read_text())
    config["unit_dir"] = unit_dir
    host.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    host.restart_agent()
    shared.ready()


@dataclass
class PlacementLog:
    """Every placement of the watched units seen while it runs, read every 0.2 s."""

    seen: dict[str, set[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@contextmanager
def placements(shared: SharedHosts, units: list[str]) -> Iterator[PlacementLog]:
    log = PlacementLog({unit: set() for unit in units})

    def poll() -> None:
        try:
            now = placement(shared)
        except Exception as exc:  # recorded: the test fails on it
            log.errors.append(repr(exc))
            return
        for unit in units:
            log.seen[unit].add(now.get(unit, "(unplaced)"))

    with polling(poll):
        yield log


def running_containers(shared: SharedHosts, unit: str) -> list[str]:
    """The running containers of UNIT (a [Container] unit) of any of the shared hosts."""
    stem = unit.removesuffix(".service")
    ours = {f"fleetpy-{stem}-{host.machine_id}" for host in shared.hosts}
    return [c for c in containers() if c in ours]


@pytest.mark.parametrize("how", ["clean", "crash"])
def test_a_host_back_within_its_lease_runs_its_units_again_and_nothing_moves(
    on_shared_hosts: SharedHosts, how: str
) -> None:
    """A reboot (`clean`: systemd stops the units; `crash`: killed, its container left
    running in the shared dockerd, its unit files on its disk) shorter than the agent's
    TTL: the same machine takes its registration back at once, starts its units again, no
    other host ever runs them, and the previous boot's lease ending changes nothing."""
    shared = on_shared_hosts
    keep, away = host_of(shared, "keep"), host_of(shared, "away")
    if how == "crash":
        use_unit_dir(shared, keep, DISK_UNITS)
    # Least-loaded placement splits each pair: one plain and one container unit on each.
    start_units(shared, {"p1.service": PLAIN, "p2.service": PLAIN})
    start_units(shared, {"c1.service": BOX, "c2.service": BOX})
    start_units(shared, {"g.service": EVERYWHERE})
    placed = placement(shared)
    mine = sorted(u for u, m in placed.items() if m == keep.machine_id)
    assert len(mine) == 2 and {u[0] for u in mine} == {"p", "c"}, placed
    box = next(u for u in mine if u.startswith("c"))
    until(lambda: running_containers(shared, box), what=f"{box}'s container")
    until(lambda: active_on(shared, "g.service") == {keep.machine_id, away.machine_id})
    global_pid = away.main_pid("g.service")
    record = shared.registry.list_machines()[keep.machine_id]
    token = keep.run(["cat", f"/var/lib/fleetpy/agent-{keep.machine_id}.instance"]).stdout
    keep.run(["touch", "/run/before-reboot"])
    lease = registered_lease(keep)
    engine_log = shared.fleet.workdir / "engine.log"
    engine_before = engine_log.stat().st_size

    with placements(shared, mine) as seen:
        keep.power_off(hard=how == "crash", keep_containers=True)
        if how == "clean":
            assert running_containers(shared, box) == []  # its ExecStop ran
        else:
            assert len(running_containers(shared, box)) == 1  # outlived the crash
        booted = time.monotonic()
        keep.boot()
        up = time.monotonic() - booted
        try:
            until(
                lambda: (
                    all(active_on(shared, u) == {keep.machine_id} for u in mine)
                    and all(keep.is_active(u) for u in [*mine, "g.service"])
                    and len(running_containers(shared, box)) == 1
                ),
                timeout=60,
                what=f"{mine} active again on the rebooted host",
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; the host's agent said:\n{agent_log(keep)[-3000:]}"
            ) from None
        back = time.monotonic() - booted
    assert not seen.errors
    assert seen.seen == {u: {keep.machine_id} for u in mine}  # never placed anywhere else
    assert running_containers(shared, box) == [f"fleetpy-{box[:-8]}-{keep.machine_id}"]
    log = agent_log(keep)
    assert "machine_id_in_use" not in log and "unit_error" not in log, log
    assert shared.registry.list_machines()[keep.machine_id].instance == record.instance
    # The same machine (its id, its disk) on a fresh boot (/run empty but for this boot's).
    assert keep.run(["cat", "/etc/machine-id"]).stdout.strip() == keep.machine_id
    assert keep.run(["cat", f"/var/lib/fleetpy/agent-{keep.machine_id}.instance"]).stdout == token
    assert keep.run(["test", "-e", "/run/before-reboot"], check=False).returncode != 0
    assert not any(
        f"unit={u}" in line and "action=start" in line
        for u in mine
        for line in agent_log(away).splitlines()
    )
    moved = engine_log.read_text()[engine_before:]
    assert "unit_moved" not in moved and "machine_gone" not in moved, moved

    # The previous boot's lease ends (as it would KEEP_TTL after the crash): nothing hangs on it.
    shared.registry.revoke_lease(lease)
    time.sleep(3)
    assert placement(shared) == placed
    assert all(active_on(shared, u) == {keep.machine_id} for u in mine)
    assert active_on(shared, "g.service") == {keep.machine_id, away.machine_id}
    assert away.main_pid("g.service") == global_pid  # the other host's copy never touched
    assert keep.machine_id in shared.registry.list_machines()
    print(f"reboot={how} host_booted_after_power_on={up:.1f}s units_active={back:.1f}s")


def test_a_host_back_after_its_lease_runs_none_of_its_moved_units(
    on_shared_hosts: SharedHosts,
) -> None:
    """A crash longer than the TTL: the units move to the other host, and when the host
    boots again (its unit files still on its disk) it stops and removes them instead of
    starting them: each runs once, where the engine put it, undisturbed."""
    shared = on_shared_hosts
    keep, away = host_of(shared, "keep"), host_of(shared, "away")
    start_units(shared, {"p1.service": PLAIN, "p2.service": PLAIN})
    start_units(shared, {"c1.service": BOX, "c2.service": BOX})
    start_units(shared, {"g.service": EVERYWHERE})
    mine = sorted(u for u, m in placement(shared).items() if m == away.machine_id)
    assert len(mine) == 2 and {u[0] for u in mine} == {"p", "c"}
    box = next(u for u in mine if u.startswith("c"))
    until(lambda: running_containers(shared, box), what=f"{box}'s container")
    # A blocking start of a global unit ends once one machine started it: this one's file
    # is looked for once its agent reports it active too.
    until(lambda: active_on(shared, "g.service") == {keep.machine_id, away.machine_id})
    assert sorted(away.run(["ls", DISK_UNITS]).stdout.split()) == sorted([*mine, "g.service"])
    global_pid = keep.main_pid("g.service")

    crashed = time.monotonic()
    away.power_off(hard=True)
    until(
        lambda: all(active_on(shared, u) == {keep.machine_id} for u in mine),
        timeout=60,
        what=f"{mine} active on the other host",
    )
    moved = time.monotonic() - crashed
    pids = {u: keep.main_pid(u) for u in mine}

    away.boot()
    until(
        lambda: away.machine_id in shared.registry.list_machines(),
        timeout=60,
        what="the host back",
    )
    until(
        lambda: away.run(["ls", "-A", DISK_UNITS]).stdout.split() == ["g.service"],
        timeout=30,
        what="the stale unit files removed",
    )
    # Its global unit is no stale copy: it belongs on every host, this one again too.
    until(
        lambda: (
            active_on(shared, "g.service") == {keep.machine_id, away.machine_id}
            and away.is_active("g.service")
        ),
        timeout=30,
        what="the global unit running again on the host back",
    )
    assert keep.main_pid("g.service") == global_pid
    for unit in mine:
        assert not away.is_active(unit)
        assert active_on(shared, unit) == {keep.machine_id}
        assert keep.main_pid(unit) == pids[unit]  # not restarted
    assert running_containers(shared, box) == [
        f"fleetpy-{box.removesuffix('.service')}-{keep.machine_id}"
    ]
    log = agent_log(away)
    assert "machine_id_in_use" not in log, log
    assert not any(
        f"unit={u}" in line and "action=start" in line for u in mine for line in log.splitlines()
    )
    print(f"units_moved_after_crash={moved:.1f}s")


def test_systemd_reexecuted_keeps_the_units_and_the_agent_still_hears_them(
    on_shared_hosts: SharedHosts,
) -> None:
    """The host's systemd restarted in place (`systemctl daemon-reexec`, as after a systemd
    upgrade): units and the agent run on, and the agent still receives systemd's signals,
    so a unit that dies afterwards is reported."""
    shared = on_shared_hosts
    keep = host_of(shared, "keep")
    start_units(shared, {"p1.service": PLAIN, "p2.service": PLAIN})
    unit = next(u for u, m in placement(shared).items() if m == keep.machine_id)
    pid, agent_pid = keep.main_pid(unit), keep.main_pid(AGENT_UNIT)
    keep.systemctl("daemon-reexec")
    until(
        lambda: (
            keep.systemctl("is-system-running", check=False).stdout.strip()
            in ("running", "degraded")
        )
    )
    assert (keep.main_pid(unit), keep.main_pid(AGENT_UNIT)) == (pid, agent_pid)
    keep.systemctl("kill", "--kill-whom=main", "--signal=KILL", unit)
    until(
        lambda: shared.registry.list_states()[unit][keep.machine_id].active == "failed",
        timeout=15,
        what=f"{unit} reported failed after systemd's re-exec",
    )
